"""Row-wise anatomical lines and the soft tissues of the neck and head."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .anatomy import Anatomy
from .grid import Grid, alpha_of, paint, sd_capsule, sd_ellipse


@dataclass(frozen=True, eq=False)
class Lines:
    """Per-row positions (mm) of the spine's lines on a grid."""

    y: np.ndarray
    xw: np.ndarray  # anterior canal wall (posterior vertebral line)
    ap: np.ndarray  # horizontal canal width
    cos: np.ndarray
    xa: np.ndarray  # anterior vertebral line
    skin: np.ndarray  # posterior skin
    front: np.ndarray  # anterior skin
    pv: np.ndarray  # prevertebral thickness
    aw: np.ndarray  # airway width
    zoff: np.ndarray  # lateral position of the spine's mid-plane at each row
    y_chin: float
    y_palate: float


def make_lines(a: Anatomy, grid: Grid) -> Lines:
    y = grid.ys.astype(float)
    b = a.bodies
    theta = np.interp(y, [x.centre[0] for x in b], [x.theta for x in b])
    cos = np.cos(theta)
    xw = np.interp(y, a.wall[:, 0], a.wall[:, 1])
    ap = np.interp(y, a.wall[:, 0], a.wall[:, 2]) / np.maximum(cos, 0.5)
    xa = np.interp(y, a.front[:, 0], a.front[:, 1])
    tips = np.array([p.spin_tip for p in a.posts])
    s = a.soft
    neck = np.maximum(np.interp(y, tips[:, 0], tips[:, 1]), xw + ap + 25) + s["muscle_gap"] + s["subcut"]
    (cy, cx), bv, ah = a.cranium
    q = np.clip(1 - ((y - cy) / (bv + 12)) ** 2, 0, 1)
    cran = np.where(q > 0, cx + (ah + s["bone"] + s["scalp"]) * np.sqrt(q), -1e3)
    skin = np.maximum(neck, cran)
    k = max(3, int(12.0 / grid.spacing[0]))
    padded = np.pad(skin, k, mode="edge")
    skin = np.convolve(padded, np.ones(2 * k + 1) / (2 * k + 1), mode="same")[k:-k]
    y_c3, y_c5, y_c6 = b[1].centre[0], b[3].centre[0], b[4].centre[0]
    pv = np.interp(y, [y_c3, y_c6], [s["pv_top"], s["pv_bottom"]])
    aw = np.interp(y, [y_c5, b[5].centre[0]], [s["airway"], s["trachea"]])
    y_chin = float(b[1].centre[0] + s["chin_dy"])
    neck_front = xa - pv - aw - s["neck_front"]
    face = float(np.interp(b[0].centre[0], y, xa)) - s["face_front"] + 0.15 * (y - y_chin)
    w = 1.0 / (1.0 + np.exp((y - y_chin - 6.0) / 4.0))
    front = w * face + (1 - w) * neck_front
    zoff = a.lateral[0] + a.lateral[1] * (y - 100.0) / 100.0
    y_palate = float(a.c1_ant[0][0] + s["palate_dy"])
    return Lines(y, xw, ap, cos, xa, skin, front, pv, aw, zoff, y_chin, y_palate)


def _band(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, pix: float) -> np.ndarray:
    """Coverage of lo <= x <= hi (lo, hi per row)."""
    lo32, hi32 = lo.astype(np.float32)[:, None], hi.astype(np.float32)[:, None]
    return alpha_of(np.maximum(lo32 - x, x - hi32), pix)


def _blend(canvas: np.ndarray, alpha: np.ndarray, value: float | np.ndarray) -> None:
    canvas += alpha * (value - canvas)


