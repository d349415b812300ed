"""Rasterising the phantom's primitives onto oblique sagittal slices.

A ``Plane`` holds the acquisition geometry: the field of view centre, a rotation (the slice
plane turned a few degrees about the vertical and AP axes, so the slices are oblique to the
anatomy), the slices' offsets along the plane normal and their thickness, the display matrix
and the render grid (finer than the display when the acquisition is close to it, so k-space
truncation later has high frequencies to cut). Pixel (i, j) of the display covers
[j, j+1) x [i, i+1) in box coordinates; its centre is at mm offset (i + 0.5 - H/2) * spacing.

``rasterize`` paints primitives in order (over-painting with their partial-volume occupancy):
each slice is the average of ``nsub`` lateral sub-planes across its thickness. It returns the
object image, the CSF fraction of every pixel (for flow voids and pulsation ghosts), the flow
void map and each disc's ground-truth occupancy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from detector.heldout.shapes import BIG, Prim


@dataclass(frozen=True, eq=False)
class Plane:
    render: tuple[int, int]  # render grid (rows, cols)
    display: tuple[int, int]  # display matrix (rows, cols)
    spacing: tuple[float, float]  # display pixel spacing (row mm, col mm)
    center: np.ndarray  # world (x, y, z) of the field of view's centre, middle slice
    rot: np.ndarray  # 3x3, columns: world directions of image columns, rows, slice normal
    offsets: np.ndarray  # [S] slice offsets (mm) along the normal
    thickness: float

    @property
    def scale(self) -> tuple[float, float]:
        """Display pixels per render pixel, (rows, cols)."""
        return self.display[0] / self.render[0], self.display[1] / self.render[1]

    @property
    def render_px(self) -> float:
        return float(np.mean([self.spacing[0] * self.scale[0], self.spacing[1] * self.scale[1]]))

    def rows_mm(self) -> np.ndarray:
        return ((np.arange(self.render[0]) * self.scale[0] + 0.5 - self.display[0] / 2) * self.spacing[0]).astype(
            np.float32
        )

    def cols_mm(self) -> np.ndarray:
        return ((np.arange(self.render[1]) * self.scale[1] + 0.5 - self.display[1] / 2) * self.spacing[1]).astype(
            np.float32
        )

    def to_pixel(self, xyz: np.ndarray) -> tuple[float, float, float]:
        """World point -> (row, col) display coordinates and its offset along the normal."""
        d = np.asarray(xyz, float) - self.center
        vc, vr, w = d @ self.rot[:, 0], d @ self.rot[:, 1], d @ self.rot[:, 2]
        return (
            float(vr / self.spacing[0] + self.display[0] / 2),
            float(vc / self.spacing[1] + self.display[1] / 2),
            float(w),
        )

    def z_at(self, k: int, x: float, y: float) -> float:
        """World z where slice k's centre plane crosses the line {(x, y, z)}."""
        n = self.rot[:, 2]
        return float(
            self.center[2] + (self.offsets[k] - (x - self.center[0]) * n[0] - (y - self.center[1]) * n[1]) / n[2]
        )


def rotation(yaw: float, roll: float) -> np.ndarray:
    """Columns (image column, image row, slice normal) after turning the sagittal plane by
    ``yaw`` about the vertical (y) axis and ``roll`` about the AP (x) axis, radians."""
    cy, sy, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_x = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    rot = r_y @ r_x
    rot[1, 0] = 0.0  # exactly: columns stay horizontal, which the rasterizer relies on
    return rot


