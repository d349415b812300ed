"""Rendering of one synthetic sagittal T2 slice, and the MR artefacts laid over it.

Pure numpy. ``render_slice`` paints tissues in the spine frame of ``anatomy`` (u, v, d in mm)
with T2-like relative intensities (CSF = 1); ``Artifacts`` then applies a coil bias field,
motion ghosting along the phase-encoding axis and Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.data.anatomy import Spine, disc_back, disc_depth, lateral_factor, protrusions


@dataclass(frozen=True)
class Contrast:
    """Relative T2 intensities of one study (CSF = 1 before ``gain``)."""

    csf: float
    cord: float
    nucleus: float
    annulus: float
    marrow: float
    cortex: float
    muscle: float
    fat: float
    soft: float
    brain: float
    texture: float  # amplitude of the low-frequency tissue texture
    blur: float  # point spread (pixels, Gaussian sigma)
    gain: float  # scanner scale of the stored values


def sample_contrast(rng: np.random.Generator, hard: bool) -> Contrast:
    """Per-study contrast; ``hard`` compresses it (CSF closer to disc and cord)."""
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    csf = j(0.6, 0.85) if hard else j(0.9, 1.0)
    fat_sat = rng.random() < 0.25
    return Contrast(
        csf=csf,
        cord=j(0.38, 0.5),
        nucleus=j(0.6, 0.8),
        annulus=j(0.15, 0.25),
        marrow=j(0.3, 0.5),
        cortex=j(0.05, 0.12),
        muscle=j(0.16, 0.26),
        fat=j(0.15, 0.3) if fat_sat else j(0.6, 0.85),
        soft=j(0.25, 0.35),
        brain=j(0.42, 0.55),
        texture=j(0.1, 0.25) if hard else j(0.05, 0.15),
        blur=j(0.5, 0.9),
        gain=j(600, 3000),
    )


def random_contrast(rng: np.random.Generator, hard: bool) -> Contrast:
    """Tissue intensities drawn independently of each other (domain randomisation in the
    manner of SynthSeg, Billot et al. 2023): any tissue may be brighter or darker than any
    other. Used for a stress set of ``benchmarks/naming_dev.py``; a level net trained on it
    named our own studies worse (docs/results.md), so training uses ``t2_random_contrast``."""
    t = rng.uniform(0.03, 1.0, 10)
    base = sample_contrast(rng, hard)
    return Contrast(
        csf=float(max(t[0], 0.25)),
        cord=float(t[1]),
        nucleus=float(t[2]),
        annulus=float(t[3]),
        marrow=float(t[4]),
        cortex=float(t[5]),
        muscle=float(t[6]),
        fat=float(t[7]),
        soft=float(t[8]),
        brain=float(t[9]),
        texture=float(rng.uniform(0.05, 0.3)),
        blur=float(rng.uniform(0.4, 1.2)),
        gain=base.gain,
    )


def t2_random_contrast(rng: np.random.Generator, hard: bool) -> Contrast:
    """Random tissue intensities that keep what a T2 image must show for the herniation
    call: bright CSF, a dark annulus and cortex, the cord darker than CSF; marrow, fat,
    muscle, nucleus and the rest anywhere (fat-suppressed or not, other field strengths and
    sequences). ``hard`` compresses CSF towards the cord and disc."""
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    csf = j(0.45, 0.8) if hard else j(0.7, 1.0)
    annulus = j(0.03, 0.3)
    return Contrast(
        csf=csf,
        cord=csf * j(0.3, 0.75),
        nucleus=j(annulus, 1.0),
        annulus=annulus,
        marrow=j(0.08, 0.9),
        cortex=j(0.02, 0.15),
        muscle=j(0.05, 0.5),
        fat=j(0.05, 1.0),
        soft=j(0.08, 0.6),
        brain=j(0.2, 0.8),
        texture=j(0.05, 0.3),
        blur=j(0.4, 1.2),
        gain=j(600, 3000),
    )


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], grid: int) -> np.ndarray:
    """Zero-mean, unit-scale noise varying over about shape/grid pixels: float32 [H, W].

    Bilinear upsampling of a grid x grid Gaussian field, written element-wise (no BLAS threads).
    """
    g = rng.standard_normal((grid, grid)).astype(np.float32)
    i, w = _lerp_index(shape[0], grid)
    rows = g[i] * (1 - w)[:, None] + g[i + 1] * w[:, None]
    i, w = _lerp_index(shape[1], grid)
    return rows[:, i] * (1 - w)[None, :] + rows[:, i + 1] * w[None, :]


def _lerp_index(n: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.linspace(0, g - 1, n, dtype=np.float32)
    i0 = np.minimum(pos.astype(int), g - 2)
    return i0, pos - i0


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)[index]


def render_slice(sp: Spine, c: Contrast, u: np.ndarray, v: np.ndarray, d: float, texture: np.ndarray) -> np.ndarray:
    """Noise-free slice at lateral offset ``d`` (mm): float32 [H, W], CSF about 1.

    ``u``, ``v``: spine-frame coordinates of every pixel (``anatomy.uv_grid``); ``texture``:
    [2, H, W] smooth noise fields shared by the slices of a study.
    """
    img = np.full(u.shape, c.soft, np.float32)
    body_c = (sp.body_top + sp.body_bot) / 2
    depth_u = np.interp(u, body_c, sp.body_depth).astype(np.float32)
    front, canal_a = -depth_u / 2, depth_u / 2 + 0.8
    canal_c = canal_a + sp.canal_ap / 2
    canal_p = canal_a + sp.canal_ap
    skin_a = front - sp.ant_depth - np.clip(-u, 0, None) * 0.8
    skin_p = canal_p + sp.post_depth
    mid = abs(d) < sp.canal_half_width

    # neck: muscles behind the canal, fat under the skin, air outside, airway in front
    img[v > canal_p] = c.muscle
    behind = v - canal_p - 0.04 * u * texture[0]  # fat planes between the nuchal muscles
    img[(v > canal_p + 20) & (np.sin(behind * (2 * np.pi / 11.0) + 0.08 * u) > 0.93)] = c.fat * 0.8
    img[(v > skin_p - 7) | (v < skin_a + 4)] = c.fat
    img[(v > skin_p) | (v < skin_a)] = 0.0
    if abs(d) < 9:
        airway = (v < front - 5) & (v > front - 5 - sp.airway) & (u > 8)
        img[airway] = 0.02
    img *= 1 + c.texture * texture[0]

    # the posterior fossa above the foramen magnum
    head = u < -sp.skull_gap
    skull_base = -sp.skull_gap - 0.025 * np.clip(v - canal_c, 0, None) ** 2  # u of the occipital bone, curving up
    img[(u < skull_base) & (v > front - 5)] = c.brain
    img[(np.abs(u - skull_base) < 3) & (v > canal_p) & (v < canal_p + 45)] = c.cortex

    # vertebral bodies C2..T2 (nearest one per pixel), their rim, the dens on top of C2
    k = np.clip(np.searchsorted((body_c[1:] + body_c[:-1]) / 2, u), 0, 7)
    j = np.clip(np.searchsorted((sp.disc_center[1:] + sp.disc_center[:-1]) / 2, u), 0, 6)
    back_body = _gather(sp.body_depth / 2, k)
    front_body = back_body - _gather(sp.body_depth * lateral_factor(d, sp.body_half_width), k)
    back_disc = _gather(disc_back(sp), j)
    depth_disc = np.maximum(_gather(disc_depth(sp, d), j), 1e-3)
    mid_disc = back_disc - depth_disc / 2
    du_disc = np.abs(u - _gather(sp.disc_center, j))
    shape = np.clip(1 - ((v - mid_disc) / (depth_disc / 2)) ** 2, 0, 1)
    disc_h = _gather(sp.disc_half_height, j) * (1 + sp.concavity * shape)
    du = np.minimum(du_disc - disc_h, u)
    dv = np.minimum(v - front_body, back_body - v)
    r = 1.5
    body = (du > 0) & (dv > 0) & ((du > r) | (dv > r) | ((r - du) ** 2 + (r - dv) ** 2 < r * r))
    rim = body & (np.minimum(du, dv) < 0.9)
    img[body] = c.marrow * (1 + 2 * c.texture * texture[1][body])
    img[rim] = c.cortex
    if abs(d) < 5:
        top = sp.dens_len
        dens = (u < 0) & (u > -top) & (np.abs(v + 1) < sp.dens_half_width - np.clip(-u - top + 4, 0, 4)) & ~head
        img[dens] = c.marrow
        a = sp.c1_anterior_arch
        img[(u > 6 - top - 4 * a) & (u < 6 - top + 4 * a) & (np.abs(v - front + 5) < 3 * a)] = c.marrow * 0.8  # C1
    _craniovertebral(sp, c, img, u, v, canal_p, d)

    # discs: annulus with a bright (or degenerated) nucleus, and their posterior protrusions
    edge = 0.8 * (du_disc / disc_h) ** 2
    disc = (du_disc < disc_h) & (v > back_disc - depth_disc + edge) & (v < back_disc - edge) & (u > 0)
    nucleus = ((du_disc / (0.65 * disc_h)) ** 2 + ((v - mid_disc + 0.05 * depth_disc) / (0.3 * depth_disc)) ** 2) < 1
    nuc_val = c.annulus + (c.nucleus - c.annulus) * _gather(sp.disc_nucleus, j)
    img[disc] = c.annulus
    img[disc & nucleus] = nuc_val[disc & nucleus]

    ext, ext_nuc = _protrusion_map(sp, u, j, du_disc, d)
    prot = (ext > 0) & (v > back_disc - 1.0) & (v < back_disc + ext) & (depth_disc > 0.1)
    img[prot] = (c.annulus + 0.3 * ext_nuc * (c.nucleus - c.annulus))[prot]
    tip = np.where(ext > 0, back_disc + ext, -np.inf)

    # canal: CSF, cord pushed back by whatever protrudes into it, ligaments
    if mid:
        canal_b = canal_a + sp.canal_ap * float(lateral_factor(d, sp.canal_half_width))
        canal = (v > canal_a) & (v < canal_b) & ~head & ~prot
        img[canal] = c.csf
        img[canal & (v < canal_a + 0.6)] = c.cortex  # posterior longitudinal ligament
        half_cord = sp.cord_ap / 2 * float(lateral_factor(d, sp.cord_half_width))
        if half_cord > 0:
            push = np.clip(tip + 0.3 - (canal_c - half_cord), 0, None)
            cord_a = canal_c - half_cord + push
            cord_p = np.minimum(canal_c + half_cord + 0.3 * push, canal_b - 0.3)
            cord = (v > cord_a) & (v < cord_p) & (u > -40) & ~prot
            img[cord] = c.cord
    _osteophytes(sp, c, img, u, v, d)
    _posterior_elements(sp, c, img, u, v, k, canal_p, d)
    return img


def _craniovertebral(
    sp: Spine, c: Contrast, img: np.ndarray, u: np.ndarray, v: np.ndarray, canal_p: np.ndarray, d: float
) -> None:
    """C1's posterior arch behind the canal at the dens and the clivus rising anteriorly from
    above the dens tip, where the spine draws them (in place; a real neck has both)."""
    top = sp.dens_len
    if sp.c1_posterior_arch > 0 and abs(d) < sp.canal_half_width + 4:
        t = sp.c1_posterior_arch
        arch = (np.abs(u - (6 - top)) < t / 2) & (v > canal_p + 0.5) & (v < canal_p + 14)
        img[arch] = c.marrow * 0.85
        img[arch & ((np.abs(u - (6 - top)) > t / 2 - 0.8) | (v > canal_p + 13))] = c.cortex
    if sp.clivus > 0 and abs(d) < 9:
        above = -u - top - 3  # mm above the basion, which sits 3 mm above the dens tip
        axis = -1 - 0.55 * above  # the clivus leans anteriorly as it rises
        clivus = (above > 0) & (above < 30) & (np.abs(v - axis) < sp.clivus / 2)
        img[clivus] = c.marrow * 0.9
        img[clivus & (np.abs(v - axis) > sp.clivus / 2 - 0.9)] = c.cortex


def _osteophytes(sp: Spine, c: Contrast, img: np.ndarray, u: np.ndarray, v: np.ndarray, d: float) -> None:
    """Posterior corner osteophytes (in place): at each disc with a spur, a tapering bony
    capsule from the posterior margin of the body above and of the body below, leaning over
    the disc space into the canal, as long as ``sp.osteophyte`` says at the midline and
    shorter off it. Cortex-dark, like the spurs a degenerated disc grows; the disc's box and
    label are the disc's alone (``disc_boxes``)."""
    if sp.osteophyte is None:
        return
    backs = sp.body_depth / 2
    for j, length in enumerate(sp.osteophyte):
        width = (sp.body_half_width[j] + sp.body_half_width[j + 1]) / 2
        reach = float(length * lateral_factor(d, width))
        if reach < 0.3:
            continue
        for corner, back, sign in ((sp.body_bot[j], backs[j], 1.0), (sp.body_top[j + 1], backs[j + 1], -1.0)):
            # from inside the body's margin to a tip over the disc space, in (u, v) mm
            p0 = np.array([corner - sign * 2.2, back - 0.6])
            p1 = np.array([corner + sign * min(0.8, sp.disc_half_height[j]), back + reach])
            near = (np.abs(u - corner) < 4.0) & (v > back - 2.0) & (v < back + reach + 1.5)
            if not near.any():
                continue
            pu, pv = u[near] - p0[0], v[near] - p0[1]
            seg = p1 - p0
            t = np.clip((pu * seg[0] + pv * seg[1]) / float(seg @ seg), 0.0, 1.0)
            dist = np.hypot(pu - t * seg[0], pv - t * seg[1])
            inside = np.zeros_like(near)
            inside[near] = dist < 1.3 + (0.45 - 1.3) * t
            img[inside] = c.cortex


