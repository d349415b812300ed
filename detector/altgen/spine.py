"""Discs, vertebral bodies and posterior elements cut at one lateral position."""

from __future__ import annotations

from functools import partial

import numpy as np

from .anatomy import Anatomy, Body, DiscGeom, Posterior, axes, lateral_factor
from .canal import zoff_at
from .grid import (
    Crop,
    Grid,
    SdFn,
    alpha_of,
    bounds_of,
    frame,
    paint,
    sd_capsule,
    sd_convex,
    sd_ellipse,
    sd_superellipse,
)
from .soft import Lines

Bounds = tuple[float, float, float, float]
MIN_CUT = 0.2  # lateral factor below which a disc is not drawn
MIN_HERN = 0.2  # herniation displacement (mm) below which none is drawn


def disc_offset(disc: DiscGeom, ln: Lines) -> float:
    """Lateral offset (mm) of the spine's mid-plane at the disc's height."""
    return zoff_at(ln, float(np.mean([disc.upper.centre[0], disc.lower.centre[0]])))


def disc_protrusion(disc: DiscGeom, ln: Lines, z: float) -> float | None:
    """Posterior displacement (mm) of the disc drawn at lateral position z beyond the line joining the
    posterior corners of its bodies cut there; None where the plane misses the disc.
    It is the larger of the bulge and the herniation as paint_discs draws them (both peak on that line's
    normal through the disc's mid-height, so the value is exact)."""
    zd = z - disc_offset(disc, ln)
    if lateral_factor(zd, disc.half_width) < MIN_CUT:
        return None
    pe = disc.prot_at(zd)
    return max(disc.bulge, pe if pe > MIN_HERN else 0.0)


def _ellipse_at(
    yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], theta: float, a: float, b: float
) -> np.ndarray:
    return sd_ellipse(*frame(yy, xx, centre, theta), a, b)


def _box_at(
    yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], theta: float, hu: float, hv: float
) -> np.ndarray:
    return sd_superellipse(*frame(yy, xx, centre, theta), hu, hv, 4.0)


def paint_discs(
    canvas: np.ndarray, a: Anatomy, grid: Grid, ln: Lines, con: dict[str, float], z: float
) -> dict[str, tuple[Crop, np.ndarray]]:
    """Annulus, bulge, herniation and nucleus of every disc cut; returns each disc's coverage."""
    out: dict[str, tuple[Crop, np.ndarray]] = {}
    for disc in a.discs:
        zd = z - disc_offset(disc, ln)
        c = lateral_factor(zd, disc.half_width)
        if c < MIN_CUT:
            continue
        q = disc.quad(c)
        dm, _ = axes(0.5 * (disc.upper.theta + disc.lower.theta))
        ext = q + np.array([-dm, -dm, dm, dm]) * 1.0
        m = (q[1] + q[2]) / 2
        line = q[2] - q[1]
        half_len = float(np.hypot(*line)) / 2
        dl = line / (2 * half_len)
        pr = np.array([-dl[1], dl[0]])
        if np.dot(pr, axes(disc.upper.theta)[1]) < 0:
            pr = -pr
        pe = disc.prot_at(zd)
        ap_h = 0.5 * pe + 1.2
        hc = m + pr * (pe - ap_h) + dl * disc.migration
        hl = max(half_len * 0.9, disc.hern_len)
        ang = float(np.arctan2(dl[1], dl[0]))

        def shape(
            yy: np.ndarray, xx: np.ndarray, q=ext, m=m, hc=hc, pe=pe, hl=hl, ang=ang, hlen=half_len, bulge=disc.bulge
        ) -> np.ndarray:
            sd = sd_convex(yy, xx, q)
            if bulge > 0:
                u, v = frame(yy, xx, (float(m[0]), float(m[1])), ang)
                sd = np.minimum(sd, sd_ellipse(u, v, hlen + 0.3, bulge))
            if pe > MIN_HERN:
                u, v = frame(yy, xx, (float(hc[0]), float(hc[1])), ang)
                sd = np.minimum(sd, sd_ellipse(u, v, hl, 0.5 * pe + 1.2))
            return sd

        bounds = bounds_of(np.vstack([ext, hc[None, :]]), max(pe, disc.bulge) + hl + 1.0)
        done = paint(canvas, grid, bounds, shape, con["annulus"])
        if done is None:
            continue
        out[disc.level] = done
        nc = q.mean(axis=0) + pr * 0.08 * np.hypot(*(q[1] - q[0]))
        depth = float(np.hypot(*(q[1] - q[0])))
        height = float(np.hypot(*(q[3] - q[0])) + half_len * 2) / 2
        nval = con["annulus"] + (con["nucleus"] - con["annulus"]) * disc.nucleus
        paint(
            canvas,
            grid,
            bounds,
            partial(_ellipse_at, centre=(float(nc[0]), float(nc[1])), theta=ang, a=0.32 * height, b=0.3 * depth),
            nval,
        )
        if pe > MIN_HERN:
            paint(
                canvas,
                grid,
                bounds,
                partial(_ellipse_at, centre=(float(hc[0]), float(hc[1])), theta=ang, a=hl * 0.7, b=0.5 * pe + 0.6),
                con["herniation"],
            )
    return out