def texture(rng: np.random.Generator, plane: Plane, corr_mm: float = 1.6) -> np.ndarray:
    """Smooth unit-variance noise [S, H, W] on the render grid (correlation ~``corr_mm``): one
    larger field, each slice a window of it at a random offset."""
    s = len(plane.offsets)
    h, w = plane.render
    px = plane.render_px
    pad = max(8, int(40.0 / px))
    n = (max(8, int((h + pad) * px / corr_mm)), max(8, int((w + pad) * px / corr_mm)))
    coarse = rng.standard_normal(n).astype(np.float32)
    field = ndimage.zoom(
        coarse, ((h + pad) / n[0], (w + pad) / n[1]), order=1, prefilter=False, grid_mode=True, mode="nearest"
    )
    field = (field - field.mean()) / max(float(field.std()), 1e-6)
    off = rng.integers(0, [max(1, field.shape[0] - h + 1), max(1, field.shape[1] - w + 1)], size=(s, 2))
    out = np.stack([field[i : i + h, j : j + w] for i, j in off])
    if out.shape[1:] != (h, w):
        out = np.pad(out, ((0, 0), (0, h - out.shape[1]), (0, w - out.shape[2])), mode="edge")
    return out.astype(np.float32)


@dataclass
class Canvas:
    image: np.ndarray  # object signal
    csf: np.ndarray  # fraction of each pixel that is CSF
    void: np.ndarray  # flow void strength (0..1) in the CSF
    truth: dict[str, list[tuple[tuple[int, int, int, int, int, int], np.ndarray]]] = field(default_factory=dict)


Patch = tuple[int, int, int, int, int, int]


