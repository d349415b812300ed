"""Primitives around the spine: the neck and its organs, with the head put in.

The neck is a strip between an anterior and a posterior skin line, placed relative to the
spine at each level (habitus: neck depth and subcutaneous fat vary per study). Organs in front
of the spine (prevertebral muscle, pharynx/larynx/trachea, oesophagus, thyroid) are strips of a
curve along the front of the vertebral bodies. The head (skull, brain, skull base, clivus) is
built in ``head_scene.py``; :func:`body_scene` returns all of them in painting order.
"""

from __future__ import annotations

import numpy as np

from detector.heldout.anatomy import Spine
from detector.heldout.head_scene import Head, head_prims, scalp_prims
from detector.heldout.shapes import Band, Box, Curve, Ellipse, Poly, Prim, Rigid
from detector.heldout.spine_scene import bone, sub


def _knots(pairs: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    ys, vals = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    o = np.argsort(ys)
    return ys[o], vals[o]


def neck_prims(spine: Spine, head: Head, rng: np.random.Generator) -> tuple[list[Prim], list[Prim], list[Prim], Curve]:
    """The neck's outline (skin, fat, soft tissue), its posterior muscles, its organs, and the
    curve along the front of the vertebral bodies (x as a function of y)."""
    vs = spine.vertebrae
    yv = [v.y for v in vs]
    bx, by = head.frame.x0, head.frame.y0
    # anterior margin of the skeleton and posterior laminar line
    front = [
        (float(v.frame.world(-v.depth / 2, b)[1]), float(v.frame.world(-v.depth / 2, b)[0]))
        for v in vs
        for b in (-v.height / 2, v.height / 2)
    ]
    front += [(by + 12.0, bx - 8.0), (by - 40.0, bx - 30.0)]
    back = [
        (
            float(v.frame.world(v.depth / 2 + v.canal + 5.0, 0)[1]),
            float(v.frame.world(v.depth / 2 + v.canal + 5.0, 0)[0]),
        )
        for v in vs
    ]
    back += [(by + 8.0, bx + head.opisthion + 6.0), (by - 40.0, bx + head.opisthion + 20.0)]
    fy, fx = _knots(front)
    ky, kx = _knots(back)
    y_lo, y_hi = by - 160.0, yv[-1] + 90.0
    fy, fx = np.concatenate([[y_lo], fy, [y_hi]]), np.concatenate([[fx[0]], fx, [fx[-1]]])
    ky, kx = np.concatenate([[y_lo], ky, [y_hi]]), np.concatenate([[kx[0]], kx, [kx[-1]]])
    ac = Curve(fx, fy, step=1.0, smooth=6.0)
    pc = Curve(kx, ky, step=1.0, smooth=6.0)
    hab = rng.uniform(0.85, 1.2)
    fat_a, fat_p, skin = rng.uniform(3.0, 14.0), rng.uniform(4.0, 24.0), rng.uniform(1.5, 2.5)
    c2, c3, c4, c5, c7, t2, t3 = yv[0], yv[1], yv[2], yv[3], yv[5], yv[7], yv[8]
    # skin lines as offsets from the two curves (mm, anterior: negative)
    ant = [
        (y_lo, -100.0),
        (by, -rng.uniform(88, 105)),
        (c2 + 8, -rng.uniform(80, 95)),
        (c3 + 4, -rng.uniform(55, 70)),
        (c4, -rng.uniform(40, 50)),
        (c5, -rng.uniform(40, 54)),
        (c7, -rng.uniform(42, 52)),
        (t2, -rng.uniform(46, 56)),
        (t3 + 10, -rng.uniform(62, 80)),
        (y_hi, -rng.uniform(70, 90)),
    ]
    post = [
        (y_lo, 20.0),
        (by + 10, rng.uniform(30, 40)),
        (c3, rng.uniform(24, 36)),
        (c5, rng.uniform(22, 34)),
        (c7, rng.uniform(38, 48)),
        (t2, rng.uniform(40, 52)),
        (y_hi, rng.uniform(45, 60)),
    ]
    ay, aoff = _knots(ant)
    py, poff = _knots(post)
    grid = np.arange(y_lo, y_hi, 4.0)
    x_skin_a = np.array([ac.x_at(y) for y in grid]) + np.interp(grid, ay, aoff) * hab
    x_skin_p = np.array([pc.x_at(y) for y in grid]) + np.interp(grid, py, poff) * hab + fat_p * 0.6
    line = Rigid(0.0, float(y_lo))  # a = x, b = y - y_lo
    ks = tuple(float(y - y_lo) for y in grid)
    lo, hi = tuple(float(x) for x in x_skin_a), tuple(float(x) for x in x_skin_p)
    out: list[Prim] = [
        Band(tissue="skin", frame=line, ks=ks, lo=lo, hi=hi),
        Band(tissue="fat", frame=line, ks=ks, lo=lo, hi=hi, grow=-skin, tex=0.06),
        Band(
            tissue="soft",
            frame=line,
            ks=ks,
            lo=tuple(x + skin + fat_a for x in lo),
            hi=tuple(x - skin - fat_p for x in hi),
            tex=0.12,
        ),
    ]
    # posterior muscles (from below the occiput) with fat planes, interspinous fat, nuchal ligament
    sel = grid >= by - 15.0
    mks = tuple(k for k, m in zip(ks, sel) if m)
    m_lo = tuple(float(pc.x_at(y)) - 6.0 for y in grid[sel])
    m_hi = tuple(x - skin - fat_p for x, m in zip(hi, sel) if m)
    muscles: list[Prim] = [Band(tissue="muscle", frame=line, ks=mks, lo=m_lo, hi=m_hi, tex=0.12)]
    for frac in (rng.uniform(0.3, 0.45), rng.uniform(0.6, 0.75)):
        mid = tuple(a + (b - a) * frac for a, b in zip(m_lo, m_hi))
        muscles.append(
            Band(tissue="fat", frame=line, ks=mks, lo=mid, hi=tuple(m + rng.uniform(0.8, 1.8) for m in mid), gain=0.8)
        )
    nuchal = tuple(float(pc.x_at(y)) + (2.0 + 8.0 * np.exp(-(((y - c4) / 25.0) ** 2))) for y in grid[sel])
    muscles.append(
        Band(tissue="fat", frame=line, ks=mks, lo=tuple(x - 8.0 for x in nuchal), hi=nuchal, hw=2.5, gain=0.7)
    )
    muscles.append(Band(tissue="ligament", frame=line, ks=mks, lo=nuchal, hi=tuple(x + 1.8 for x in nuchal), hw=2.0))
    organs = _anterior_organs(spine, ac, rng, lo, grid, line)
    return out, muscles, organs, ac


def _anterior_organs(
    spine: Spine, ac: Curve, rng: np.random.Generator, skin_a: tuple[float, ...], grid: np.ndarray, line: Rigid
) -> list[Prim]:
    vs = spine.vertebrae
    y = [v.y for v in vs]
    s = [ac.s_at(v) for v in y]
    s_top = s[0] - 45.0
    pv_k = (s_top, s[0], s[1], s[2], s[3] + 4, s[4], s[6], s[8] + 20)
    pv = (
        rng.uniform(5, 9),
        rng.uniform(4, 7),
        rng.uniform(3.5, 6),
        rng.uniform(4, 7),
        rng.uniform(10, 15),
        rng.uniform(13, 18),
        rng.uniform(12, 17),
        rng.uniform(12, 17),
    )
    aw = (
        rng.uniform(10, 20),
        rng.uniform(9, 18),
        rng.uniform(8, 15),
        rng.uniform(8, 14),
        rng.uniform(8, 14),
        rng.uniform(12, 16),
        rng.uniform(14, 18),
        rng.uniform(14, 18),
    )
    awh = (14.0, 14.0, 12.0, 10.0, 9.0, 8.5, 8.5, 8.5)
    pv_lo = tuple(-p for p in pv)
    air_lo = tuple(-(p + a) for p, a in zip(pv, aw))
    out: list[Prim] = [Band(tissue="muscle", frame=ac, ks=pv_k, lo=pv_lo, hi=(1.0,) * 8, hw=15.0, tex=0.1)]
    # oesophagus from C6 down, in the front part of the prevertebral space
    ek = (s[4] - 4, s[5], s[8] + 20)
    eso = Band(
        tissue="muscle",
        frame=ac,
        ks=ek,
        lo=tuple(float(np.interp(k, pv_k, pv_lo)) for k in ek),
        hi=tuple(float(np.interp(k, pv_k, pv_lo)) + rng.uniform(7, 11) for k in ek),
        hw=10.0,
        profile="round",
        nsub=1,
    )
    out += [
        eso,
        Band(
            tissue="mucosa",
            frame=ac,
            ks=ek,
            lo=tuple(l_ + 3.0 for l_ in eso.lo),
            hi=tuple(h - 3.0 for h in eso.hi),
            hw=5.0,
            gain=0.8,
        ),
    ]
    air = Band(tissue="air", frame=ac, ks=pv_k, lo=air_lo, hi=pv_lo, hws=awh)
    out += [Band(tissue="mucosa", frame=ac, ks=pv_k, lo=air_lo, hi=pv_lo, hws=awh, grow=1.5, gain=0.9), air]
    x_at = lambda yy, off: float(ac.x_at(yy)) + off  # noqa: E731
    pv_at = lambda yy: float(np.interp(ac.s_at(yy), pv_k, pv))  # noqa: E731
    aw_at = lambda yy: float(np.interp(ac.s_at(yy), pv_k, aw))  # noqa: E731
    front = lambda yy: x_at(yy, -pv_at(yy) - aw_at(yy))  # noqa: E731  airway front wall
    ref = Rigid(0.0, 0.0)
    # adenoids, soft palate, tongue, mandible, floor of mouth
    out.append(
        Ellipse(
            tissue="lymphoid", frame=Rigid(x_at(y[0] - 30, -pv_at(y[0] - 30) - 2), y[0] - 30), ra=5.0, rb=9.0, hw=12.0
        )
    )
    out.append(
        Ellipse(tissue="muscle", frame=Rigid(front(y[0] - 22) + 2, y[0] - 20, 0.5), ra=4.5, rb=14.0, hw=16.0, gain=1.3)
    )
    tongue = Rigid(front(y[0]) - 30.0 * rng.uniform(0.9, 1.1), y[0] - 2.0)
    out.append(Ellipse(tissue="muscle", frame=tongue, ra=31.0, rb=25.0, hw=25.0, gain=1.15, tex=0.15))
    md = sub(tongue, -34.0, 20.0, np.radians(rng.uniform(-20, 0)))
    out += bone(Box(tissue="cortex", frame=md, ha=6.5, hb=16.0, r=4.0, hw=20.0), shell=2.0)
    out.append(Ellipse(tissue="muscle", frame=Rigid(front(y[1]) - 20, y[1] + 2, 0.9), ra=6.0, rb=22.0, hw=12.0))
    # epiglottis, hyoid, pre-epiglottic fat, thyroid and cricoid cartilages, vocal folds
    out.append(Ellipse(tissue="fat", frame=Rigid(front(y[2]) - 7, y[1] + 8), ra=6.0, rb=9.0, hw=10.0, gain=0.9))
    out.append(
        Ellipse(tissue="mucosa", frame=Rigid(front(y[1]) + 4, y[1] - 2, -0.4), ra=1.6, rb=11.0, hw=12.0, gain=0.7)
    )
    out += bone(Ellipse(tissue="cortex", frame=Rigid(front(y[1]) - 13, y[1] + 4), ra=5.0, rb=3.5, hw=16.0))
    thy = Rigid(front(y[3]) - 3.5, (y[2] + y[3]) / 2 + 2, -0.15)
    out.append(Box(tissue="cortex", frame=thy, ha=2.0, hb=14.0, r=1.5, hw=16.0))
    out.append(Box(tissue="cartilage", frame=thy, ha=1.3, hb=13.0, r=1.0, hw=16.0, gain=rng.uniform(0.4, 1.0)))
    out.append(
        Box(
            tissue="cartilage",
            frame=Rigid(x_at(y[4], -pv_at(y[4]) + 0.5), y[4] - 4),
            ha=3.0,
            hb=10.0,
            r=1.5,
            hw=12.0,
            gain=0.7,
        )
    )
    for side in (-1.0, 1.0):
        yy = (y[3] + y[4]) / 2
        out.append(
            Ellipse(
                tissue="muscle", frame=Rigid(front(yy) + (3 if side < 0 else aw_at(yy) - 3), yy), ra=3.0, rb=2.5, hw=8.0
            )
        )
    # thyroid gland, mediastinal fat, great vessels, manubrium, clavicles
    tk = (s[4], s[5], s[6] + 6)
    t_hi = tuple(float(np.interp(k, pv_k, air_lo)) - 1.0 for k in tk)
    out.append(
        Band(
            tissue="thyroid", frame=ac, ks=tk, lo=tuple(h - rng.uniform(4, 8) for h in t_hi), hi=t_hi, hw=10.0, tex=0.08
        )
    )
    for side in (-1.0, 1.0):
        out.append(
            Ellipse(
                tissue="thyroid", frame=Rigid(front(y[5]) - 2, y[5]), ra=9.0, rb=20.0, zc=side * 18.0, hw=9.0, tex=0.08
            )
        )
    mk = (s[6] + 4, s[8] + 40)
    m_hi = tuple(float(np.interp(k, pv_k, air_lo)) - 1.5 for k in mk)
    out.append(Band(tissue="fat", frame=ac, ks=mk, lo=tuple(h - 45.0 for h in m_hi), hi=m_hi, tex=0.08))
    for dz in (-6.0, 5.0):
        out.append(
            Ellipse(
                tissue="vessel",
                frame=Rigid(front(y[7]) - 12, y[7] + rng.uniform(-5, 10)),
                ra=rng.uniform(5, 7),
                rb=9.0,
                zc=dz,
                hw=6.0,
                gain=rng.uniform(0.0, 0.3),
            )
        )
    notch_y = y[7] - rng.uniform(0.0, 12.0)
    x_sa = float(np.interp(notch_y, grid, skin_a))
    man = ((x_sa + 8, notch_y), (x_sa + 20, notch_y + 2), (x_sa + 14, notch_y + 60), (x_sa + 3, notch_y + 58))
    out += bone(Poly(tissue="cortex", frame=ref, verts=man, hw=22.0), shell=1.5)
    for side in (-1.0, 1.0):
        out += bone(
            Ellipse(tissue="cortex", frame=Rigid(x_sa + 14, notch_y + 4), ra=7.0, rb=6.0, zc=side * 22.0, hw=10.0)
        )
    # carotid arteries and jugular veins (lateral), lung apices
    vk = (s_top + 10, s[7])
    for side in (-1.0, 1.0):
        out.append(
            Band(
                tissue="vessel",
                frame=ac,
                ks=vk,
                lo=(-13.0, -16.0),
                hi=(-6.0, -8.0),
                zc=side * 21.0,
                hw=3.5,
                gain=rng.uniform(0.0, 0.1),
            )
        )
        out.append(
            Band(
                tissue="vessel",
                frame=ac,
                ks=vk,
                lo=(-28.0, -34.0),
                hi=(-14.0, -20.0),
                zc=side * 30.0,
                hw=6.0,
                gain=rng.uniform(0.0, 0.8),
            )
        )
        out.append(
            Ellipse(
                tissue="air",
                frame=Rigid(x_at(y[8], -25.0), y[8] + 5),
                ra=24.0,
                rb=32.0,
                zc=side * 40.0,
                hw=17.0,
                profile="round",
            )
        )
    return out


def body_scene(spine: Spine, head: Head, rng: np.random.Generator) -> tuple[list[Prim], Curve]:
    """All primitives around the spine, painting order; and the curve along its front."""
    outline, muscles, organs, ac = neck_prims(spine, head, rng)
    return outline + scalp_prims(head) + muscles + head_prims(spine, head, rng) + organs, ac