def paint_soft(canvas: np.ndarray, a: Anatomy, grid: Grid, ln: Lines, con: dict[str, float], tex: np.ndarray) -> None:
    """Neck silhouette, fat, muscles with fat planes, airway, tongue, palate, mandible and hyoid."""
    x = grid.xs[None, :]
    pix = min(grid.spacing)
    s = a.soft
    muscle = con["muscle"] * (1 + 0.06 * tex)
    _blend(canvas, _band(x, ln.front - 1.5, ln.skin + 1.5, pix), con["skin"])
    _blend(canvas, _band(x, ln.front, ln.skin, pix), con["fat"])
    _blend(canvas, _band(x, ln.front + s["subcut"] * 0.6, ln.skin - s["subcut"], pix), muscle)
    # fat planes between the posterior muscles, and the nuchal ligament
    back = ln.xw + ln.ap
    span = ln.skin - s["subcut"] - back
    for k in range(int(s["fat_planes"])):
        f = (k + 1) / (s["fat_planes"] + 1)
        wob = 2.0 * np.sin(ln.y / (25.0 + 7 * k) + k)
        mid = back + 10 + f * (span - 10) + wob
        rows = ln.y > a.opisthion[0] + 5
        lo, hi = np.where(rows, mid - 0.45, 1e4), np.where(rows, mid + 0.45, -1e4)
        _blend(canvas, _band(x, lo, hi, pix) * 0.55, con["fat"])
    # prevertebral tissue, airway (pharynx -> trachea), anterior neck
    top = a.clivus_top[0] * 0.5
    rows = ln.y > top
    pv_lo = np.where(rows, ln.xa - ln.pv, 1e4)
    _blend(canvas, _band(x, pv_lo, ln.xa + 2, pix), con["muscle"] * 1.15)
    below = ln.y > ln.y_chin + 4
    ant = np.where(below, ln.xa - ln.pv - ln.aw - s["neck_front"] * 0.8, 1e4)
    _blend(canvas, _band(x, ant, ln.xa - ln.pv - ln.aw, pix), con["gland"] * (1 + 0.08 * tex))
    tongue_rows = (ln.y > ln.y_palate + 3) & (ln.y <= ln.y_chin + 4)
    t_lo = np.where(tongue_rows, ln.front + 15, 1e4)
    _blend(canvas, _band(x, t_lo, ln.xa - ln.pv - ln.aw, pix), con["tongue"] * (1 + 0.05 * tex))
    nasal = ln.y < ln.y_palate - 4
    n_lo = np.where(nasal, ln.front + 10, 1e4)
    nasal_val = con["mucosa"] * np.clip(0.55 + 0.45 * tex, 0.05, 1)
    _blend(canvas, _band(x, n_lo, ln.xa - ln.pv - 2, pix), nasal_val)
    aw_lo = np.where(rows, ln.xa - ln.pv - ln.aw, 1e4)
    _blend(canvas, _band(x, aw_lo, ln.xa - ln.pv, pix), con["air"])
    # hard palate, mandible, hyoid
    yp = ln.y_palate
    xr = float(np.interp(yp, ln.y, ln.xa - ln.pv - ln.aw))
    xl = float(np.interp(yp, ln.y, ln.front)) + 12
    box = (yp - 6, yp + 6, xl - 2, xr + 2)
    paint(canvas, grid, box, lambda yy, xx: sd_capsule(yy, xx, (yp, xl), (yp, xr - 8), 4.0, 2.5), con["cortex"])
    paint(canvas, grid, box, lambda yy, xx: sd_capsule(yy, xx, (yp, xl), (yp, xr - 9), 2.5, 1.0), con["marrow"])
    yc = ln.y_chin - 10
    xm = float(np.interp(yc, ln.y, ln.front)) + 10.0
    box = (yc - 16, yc + 16, xm - 10, xm + 10)
    paint(canvas, grid, box, lambda yy, xx: sd_ellipse(yy - yc, xx - xm, 15.0, 7.5), con["cortex"])
    paint(canvas, grid, box, lambda yy, xx: sd_ellipse(yy - yc, xx - xm, 12.5, 5.0), con["marrow"])
    yh = ln.y_chin + 10
    xh = float(np.interp(yh, ln.y, ln.xa - ln.pv - ln.aw)) - 10
    box = (yh - 5, yh + 5, xh - 8, xh + 8)
    paint(canvas, grid, box, lambda yy, xx: sd_ellipse(yy - yh, xx - xh, 3.5, 6.5), con["cortex"])
    paint(canvas, grid, box, lambda yy, xx: sd_ellipse(yy - yh, xx - xh, 2.0, 4.5), con["marrow"])


def paint_head(canvas: np.ndarray, a: Anatomy, grid: Grid, ln: Lines, con: dict[str, float], tex: np.ndarray) -> None:
    """Occipital bone, posterior fossa, brain, clivus and sphenoid sinus (the brainstem is per slice)."""
    n = int(np.searchsorted(grid.ys, a.opisthion[0] + 30))  # rows below hold no skull
    if n > 0:
        _skull(canvas[:n], a, grid.ys[:n, None], grid.xs[None, :], min(grid.spacing), con, tex[:n])