class Rasterizer:
    """Paints primitives onto a ``Plane``'s render grid."""

    def __init__(self, plane: Plane, signals: dict[str, float], tex: np.ndarray) -> None:
        self.p, self.signals, self.tex = plane, signals, tex
        self.rows, self.cols = plane.rows_mm(), plane.cols_mm()
        s = len(plane.offsets)
        self.canvas = Canvas(
            np.zeros((s, *plane.render), np.float32),
            np.zeros((s, *plane.render), np.float32),
            np.zeros((s, *plane.render), np.float32),
        )
        fov = (plane.display[0] * plane.spacing[0] / 2, plane.display[1] * plane.spacing[1] / 2)
        r = plane.rot
        self.zmax = float(
            np.abs(plane.offsets).max() + plane.thickness + fov[0] * abs(r[2, 1]) + fov[1] * abs(r[2, 0]) + 2.0
        )
        self._cache: dict[tuple, tuple[np.ndarray, ...]] = {}

    def patch(self, prim: Prim) -> Patch | None:
        x0, x1, y0, y1, z0, z1 = prim.bounds()
        cz = float(self.p.center[2])
        z0, z1 = max(z0, cz - self.zmax), min(z1, cz + self.zmax)
        if z0 > z1:
            return None
        corners = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)]) - self.p.center
        vc, vr, w = corners @ self.p.rot[:, 0], corners @ self.p.rot[:, 1], corners @ self.p.rot[:, 2]
        sr, sc = self.p.scale
        ri = (vr / self.p.spacing[0] + self.p.display[0] / 2 - 0.5) / sr
        ci = (vc / self.p.spacing[1] + self.p.display[1] / 2 - 0.5) / sc
        i0, i1 = max(int(np.floor(ri.min())) - 2, 0), min(int(np.ceil(ri.max())) + 3, self.p.render[0])
        j0, j1 = max(int(np.floor(ci.min())) - 2, 0), min(int(np.ceil(ci.max())) + 3, self.p.render[1])
        half = self.p.thickness / 2 + 1.0
        ks = np.nonzero((self.p.offsets + half >= w.min()) & (self.p.offsets - half <= w.max()))[0]
        if i0 >= i1 or j0 >= j1 or len(ks) == 0:
            return None
        return int(ks[0]), int(ks[-1]) + 1, i0, i1, j0, j1

    def _coords(self, prim: Prim, patch: Patch, dw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (id(prim.frame), patch, dw)
        hit = self._cache.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        k0, k1, i0, i1, j0, j1 = patch
        ckey = ("xyz", patch, dw)
        xyz = self._cache.get(ckey)
        if xyz is None:
            c, r = self.p.center, self.p.rot
            vr, vc = self.rows[i0:i1, None], self.cols[None, j0:j1]
            w = (self.p.offsets[k0:k1] + dw).astype(np.float32)[:, None, None]
            # image columns have no vertical component (see ``rotation``): y depends on (slice, row)
            xyz = tuple(
                (np.float32(c[d]) + vr * np.float32(r[d, 1]) + (vc * np.float32(r[d, 0]) if d != 1 else 0.0))[None]
                + w * np.float32(r[d, 2])
                for d in range(3)
            )
            self._cache[ckey] = xyz
        a, b = prim.frame.local(xyz[0], xyz[1])
        out = (a, b, xyz[2])
        if len(self._cache) > 24:
            self._cache.clear()
            self._cache[ckey] = xyz
        self._cache[key] = out
        return out

    def alpha(self, prim: Prim, patch: Patch) -> np.ndarray:
        t = self.p.thickness
        subs = [0.0] if prim.nsub <= 1 else list(np.linspace(-t / 2, t / 2, prim.nsub + 1)[:-1] + t / (2 * prim.nsub))
        tz = t / max(prim.nsub, 1)
        acc: np.ndarray | None = None
        for dw in subs:
            a, b, z = self._coords(prim, patch, float(dw))
            al = prim.alpha(a, b, z, self.p.render_px, tz)
            acc = al if acc is None else acc + al
        assert acc is not None
        return (acc / len(subs)).astype(np.float32)

    def paint(self, prims: list[Prim]) -> Canvas:
        cv = self.canvas
        for prim in prims:
            patch = self.patch(prim)
            if patch is None:
                continue
            al = self.alpha(prim, patch)
            k0, k1, i0, i1, j0, j1 = patch
            sl = (slice(k0, k1), slice(i0, i1), slice(j0, j1))
            if prim.layer == "truth":
                cv.truth.setdefault(prim.key, []).append((patch, al))
                continue
            if prim.layer == "void":
                np.maximum(cv.void[sl], al * np.float32(prim.gain), out=cv.void[sl])
                continue
            if not al.any():
                continue
            val = np.float32(self.signals[prim.tissue] * prim.gain)
            if prim.tex:
                val = val * (1.0 + np.float32(prim.tex) * self.tex[sl])
            img = cv.image[sl]
            img += al * (val - img)
            csf = cv.csf[sl]
            csf += al * ((1.0 if prim.tissue == "csf" else 0.0) - csf)
        return cv


def truth_boxes(
    plane: Plane, parts: list[tuple[Patch, np.ndarray]], level: float = 0.5
) -> dict[int, tuple[tuple[float, float, float, float], float]]:
    """Per slice: the box (x0, y0, x1, y1, display pixels) of occupancy >= ``level`` and its
    area (mm²)."""
    sr, sc = plane.scale
    area_px = plane.spacing[0] * sr * plane.spacing[1] * sc
    out: dict[int, tuple[tuple[float, float, float, float], float]] = {}
    for (k0, _k1, i0, _i1, j0, _j1), al in parts:
        for dk in range(al.shape[0]):
            m = al[dk] >= level
            n = int(m.sum())
            if n == 0:
                continue
            rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            y0 = (i0 + rows[0]) * sr + 0.5 - sr / 2
            y1 = (i0 + rows[-1]) * sr + 0.5 + sr / 2
            x0 = (j0 + cols[0]) * sc + 0.5 - sc / 2
            x1 = (j0 + cols[-1]) * sc + 0.5 + sc / 2
            box = (
                float(max(x0, 0.0)),
                float(max(y0, 0.0)),
                float(min(x1, plane.display[1])),
                float(min(y1, plane.display[0])),
            )
            out[k0 + dk] = (box, n * area_px)
    return out


__all__ = ["BIG", "Canvas", "Plane", "Rasterizer", "rotation", "texture", "truth_boxes"]
