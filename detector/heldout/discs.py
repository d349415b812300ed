"""The intervertebral disc as a solid bounded by its two vertebral endplates.

In the disc's own frame (origin between the endplate centres), the disc is the region below
the upper body's inferior endplate and above the lower body's superior endplate (both concave,
so the disc is biconvex), between the line joining the two anterior body corners and the line
joining the two posterior ones, widened by a diffuse bulge. Away from the midline the corners
move inwards with the bodies' super-elliptic cross-section, so lateral slices cut the disc
shorter. A herniation is a dome of disc material behind the posterior line: its depth beyond
the line is the herniation size, largest at its lateral centre (``Hernia.lateral``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.heldout.anatomy import Disc, Hernia, Vertebra
from detector.heldout.shapes import BIG, Arr, Prim, Rigid, ellipse_sdf, ramp


def _rot(delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, u) axes of a frame turned by ``delta`` relative to the current one."""
    return np.array([np.cos(delta), -np.sin(delta)]), np.array([np.sin(delta), np.cos(delta)])


@dataclass(frozen=True, kw_only=True)
class DiscSolid(Prim):
    """One part of a disc: "disc" (annulus with bulge), "hernia", or "union" (ground truth)."""

    upper_c: tuple[float, float]  # inferior endplate centre of the upper body (disc frame)
    lower_c: tuple[float, float]  # superior endplate centre of the lower body
    d_up: float  # AP depth of the upper body
    d_lo: float
    tilt_up: float  # axis angle of the upper body relative to the disc frame
    tilt_lo: float
    concave: tuple[float, float]
    width: float  # transverse width of the disc
    bulge: float
    hernia: Hernia | None = None
    part: str = "disc"
    reach: float = 12.0  # half extent for bounds

    def local_box(self) -> tuple[float, float, float, float]:
        d = max(self.d_up, self.d_lo) / 2 + 1.0
        extra = 0.0 if self.hernia is None else self.hernia.depth + 1.0
        half = self.reach
        return -d - 1.0, d + self.bulge + extra + 1.0, -half, half

    def alpha(self, a: Arr, b: Arr, z: Arr, px: float, tz: float) -> Arr:
        dz = z - self.zc
        q = np.minimum(np.abs(dz) / (self.width / 2), 1.0)
        g = np.sqrt(np.sqrt(1.0 - q**4))
        p1, u1 = _rot(self.tilt_up)
        p2, u2 = _rot(self.tilt_lo)
        b1, b2 = np.asarray(self.upper_c), np.asarray(self.lower_c)
        # posterior and anterior corners, moving inwards laterally
        q1x, q1y = b1[0] + p1[0] * self.d_up / 2 * g, b1[1] + p1[1] * self.d_up / 2 * g
        q2x, q2y = b2[0] + p2[0] * self.d_lo / 2 * g, b2[1] + p2[1] * self.d_lo / 2 * g
        e_post, t_mm, length = _line(a, b, q1x, q1y, q2x, q2y)
        d_hernia = self._hernia(e_post, t_mm - length / 2, dz, length) if self.part != "disc" else None
        if self.part == "hernia":
            assert d_hernia is not None
            return ramp(d_hernia - self.grow, px)
        a1x, a1y = b1[0] - p1[0] * self.d_up / 2 * g, b1[1] - p1[1] * self.d_up / 2 * g
        a2x, a2y = b2[0] - p2[0] * self.d_lo / 2 * g, b2[1] - p2[1] * self.d_lo / 2 * g
        e_ant, t_ant, len_ant = _line(a, b, a1x, a1y, a2x, a2y)
        tt = np.clip(t_mm / np.maximum(length, 1e-3), 0.0, 1.0)
        ta = np.clip(t_ant / np.maximum(len_ant, 1e-3), 0.0, 1.0)
        d_post = e_post - self.bulge * 4.0 * tt * (1.0 - tt)
        d_ant = -e_ant - 0.4 * self.bulge * 4.0 * ta * (1.0 - ta)
        r1 = np.clip(((a - b1[0]) * p1[0] + (b - b1[1]) * p1[1]) / (self.d_up / 2), -1, 1)
        r2 = np.clip(((a - b2[0]) * p2[0] + (b - b2[1]) * p2[1]) / (self.d_lo / 2), -1, 1)
        d_top = -((a - b1[0]) * u1[0] + (b - b1[1]) * u1[1] + self.concave[0] * (1 - r1 * r1))
        d_bot = (a - b2[0]) * u2[0] + (b - b2[1]) * u2[1] - self.concave[1] * (1 - r2 * r2)
        d = np.maximum(np.maximum(d_top, d_bot), np.maximum(d_post, d_ant))
        d = np.where(g > 0.02, d, BIG)
        if d_hernia is not None:
            d = np.minimum(d, d_hernia)
        return ramp(d - self.grow, px)

    def _hernia(self, e_post: Arr, t: Arr, dz: Arr, length: Arr) -> Arr:
        h = self.hernia
        if h is None:
            return np.full(np.shape(e_post), BIG)
        depth = h.lateral(dz)
        e = np.maximum(e_post, 0.0)
        d = ellipse_sdf(t - h.shift, e, h.half_height, depth)
        if h.kind == "extrusion":
            neck = depth * (h.neck / h.depth)
            d = np.minimum(d, ellipse_sdf(t, e, length / 2, neck))
        d = np.maximum(d, -0.3 - e_post)
        return np.where(depth > 0.05, d, BIG)