def _skull(
    canvas: np.ndarray, a: Anatomy, y: np.ndarray, x: np.ndarray, pix: float, con: dict[str, float], tex: np.ndarray
) -> None:
    (cy, cx), bv, ah = a.cranium
    (yb, xb), (yo, xo), (yt, xt) = a.basion, a.opisthion, a.clivus_top
    bone = a.soft["bone"]
    base = np.interp(x, [-1e3, xt - 5, xt, xb, xo, xo + 0.1], [yt - 5, yt - 5, yt, yb, yo + 2, 1e3])
    above = base - y  # > 0 above the skull base
    fm = np.minimum(np.minimum(x - xb, xo - x), y - (yb - 10))  # > 0 in the foramen magnum
    outer = sd_ellipse(y - cy, x - cx, bv + bone, ah + bone)
    inner = sd_ellipse(y - cy, x - cx, bv, ah)
    ring = np.maximum(np.maximum(outer, -above - bone), -fm)
    canvas += alpha_of(ring, pix) * (con["cortex"] - canvas)
    diploe = np.maximum(np.maximum(outer + 1.6, 1.6 - inner), -fm)
    canvas += alpha_of(np.maximum(diploe, 1.6 - above), pix) * (con["marrow"] * 0.7 - canvas)
    cav = np.maximum(inner, -above)
    brain = con["brain"] * (1 + 0.06 * tex)
    folia = (y - yt) * np.sin(0.5) + (x - xt) * np.cos(0.5)
    tent = (y > yt - 5 + (x - xt) * 0.35) & (x > xb)
    cereb = np.where(tent, brain * (1 + 0.07 * np.sin(np.hypot(y - yb, x - xo) * 1.6 + 0.4 * folia + 4.0 * tex)), brain)
    canvas += alpha_of(cav, pix) * (cereb - canvas)


def paint_fossa(canvas: np.ndarray, a: Anatomy, grid: Grid, con: dict[str, float], z: float) -> None:
    """Cisterna magna, clivus and sphenoid sinus, cut at lateral position z (mm from the spine's plane)."""
    if abs(z) > 14.0 * np.sqrt(1 - 0.2**2):
        return
    (yb, xb), (yo, xo), (yt, xt) = a.basion, a.opisthion, a.clivus_top
    s = a.soft
    yc, xc = yo - s["cisterna"] * 0.45 - 1.5, xo - 12
    paint(
        canvas,
        grid,
        (yc - 16, yc + 16, xc - 14, xc + 14),
        lambda yy, xx: sd_ellipse(yy - yc, xx - xc, s["cisterna"] * 0.45, 12.0),
        con["csf"],
    )
    # clivus (cortex + marrow), sphenoid sinus anterior to its upper half
    r = a.clivus_r
    box = (yt - r - 2, yb + 2, min(xt, xb) - r - 2, max(xt, xb) + r + 2)
    d = np.array([yt - yb, xt - xb]) / np.hypot(yt - yb, xt - xb)
    p0 = (yb + d[0] * r, xb + d[1] * r)
    paint(canvas, grid, box, lambda yy, xx: sd_capsule(yy, xx, p0, (yt, xt), r, r + 1.0), con["cortex"])
    paint(canvas, grid, box, lambda yy, xx: sd_capsule(yy, xx, p0, (yt, xt), r - 1.3, r - 0.3), con["marrow"])
    ys, xs = yt + 6, xt - r - 12
    paint(
        canvas,
        grid,
        (ys - 14, ys + 14, xs - 14, xs + 14),
        lambda yy, xx: sd_ellipse(yy - ys, xx - xs, 10.0, 11.0),
        con["air"],
    )


def paint_brainstem(canvas: np.ndarray, a: Anatomy, grid: Grid, ln: Lines, con: dict[str, float], z: float) -> None:
    """CSF behind the clivus and the brainstem (medulla, pons) cut at lateral position z."""
    (yb, _), (yt, _) = a.basion, a.clivus_top
    crop = grid.crop(yt - 8, yb + 12, float(ln.xw.min()) - 2, float(ln.xw.max()) + 45)
    if crop is None:
        return
    r0, r1, c0, c1 = crop
    sub = canvas[r0:r1, c0:c1]
    fields = ("y", "xw", "ap", "cos", "xa", "skin", "front", "pv", "aw", "zoff")
    ln = replace(ln, **{f: getattr(ln, f)[r0:r1] for f in fields})
    _brainstem(sub, a, grid.xs[None, c0:c1], min(grid.spacing), ln, con, z)


def _brainstem(
    canvas: np.ndarray, a: Anatomy, x: np.ndarray, pix: float, ln: Lines, con: dict[str, float], z: float
) -> None:
    s = a.soft
    (yb, _), (yt, _) = a.basion, a.clivus_top
    zc = np.abs(z - ln.zoff)
    c = np.sqrt(np.clip(1 - (zc / 13.0) ** 2, 0, 1))
    cb = np.sqrt(np.clip(1 - (zc / 11.0) ** 2, 0, 1))
    rows = (ln.y > yt - 8) & (ln.y < yb + 12) & (c > 0)
    thick = np.interp(ln.y, [yt - 8, yb - 25, yb - 8, yb + 12], [16, s["pons"], 11, a.cord_ap + 1])
    t0 = ln.xw + s["prepontine"]
    back = t0 + thick * cb
    canvas += _band(x, np.where(rows, ln.xw, 1e4), back + 2.5 * c, pix) * (con["csf"] - canvas)
    rows_b = rows & (cb > 0)
    canvas += _band(x, np.where(rows_b, t0, 1e4), back, pix) * (con["cord"] * 1.05 - canvas)