def _protrusion_map(
    sp: Spine, u: np.ndarray, j: np.ndarray, du_disc: np.ndarray, d: float
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior protrusion (mm) beyond the disc margin at every pixel, and its nucleus share."""
    ext = sp.disc_bulge[j] * np.sqrt(np.clip(1 - (du_disc / (sp.disc_half_height[j] + 1)) ** 2, 0, 1))
    nuc = np.zeros_like(u)
    for h, p in zip(sp.hernias, protrusions(sp, d)[[h.level for h in sp.hernias]]):
        if p <= 0:
            continue
        sel = j == h.level
        dome = np.sqrt(np.clip(1 - ((u[sel] - sp.disc_center[h.level] - h.shift) / h.extent) ** 2, 0, 1))
        ext[sel] = np.maximum(ext[sel], p * dome)
        nuc[sel] = h.nucleus
    return ext.astype(np.float32), nuc


def _posterior_elements(
    sp: Spine, c: Contrast, img: np.ndarray, u: np.ndarray, v: np.ndarray, k: np.ndarray, canal_p: np.ndarray, d: float
) -> None:
    """Laminae and spinous processes near the midline, articular pillars laterally (in place)."""
    top, bot = _gather(sp.body_top, k), _gather(sp.body_bot, k)
    h = bot - top
    behind = v - canal_p
    if abs(d) < sp.canal_half_width + 3:
        length = _gather(sp.spinous_len, k) * (1.0 if abs(d) < 4 else 0.35)
        taper = 1 - np.clip(behind / np.maximum(length, 1), 0, 1) * 0.6
        uc = top + 0.55 * h + behind * 0.25  # spinous processes slope caudally
        bone = (behind > 0.8) & (behind < length) & (np.abs(u - uc) < 0.42 * h * taper) & (u > -2)
        img[bone] = c.marrow * 0.9
        img[bone & ((behind < 1.6) | (np.abs(u - uc) > 0.42 * h * taper - 0.8))] = c.cortex
    if abs(d) > sp.canal_half_width + 1:
        pillar_c = canal_p - sp.canal_ap / 2
        pillar = (np.abs(v - pillar_c) < 7) & (u > top + 1.5) & (u < bot + 1.0) & (u > -2)
        img[pillar] = c.marrow
        img[pillar & ((np.abs(v - pillar_c) > 6.2) | (u > bot + 0.2))] = c.cortex


@dataclass(frozen=True)
class Artifacts:
    """Per-study MR artefacts: bias field [H, W], ghosting and Rician noise (relative to CSF=1)."""

    bias: np.ndarray
    noise: float
    ghost: float  # amplitude of motion ghosting (0 = none)
    ghost_axis: int  # phase-encoding axis of the image (0 rows, 1 columns)
    ghost_period: int

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Biased, ghosted, Rician-noisy copy of a clean slice: float32 [H, W]."""
        out = img * self.bias
        if self.ghost > 0:
            k = np.fft.fft2(out)
            n = out.shape[self.ghost_axis]
            lines = np.arange(n) % self.ghost_period == 0
            phase = np.exp(1j * self.ghost * rng.standard_normal(n) * lines)
            k *= phase[:, None] if self.ghost_axis == 0 else phase[None, :]
            complex_img = np.fft.ifft2(k)
        else:
            complex_img = out.astype(np.complex64)
        re = complex_img.real + rng.normal(0, self.noise, out.shape)
        im = complex_img.imag + rng.normal(0, self.noise, out.shape)
        return np.sqrt(re * re + im * im).astype(np.float32)


def sample_artifacts(rng: np.random.Generator, hard: bool, size: int) -> Artifacts:
    """Bias field from a posterior spine coil, noise and ghosting; stronger when ``hard``."""
    x = np.linspace(-1, 1, size, dtype=np.float32)
    slope = rng.uniform(0.1, 0.5 if hard else 0.3)
    bias = 1 + slope * x[None, :] + (0.25 if hard else 0.12) * smooth_noise(rng, (size, size), 3)
    return Artifacts(
        bias=np.clip(bias, 0.3, None).astype(np.float32),
        noise=rng.uniform(0.04, 0.1) if hard else rng.uniform(0.008, 0.035),
        ghost=(rng.uniform(0.3, 0.9) if hard else rng.uniform(0.1, 0.4)) * (rng.random() < 0.5),
        ghost_axis=int(rng.integers(2)),
        ghost_period=int(rng.integers(2, 6)),
    )


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edge-replicated): float32 [H, W]."""
    r = 2
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    p = np.pad(img, r, mode="edge")
    rows = sum(w[i] * p[:, i : i + img.shape[1]] for i in range(2 * r + 1))
    return sum(w[i] * rows[i : i + img.shape[0], :] for i in range(2 * r + 1)).astype(np.float32)
