"""Pixel grid in physical mm, implicit shapes (approximate signed distances) and painting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

Crop = tuple[int, int, int, int]  # r0, r1, c0, c1 (end exclusive)
SdFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Grid:
    """Rows head -> feet, columns anterior -> posterior; anatomy mm = origin + (index + 0.5) * spacing."""

    rows: int
    cols: int
    spacing: tuple[float, float]
    origin: tuple[float, float]

    @cached_property
    def ys(self) -> np.ndarray:
        return (self.origin[0] + (np.arange(self.rows) + 0.5) * self.spacing[0]).astype(np.float32)

    @cached_property
    def xs(self) -> np.ndarray:
        return (self.origin[1] + (np.arange(self.cols) + 0.5) * self.spacing[1]).astype(np.float32)

    def to_pixel(self, y: float, x: float) -> tuple[float, float]:
        """Continuous (row, col) of an anatomy point in mm: pixel (r, c) spans [r, r+1) x [c, c+1)."""
        return (y - self.origin[0]) / self.spacing[0], (x - self.origin[1]) / self.spacing[1]

    def inside(self, y: float, x: float) -> bool:
        r, c = self.to_pixel(y, x)
        return 0.0 <= r < self.rows and 0.0 <= c < self.cols

    def crop(self, y0: float, y1: float, x0: float, x1: float, margin: float = 2.0) -> Crop | None:
        r0 = int(np.floor((y0 - margin - self.origin[0]) / self.spacing[0]))
        r1 = int(np.ceil((y1 + margin - self.origin[0]) / self.spacing[0]))
        c0 = int(np.floor((x0 - margin - self.origin[1]) / self.spacing[1]))
        c1 = int(np.ceil((x1 + margin - self.origin[1]) / self.spacing[1]))
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, self.rows), min(c1, self.cols)
        return None if r0 >= r1 or c0 >= c1 else (r0, r1, c0, c1)


def alpha_of(sd: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance (mm, negative inside)."""
    return np.clip(0.5 - sd / pixel_mm, 0.0, 1.0)


def paint(
    canvas: np.ndarray, grid: Grid, bounds: tuple[float, float, float, float], sd_fn: SdFn, value: float | np.ndarray
) -> tuple[Crop, np.ndarray] | None:
    """Blend ``value`` into ``canvas`` where the shape lies; returns the crop and its coverage."""
    crop = grid.crop(*bounds)
    if crop is None:
        return None
    r0, r1, c0, c1 = crop
    sd = sd_fn(grid.ys[r0:r1, None], grid.xs[None, c0:c1])
    alpha = alpha_of(sd, min(grid.spacing)).astype(np.float32)
    sub = canvas[r0:r1, c0:c1]
    target = value[r0:r1, c0:c1] if isinstance(value, np.ndarray) else value
    sub += alpha * (target - sub)
    return crop, alpha


def frame(y: np.ndarray, x: np.ndarray, centre: tuple[float, float], theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Local (u, v): u along the spine axis (caudal), v posterior; theta tilts the axis posteriorly."""
    dy, dx = y - centre[0], x - centre[1]
    c, s = np.cos(theta), np.sin(theta)
    return dy * c + dx * s, -dy * s + dx * c


def sd_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to the ellipse (u/a)^2 + (v/b)^2 = 1."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) + 1e-6
    return k0 * (k0 - 1.0) / k1


def sd_superellipse(u: np.ndarray, v: np.ndarray, hu: np.ndarray | float, hv: float, n: float) -> np.ndarray:
    """Approximate signed distance to a rounded box |u/hu|^n + |v/hv|^n = 1 (hu may vary with v)."""
    a = np.abs(u) / hu + 1e-6
    b = np.abs(v) / hv + 1e-6
    f = (a**n + b**n) ** (1.0 / n)
    grad = f ** (1.0 - n) * np.sqrt((a ** (n - 1) / hu) ** 2 + (b ** (n - 1) / hv) ** 2) + 1e-6
    return (f - 1.0) / grad


def sd_capsule(
    y: np.ndarray, x: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float
) -> np.ndarray:
    """Signed distance to a segment p0-p1 thickened by a radius going from r0 to r1."""
    ay, ax = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((y - p0[0]) * ay + (x - p0[1]) * ax) / (ay * ay + ax * ax + 1e-9), 0.0, 1.0)
    d = np.sqrt((y - p0[0] - t * ay) ** 2 + (x - p0[1] - t * ax) ** 2)
    return d - (r0 + (r1 - r0) * t)


def sd_convex(y: np.ndarray, x: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Signed distance (exact inside, approximate outside) to a convex polygon of (y, x) points."""
    pts = np.asarray(pts, dtype=float)
    cy, cx = pts.mean(axis=0)
    out = None
    for i in range(len(pts)):
        (y0, x0), (y1, x1) = pts[i], pts[(i + 1) % len(pts)]
        ny, nx = x1 - x0, -(y1 - y0)
        norm = np.hypot(ny, nx) + 1e-9
        ny, nx = ny / norm, nx / norm
        if (cy - y0) * ny + (cx - x0) * nx > 0:
            ny, nx = -ny, -nx
        d = (y - y0) * ny + (x - x0) * nx
        out = d if out is None else np.maximum(out, d)
    assert out is not None
    return out


def bounds_of(points: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    """(y0, y1, x0, x1) bounds of points plus a pad in mm."""
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    return p[:, 0].min() - pad, p[:, 0].max() + pad, p[:, 1].min() - pad, p[:, 1].max() + pad


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ~corr_px pixels."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    filt = np.exp(-2.0 * (np.pi * corr_px) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * filt, s=shape)
    return (field / (field.std() + 1e-9)).astype(np.float32)
