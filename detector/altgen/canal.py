"""The spinal canal cut at one lateral position: epidural fat, thecal sac, cord, ligaments, vertebral arteries."""

from __future__ import annotations

import numpy as np

from .anatomy import Anatomy
from .grid import Grid, alpha_of
from .soft import Lines

Voids = tuple[tuple[float, float, float], ...]  # (y mm, half-length mm, strength) of CSF flow voids


def zoff_at(ln: Lines, y: float) -> float:
    return float(np.interp(y, ln.y, ln.zoff))


def canal_bounds(a: Anatomy, ln: Lines, z: float) -> dict[str, np.ndarray]:
    """Per-row x (mm) of the canal, thecal sac and cord (before any herniation) at lateral position z;
    NaN where the slice misses the structure."""
    zr = z - ln.zoff
    inv = 1.0 / np.maximum(ln.cos, 0.5)
    lo, hi = ln.xw, ln.xw + ln.ap
    s0, s1 = lo + a.soft["epid_v"] * inv, hi - a.soft["epid_d"] * inv
    c_sac = np.sqrt(np.clip(1 - (zr / a.sac_hw) ** 2, 0, 1))
    c_cord = np.sqrt(np.clip(1 - (zr / a.cord_hw) ** 2, 0, 1))
    m, half = (s0 + s1) / 2, (s1 - s0) / 2 * c_sac
    cm, ch = m - 0.4 * inv, a.cord_ap / 2 * inv * c_cord
    miss_sac, miss_cord = np.where(c_sac > 0, 0.0, np.nan), np.where(c_cord > 0, 0.0, np.nan)
    return {
        "lo": lo,
        "hi": hi,
        "sac_lo": m - half + miss_sac,
        "sac_hi": m + half + miss_sac,
        "cord_lo": cm - ch + miss_cord,
        "cord_hi": cm + ch + miss_cord,
    }


def paint_canal(
    canvas: np.ndarray, a: Anatomy, grid: Grid, ln: Lines, con: dict[str, float], z: float, voids: Voids
) -> None:
    """Epidural fat, thecal sac (CSF, flow voids), cord indented by herniations, PLL and flavum."""
    c0 = max(0, int((float((ln.xw - 0.3 * (ln.xw - ln.xa)).min()) - 6 - grid.origin[1]) / grid.spacing[1]))
    c1 = min(grid.cols, int((float((ln.xw + ln.ap).max()) + 3 - grid.origin[1]) / grid.spacing[1]) + 1)
    if c1 <= c0:
        return
    x = grid.xs[None, c0:c1]
    canvas = canvas[:, c0:c1]  # a view: painting it paints the slice
    pix = min(grid.spacing)
    zr = z - ln.zoff
    rows = ln.y > a.basion[0] - 4
    c_can = np.sqrt(np.clip(1 - (zr / a.canal_hw) ** 2, 0, 1))
    cb = canal_bounds(a, ln, z)
    lo, hi = cb["lo"], cb["hi"]
    has_sac, has_cord = ~np.isnan(cb["sac_lo"]), ~np.isnan(cb["cord_lo"])

    def band(l0: np.ndarray, h0: np.ndarray, keep: np.ndarray) -> np.ndarray:
        d = np.maximum(l0[:, None] - x, x - h0[:, None])
        return np.where(keep[:, None], alpha_of(d, pix), 0.0)

    canvas += band(lo, hi, rows & (c_can > 0)) * (con["fat"] - canvas)
    m, half = (cb["sac_lo"] + cb["sac_hi"]) / 2, (cb["sac_hi"] - cb["sac_lo"]) / 2
    csf = np.full(ln.y.shape, con["csf"])
    for yv, length, strength in voids:
        csf = csf * (1 - strength * np.exp(-(((ln.y - yv) / length) ** 2)))
    sac = band(np.nan_to_num(m - half, nan=1e4), np.nan_to_num(m + half, nan=-1e4), rows & has_sac)
    dorsal = np.clip((x - np.nan_to_num(m)[:, None]) / (np.nan_to_num(half)[:, None] + 1e-3), 0, 1)
    canvas += sac * (con["csf"] + (csf[:, None] - con["csf"]) * dorsal - canvas)
    front, back = np.nan_to_num(cb["cord_lo"], nan=1e4), np.nan_to_num(cb["cord_hi"], nan=-1e4)
    for disc in a.discs:
        q = disc.quad(1.0)
        yd = float(q[[1, 2], 0].mean())
        pe = disc.prot_at(z - zoff_at(ln, yd))
        if pe <= 0:
            continue
        tip = np.interp(yd, ln.y, ln.xw) + (pe + 0.4) / np.cos(disc.upper.theta)
        sigma = max(disc.hern_len, 3.5)
        push = (tip - front) * np.exp(-(((ln.y - yd - disc.migration) / sigma) ** 2))
        front = np.maximum(front, front + np.where(push > 0.05, push, 0))
    front = np.minimum(front, back - 1.2)
    canvas += band(front, back, rows & has_cord) * (con["cord"] - canvas)
    canvas += band(lo - 0.3, lo + 0.7, rows & (c_can > 0)) * (con["ligament"] - canvas)
    canvas += band(hi - 2.2, hi, rows & (c_can > 0)) * (con["ligament"] - canvas)
    # vertebral arteries (flow voids) in the transverse foramina, C6 to C1, on parasagittal slices
    c_va = np.sqrt(np.clip(1 - ((np.abs(zr) - a.canal_hw - 2.5) / 2.5) ** 2, 0, 1))
    va_rows = (ln.y > a.c1_ant[0][0]) & (ln.y < a.bodies[4].centre[0] - a.bodies[4].height / 2) & (c_va > 0)
    va = ln.xw - 0.3 * (ln.xw - ln.xa)
    canvas += band(va - 2.2 * c_va, va + 2.2 * c_va, va_rows) * (0.05 - canvas)