def _bone(
    canvas: np.ndarray,
    occ: np.ndarray,
    grid: Grid,
    bounds: Bounds,
    sd_fn: SdFn,
    con: dict[str, float],
    marrow: np.ndarray,
) -> None:
    """Cortex then marrow (inset 1.1 mm); the cortex's coverage goes into occ."""
    crop = grid.crop(*bounds)
    if crop is None:
        return
    r0, r1, c0, c1 = crop
    sd = sd_fn(grid.ys[r0:r1, None], grid.xs[None, c0:c1])
    pix = min(grid.spacing)
    cortex, inner = alpha_of(sd, pix), alpha_of(sd + 1.1, pix)
    sub = canvas[r0:r1, c0:c1]
    sub += cortex * (con["cortex"] - sub)
    sub += inner * (marrow[r0:r1, c0:c1] - sub)
    np.maximum(occ[r0:r1, c0:c1], cortex, out=occ[r0:r1, c0:c1])


def _body_sd(b: Body, c: float) -> tuple[SdFn, float]:
    front, back = -b.depth / 2 + 0.55 * b.depth * (1 - c), b.depth / 2 - 0.2 * b.depth * (1 - c)
    v0, hv = (front + back) / 2, (back - front) / 2

    def sd(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        u, v = frame(yy, xx, b.centre, b.theta)
        hu = b.height / 2 - b.wedge / 2 * (v / b.depth)
        return sd_superellipse(u, v - v0, hu, hv, 5.0)

    return sd, v0


def paint_bones(
    canvas: np.ndarray,
    occ: np.ndarray,
    a: Anatomy,
    grid: Grid,
    ln: Lines,
    con: dict[str, float],
    z: float,
    marrow: np.ndarray,
) -> None:
    """Bodies (with Modic / hemangioma), dens, C1, pedicles, pillars, laminae, spinous processes."""
    pmarrow = marrow * 0.8
    for b, post in zip(a.bodies, a.posts):
        zb = z - zoff_at(ln, b.centre[0])
        c = lateral_factor(zb, b.half_width)
        bounds = bounds_of(np.array(b.corners()), 3.0)
        if c >= 0.15:
            sd, v0 = _body_sd(b, c)
            _bone(canvas, occ, grid, bounds, sd, con, marrow)
            if b.marrow.startswith("modic"):
                side, band, _ = b.lesion

                def msd(
                    yy: np.ndarray, xx: np.ndarray, sd: SdFn = sd, b: Body = b, side: float = side, band: float = band
                ) -> np.ndarray:
                    u, _ = frame(yy, xx, b.centre, b.theta)
                    return np.maximum(sd(yy, xx) + 1.1, (b.height / 2 - band) - side * u)

                paint(canvas, grid, bounds, msd, con[b.marrow])
            elif b.marrow == "hemangioma" and abs(zb) < b.lesion[2] + 3:
                lu, lv, lr = b.lesion

                def hsd(
                    yy: np.ndarray, xx: np.ndarray, b: Body = b, lu: float = lu, lv: float = lv, lr: float = lr
                ) -> np.ndarray:
                    u, v = frame(yy, xx, b.centre, b.theta)
                    return sd_ellipse(u - lu, v - lv, lr, lr)

                paint(canvas, grid, bounds, hsd, con["hemangioma"])
        d, p = axes(b.theta)
        ap = float(np.interp(b.centre[0], ln.y, ln.ap)) * np.cos(b.theta)
        if a.sac_hw + 0.5 < abs(zb) < a.canal_hw + 2:  # pedicle, lateral to the thecal sac
            o = np.array(b.centre) + d * (-b.height * 0.2) + p * (b.depth / 2 + ap * 0.3)
            _bone(
                canvas,
                occ,
                grid,
                bounds_of(o, 14.0),
                partial(
                    _box_at, centre=(float(o[0]), float(o[1])), theta=b.theta, hu=b.height * 0.22, hv=ap * 0.45 + 2.5
                ),
                con,
                marrow,
            )
        cp = lateral_factor(abs(zb) - (a.canal_hw + 4.5), 6.5)
        if cp > 0.2:  # articular pillar, facet planes inclined by post.facet
            t = np.tan(post.facet)

            def pil(yy: np.ndarray, xx: np.ndarray, post: Posterior = post, t: float = t, cp: float = cp) -> np.ndarray:
                u, v = frame(yy, xx, post.pillar, post.pillar_theta)
                return sd_superellipse(
                    (u - v * t) * np.cos(post.facet),
                    v,
                    (post.pillar_h / 2 - 1.0) * np.cos(post.facet),
                    6.5 * cp + 0.5,
                    4.0,
                )

            _bone(canvas, occ, grid, bounds_of(np.array(post.pillar), 16.0), pil, con, marrow)
        if abs(zb) < a.canal_hw + 1:  # lamina
            l0, l1 = post.lamina
            _bone(
                canvas,
                occ,
                grid,
                bounds_of(np.array([l0, l1]), 4.0),
                partial(sd_capsule, p0=l0, p1=l1, r0=2.8, r1=2.8),
                con,
                pmarrow,
            )
        cs = lateral_factor(zb, post.spin_hw)
        if cs > 0.2:
            r0, r1 = post.spin_r * (0.5 + 0.5 * cs), post.spin_r * 0.65 * (0.5 + 0.5 * cs)
            _bone(
                canvas,
                occ,
                grid,
                bounds_of(np.array([post.spin_base, post.spin_tip]), post.spin_r + 2),
                partial(sd_capsule, p0=post.spin_base, p1=post.spin_tip, r0=r0, r1=r1),
                con,
                pmarrow,
            )
    _upper_cervical(canvas, occ, a, grid, ln, con, z, marrow)
    for disc in a.discs:
        _osteophytes(canvas, occ, disc, grid, ln, con, z)


def _upper_cervical(
    canvas: np.ndarray,
    occ: np.ndarray,
    a: Anatomy,
    grid: Grid,
    ln: Lines,
    con: dict[str, float],
    z: float,
    marrow: np.ndarray,
) -> None:
    base, tip, r = a.dens
    zd = z - zoff_at(ln, tip[0])
    cd = lateral_factor(zd, r + 1.0)
    if cd > 0.2:
        _bone(
            canvas,
            occ,
            grid,
            bounds_of(np.array([base, tip]), r + 2),
            lambda yy, xx: sd_capsule(yy, xx, base, tip, r * cd, r * cd),
            con,
            marrow,
        )
    (ya, xa), sa, aa = a.c1_ant
    ca = lateral_factor(zd, 9.0)
    if ca > 0.2:
        _bone(
            canvas,
            occ,
            grid,
            (ya - sa - 2, ya + sa + 2, xa - aa - 2, xa + aa + 2),
            lambda yy, xx: sd_ellipse(yy - ya, xx - xa, sa * (0.6 + 0.4 * ca), aa),
            con,
            marrow,
        )
    (yp, xp), sp, ap = a.c1_post
    cpst = lateral_factor(zd, a.canal_hw + 2)
    if cpst > 0.2:
        _bone(
            canvas,
            occ,
            grid,
            (yp - sp - 2, yp + sp + 2, xp - ap - 2, xp + ap + 2),
            lambda yy, xx: sd_ellipse(yy - yp, xx - xp, sp, ap),
            con,
            marrow,
        )
    cl = lateral_factor(abs(zd) - (a.canal_hw + 4), 8.0)
    if cl > 0.2:  # C1 lateral mass below the occipital condyle
        yl, xl = ya + 3, (xa + tip[1]) / 2 + 5
        _bone(
            canvas,
            occ,
            grid,
            (yl - 12, yl + 12, xl - 14, xl + 14),
            lambda yy, xx: sd_superellipse(yy - yl, xx - xl, 8.0 * cl + 1, 10.0 * cl + 1, 4.0),
            con,
            marrow,
        )


def _osteophytes(
    canvas: np.ndarray, occ: np.ndarray, disc: DiscGeom, grid: Grid, ln: Lines, con: dict[str, float], z: float
) -> None:
    if disc.osteophyte <= 0:
        return
    c = lateral_factor(z - zoff_at(ln, disc.upper.centre[0]), disc.half_width)
    if c < 0.2:
        return
    q = disc.quad(c)
    _, p = axes(disc.upper.theta)
    d = (q[2] - q[1]) / (np.hypot(*(q[2] - q[1])) + 1e-6)
    for corner, sign in ((q[1], -1.0), (q[2], 1.0)):
        p0 = (float(corner[0] - sign * d[0] * 2.5), float(corner[1] - sign * d[1] * 2.5))
        tip = corner + p * disc.osteophyte + sign * d * 0.8
        p1 = (float(tip[0]), float(tip[1]))
        done = paint(
            canvas,
            grid,
            bounds_of(np.array([p0, p1]), 3.0),
            partial(sd_capsule, p0=p0, p1=p1, r0=1.4, r1=0.5),
            con["cortex"],
        )
        if done is not None:
            (r0, r1, c0, c1), alpha = done
            np.maximum(occ[r0:r1, c0:c1], alpha, out=occ[r0:r1, c0:c1])