def _line(a: Arr, b: Arr, x1: Arr, y1: Arr, x2: Arr, y2: Arr) -> tuple[Arr, Arr, Arr]:
    """Signed distance of (a, b) posterior to the line (1)->(2) running caudally, its position
    along the line from (1) (mm), and the line's length."""
    lx, ly = x2 - x1, y2 - y1
    length = np.sqrt(lx * lx + ly * ly) + 1e-9
    lx, ly = lx / length, ly / length
    da, db = a - x1, b - y1
    return da * ly - db * lx, da * lx + db * ly, length


def disc_frame(up: Vertebra, lo: Vertebra) -> Rigid:
    """The disc's frame: origin between the facing endplate centres, axis the mean of the two."""
    ux = np.array([np.sin(up.phi), np.cos(up.phi)])
    lx = np.array([np.sin(lo.phi), np.cos(lo.phi)])
    top = np.array([up.x, up.y]) + ux * up.height / 2
    bot = np.array([lo.x, lo.y]) - lx * lo.height / 2
    mid = (top + bot) / 2
    return Rigid(mid[0], mid[1], (up.phi + lo.phi) / 2)


def disc_solid(disc: Disc, up: Vertebra, lo: Vertebra, concave: tuple[float, float], **kw: object) -> DiscSolid:
    """The disc between ``up`` and ``lo`` (``kw``: Prim fields, e.g. tissue, part, layer)."""
    f = disc_frame(up, lo)
    ux = np.array([np.sin(up.phi), np.cos(up.phi)])
    lx = np.array([np.sin(lo.phi), np.cos(lo.phi)])
    top = np.array([up.x, up.y]) + ux * up.height / 2
    bot = np.array([lo.x, lo.y]) - lx * lo.height / 2
    ta, tb = f.local(top[0], top[1])
    ba, bb = f.local(bot[0], bot[1])
    reach = disc.height / 2 + 8.0
    if disc.hernia is not None:
        reach = max(reach, abs(disc.hernia.shift) + disc.hernia.half_height + 2.0)
    fields: dict[str, object] = dict(
        tissue="annulus",
        frame=f,
        zc=(up.z + lo.z) / 2,
        hw=min(up.width, lo.width) / 2,
        nsub=3,
        upper_c=(float(ta), float(tb)),
        lower_c=(float(ba), float(bb)),
        d_up=up.depth,
        d_lo=lo.depth,
        tilt_up=up.phi - f.phi,
        tilt_lo=lo.phi - f.phi,
        concave=concave,
        width=min(up.width, lo.width),
        bulge=disc.bulge,
        hernia=disc.hernia,
        reach=reach,
    )
    fields.update(kw)
    return DiscSolid(**fields)  # type: ignore[arg-type]


def posterior_point(disc: Disc, up: Vertebra, lo: Vertebra) -> tuple[float, float]:
    """World (x, y) of the midpoint of the disc's posterior line at its midline."""
    f = disc_frame(up, lo)
    a = (up.depth + lo.depth) / 4
    x, y = f.world(a, 0.0)
    return float(x), float(y)
