"""Signed-distance primitives of the held-out phantom, in millimetres.

World coordinates: x runs anterior -> posterior, y head -> feet, z lateral. A primitive lives
in a 2D frame of the sagittal plane (``a`` across it, posterior positive; ``b`` along it, caudal
positive) and has a lateral profile along z:

- ``box``: a prism, ``|z - zc| <= hw`` (its lateral edge is blurred over the slice thickness);
- ``round`` / ``super``: the in-plane shape shrinks towards its centre as ``|z - zc|`` grows
  (ellipse / fourth-power super-ellipse cross-section), so lateral slices cut it smaller.

``alpha`` turns the approximate signed distance (negative inside) into an occupancy in [0, 1]
by a linear ramp one pixel wide: in-plane partial volume without supersampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Arr = np.ndarray
BIG = 1.0e4
Profile = Literal["box", "round", "super"]


def ramp(d: Arr, width: float) -> Arr:
    """Signed distance (mm, negative inside) -> occupancy, linear over ``width`` mm."""
    return np.clip(0.5 - d * (1.0 / width), 0.0, 1.0)


def ellipse_sdf(a: Arr, b: Arr, ra: Arr | float, rb: Arr | float) -> Arr:
    """First-order signed distance to the ellipse a²/ra² + b²/rb² = 1 (exact on it)."""
    ra = np.maximum(ra, 1e-3)
    rb = np.maximum(rb, 1e-3)
    u, v = a / ra, b / rb
    f = np.sqrt(u * u + v * v + 1e-12)
    grad = np.sqrt((u / ra) ** 2 + (v / rb) ** 2 + 1e-12 / (ra * rb))
    return (f - 1.0) * (f / grad)


def box_sdf(a: Arr, b: Arr, ha: Arr | float, hb: Arr | float, r: float = 0.0) -> Arr:
    """Signed distance to the box |a| <= ha, |b| <= hb with corners rounded by ``r``."""
    r_eff = np.minimum(np.minimum(r, ha), hb)
    qa = np.abs(a) - (ha - r_eff)
    qb = np.abs(b) - (hb - r_eff)
    outside = np.hypot(np.maximum(qa, 0.0), np.maximum(qb, 0.0))
    return outside + np.minimum(np.maximum(qa, qb), 0.0) - r_eff


def poly_sdf(a: Arr, b: Arr, verts: np.ndarray) -> Arr:
    """Signed distance (exact inside, approximate outside) to a convex polygon, any winding."""
    v = np.asarray(verts, dtype=np.float64)
    centre = v.mean(axis=0)
    d = None
    for i in range(len(v)):
        p, q = v[i], v[(i + 1) % len(v)]
        n = np.array([q[1] - p[1], p[0] - q[0]])
        n /= np.linalg.norm(n) + 1e-12
        if np.dot(centre - p, n) > 0:  # make the normal point outwards
            n = -n
        di = (a - p[0]) * n[0] + (b - p[1]) * n[1]
        d = di if d is None else np.maximum(d, di)
    assert d is not None
    return d


class Rigid:
    """A rotated 2D frame: origin (x0, y0); its ``b`` axis points caudally, turned by ``phi``
    (radians) towards posterior; ``a`` is perpendicular, pointing posteriorly."""

    def __init__(self, x0: float, y0: float, phi: float = 0.0) -> None:
        self.x0, self.y0, self.phi = float(x0), float(y0), float(phi)
        self.c, self.s = float(np.cos(phi)), float(np.sin(phi))

    def local(self, x: Arr, y: Arr) -> tuple[Arr, Arr]:
        dx, dy = x - self.x0, y - self.y0
        if self.s == 0.0:  # keeps b as cheap as y (the rasterizer's y is constant along rows)
            return dx * self.c, dy * self.c
        return dx * self.c - dy * self.s, dx * self.s + dy * self.c

    def world(self, a: Arr | float, b: Arr | float) -> tuple[Arr, Arr]:
        return self.x0 + a * self.c + b * self.s, self.y0 - a * self.s + b * self.c

    def axis(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (p: posterior-ish ``a`` axis, u: caudal ``b`` axis) in world x, y."""
        return np.array([self.c, -self.s]), np.array([self.s, self.c])


class Curve:
    """A frame that follows a polyline running head -> feet (y increasing): ``b`` is arc
    length along it, ``a`` the signed offset across it (posterior positive), to first order."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, step: float = 0.5, smooth: float = 3.0) -> None:
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        order = np.argsort(ys)
        xs, ys = xs[order], ys[order]
        y = np.arange(ys[0], ys[-1] + step, step)
        x = np.interp(y, ys, xs)
        k = max(1, int(round(smooth / step)))
        if k > 1 and len(x) > 2 * k:
            kernel = np.ones(2 * k + 1) / (2 * k + 1)
            x = np.convolve(np.pad(x, k, mode="edge"), kernel, mode="valid")
        phi = np.arctan(np.gradient(x, step))
        ds = np.hypot(np.diff(x), step)
        self.y0, self.step = float(y[0]), step
        self.ys, self.xs, self.phis = y, x, phi
        self.ss = np.concatenate([[0.0], np.cumsum(ds)])
        self.cos, self.sin = np.cos(phi), np.sin(phi)

    def _at(self, y: Arr) -> tuple[Arr, Arr, Arr, Arr]:
        t = np.clip((y - self.y0) / self.step, 0.0, len(self.ys) - 1.000001)
        i = t.astype(np.int32)
        f = t - i
        g = 1.0 - f

        def lerp(v: np.ndarray) -> Arr:
            return v[i] * g + v[i + 1] * f

        return lerp(self.xs), lerp(self.ss), lerp(self.cos), lerp(self.sin)

    def local(self, x: Arr, y: Arr) -> tuple[Arr, Arr]:
        xc, s, c, sn = self._at(np.asarray(y))
        dx = x - xc
        return dx * c, s + dx * sn

    def s_at(self, y: float) -> float:
        return float(np.interp(y, self.ys, self.ss))

    def x_at(self, y: float) -> float:
        return float(np.interp(y, self.ys, self.xs))

    def world(self, a: Arr | float, s: Arr | float) -> tuple[Arr, Arr]:
        y = np.interp(s, self.ss, self.ys)
        c = np.interp(s, self.ss, self.cos)
        sn = np.interp(s, self.ss, self.sin)
        return np.interp(s, self.ss, self.xs) + a * c, y - a * sn


Frame = Rigid | Curve


@dataclass(frozen=True, kw_only=True)
class Prim:
    """One structure: a tissue, a frame, a lateral profile, painting attributes.

    ``grow`` inflates the shape (mm; negative shrinks: a cortex's marrow is the same shape grown
    by -1). ``gain`` scales the tissue's signal, ``tex`` the texture's amplitude. ``nsub``: the
    number of lateral sub-planes averaged per slice (3 for small shapes with round profiles).
    ``layer``: "paint", "void" (CSF flow voids) or "truth" (a disc's ground-truth occupancy).
    """

    tissue: str
    frame: Frame
    zc: float = 0.0
    hw: float = BIG
    profile: Profile = "box"
    grow: float = 0.0
    gain: float = 1.0
    tex: float = 0.0
    nsub: int = 1
    layer: str = "paint"
    key: str = ""

    def shape_sdf(self, a: Arr, b: Arr, g: Arr | None) -> Arr:  # pragma: no cover - abstract
        raise NotImplementedError

    def local_box(self) -> tuple[float, float, float, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha(self, a: Arr, b: Arr, z: Arr, px: float, tz: float) -> Arr:
        """Occupancy at frame coordinates (a, b) and lateral coordinate z (world)."""
        dz = z - self.zc
        if self.profile == "box":
            out = ramp(self.shape_sdf(a, b, None) - self.grow, px)
            if self.hw < BIG:
                out = out * ramp(np.abs(dz) - self.hw - self.grow, tz)
            return out
        q = np.minimum(np.abs(dz) / self.hw, 1.0)
        g = np.sqrt(1.0 - q * q) if self.profile == "round" else np.sqrt(np.sqrt(1.0 - q**4))
        d = self.shape_sdf(a, b, g) - self.grow
        return ramp(np.where(g > 0.02, d, BIG), px)

    def bounds(self) -> tuple[float, float, float, float, float, float]:
        """World bounding box (x0, x1, y0, y1, z0, z1), grown by the ``grow`` margin."""
        a0, a1, b0, b1 = self.local_box()
        m = max(self.grow, 0.0) + 1.0
        aa = np.array([a0 - m, a1 + m, a0 - m, a1 + m])
        bb = np.array([b0 - m, b0 - m, b1 + m, b1 + m])
        if isinstance(self.frame, Curve):
            s = np.linspace(b0 - m, b1 + m, 64)
            xs0, ys0 = self.frame.world(np.full_like(s, a0 - m), s)
            xs1, ys1 = self.frame.world(np.full_like(s, a1 + m), s)
            xs, ys = np.concatenate([xs0, xs1]), np.concatenate([ys0, ys1])
        else:
            xs, ys = self.frame.world(aa, bb)
        hw = self.hw + max(self.grow, 0.0) + 1.0 if self.hw < BIG else BIG
        return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()), self.zc - hw, self.zc + hw


@dataclass(frozen=True, kw_only=True)
class Ellipse(Prim):
    ra: float
    rb: float

    def shape_sdf(self, a: Arr, b: Arr, g: Arr | None) -> Arr:
        if g is None:
            return ellipse_sdf(a, b, self.ra, self.rb)
        return ellipse_sdf(a, b, self.ra * g, self.rb * g)

    def local_box(self) -> tuple[float, float, float, float]:
        return -self.ra, self.ra, -self.rb, self.rb


@dataclass(frozen=True, kw_only=True)
class Box(Prim):
    """A rounded box; a lateral profile narrows its ``a`` extent; ``concave`` hollows both
    ``b`` faces by that depth at the centre (vertebral endplates)."""

    ha: float
    hb: float
    r: float = 0.0
    concave: float = 0.0

    def shape_sdf(self, a: Arr, b: Arr, g: Arr | None) -> Arr:
        ha = self.ha if g is None else self.ha * g
        d = box_sdf(a, b, ha, self.hb, self.r)
        if self.concave:
            q = np.clip(a / self.ha, -1.0, 1.0)
            d = np.maximum(d, self.concave * (1.0 - q * q) + np.abs(b) - self.hb)
        return d

    def local_box(self) -> tuple[float, float, float, float]:
        return -self.ha, self.ha, -self.hb, self.hb


@dataclass(frozen=True, kw_only=True)
class Poly(Prim):
    """A convex polygon (vertices in frame coordinates); lateral profiles scale it about its
    centroid."""

    verts: tuple[tuple[float, float], ...]

    def shape_sdf(self, a: Arr, b: Arr, g: Arr | None) -> Arr:
        v = np.asarray(self.verts, float)
        if g is None:
            return poly_sdf(a, b, v)
        c = v.mean(axis=0)
        gs = np.maximum(g, 1e-3)
        return poly_sdf(c[0] + (a - c[0]) / gs, c[1] + (b - c[1]) / gs, v) * gs

    def local_box(self) -> tuple[float, float, float, float]:
        v = np.asarray(self.verts, float)
        return float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max())


@dataclass(frozen=True, kw_only=True)
class Band(Prim):
    """The strip lo(s) <= a <= hi(s), s0 <= s <= s1 of a frame (usually a ``Curve``); lo, hi
    (and the lateral half-width ``hws``, when given) interpolate between knots ``ks``."""

    ks: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    hws: tuple[float, ...] = ()

    def alpha(self, a: Arr, b: Arr, z: Arr, px: float, tz: float) -> Arr:
        ks = np.asarray(self.ks)
        lo, hi = np.interp(b, ks, self.lo), np.interp(b, ks, self.hi)
        ends = np.maximum(ks[0] - b, b - ks[-1])
        dz = np.abs(z - self.zc)
        hw = np.interp(b, ks, self.hws) if self.hws else self.hw
        if self.profile == "box":
            d = np.maximum(np.maximum(lo - a, a - hi), ends) - self.grow
            out = ramp(d, px)
            if self.hws or self.hw < BIG:
                out = out * ramp(dz - hw - self.grow, tz)
            return out
        q = np.minimum(dz / hw, 1.0)
        g = np.sqrt(1.0 - q * q)
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * g
        d = np.maximum(np.abs(a - mid) - half, ends) - self.grow
        return ramp(np.where(g > 0.02, d, BIG), px)

    def local_box(self) -> tuple[float, float, float, float]:
        return min(self.lo), max(self.hi), self.ks[0], self.ks[-1]

    def bounds(self) -> tuple[float, float, float, float, float, float]:
        x0, x1, y0, y1, z0, z1 = super().bounds()
        if self.hws:
            hw = max(self.hws) + max(self.grow, 0.0) + 1.0
            z0, z1 = self.zc - hw, self.zc + hw
        return x0, x1, y0, y1, z0, z1
