"""Geometry of the synthetic cervical spine: sampling, the slice frame and the disc boxes.

Pure numpy, millimetres. The frame follows the spine: ``u`` is the arc length along the
centre line of the vertebral bodies (0 at the top of the C2 body, growing caudally), ``v`` the
signed distance from that line (negative anterior, positive posterior) and ``d`` the lateral
offset of a sagittal slice from the midline. Image columns run anterior -> posterior and rows
head -> feet, as in a DICOM sagittal series with orientation [0, 1, 0, 0, 0, -1].
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

VERTEBRAE = ("C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2")
LEVELS = ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1")  # boxed discs, cranial first
HERNIATION, NORMAL_DISC = 0, 1  # class indices, as detector.types.CLASS_NAMES
LABEL_THRESHOLD_MM = 1.0  # a disc is "herniation" on a slice where it protrudes at least this far
_HERNIA_PRIOR = np.array([0.08, 0.12, 0.17, 0.28, 0.25, 0.10])  # C5-C6 and C6-C7 most often


@dataclass(frozen=True)
class Hernia:
    """A posterior disc herniation: ``size`` mm at its lateral centre, fading over ``half_width``."""

    level: int  # index into LEVELS
    size: float
    center: float  # lateral position (mm, like d)
    half_width: float
    extent: float  # cranio-caudal half extent (mm)
    shift: float  # cranio-caudal migration of its centre (mm, + caudal)
    nucleus: float  # 0..1: how much bright nucleus material it holds

    def protrusion(self, d: float) -> float:
        """Posterior protrusion (mm) seen on the slice at lateral offset ``d``."""
        x = abs(d - self.center) / self.half_width
        return float(self.size * np.sqrt(1.0 - x**4)) if x < 1.0 else 0.0


@dataclass(frozen=True)
class Spine:
    """One patient's cervical spine and its placement in the field of view (all mm)."""

    body_top: np.ndarray  # [8] u of each vertebral body's upper edge (C2..T2)
    body_bot: np.ndarray  # [8]
    body_depth: np.ndarray  # [8] antero-posterior depth at the midline
    body_half_width: np.ndarray  # [8] lateral half width
    disc_center: np.ndarray  # [7] u of the discs C2-C3..T1-T2
    disc_half_height: np.ndarray  # [7]
    disc_nucleus: np.ndarray  # [7] nucleus brightness factor (low = degenerated)
    disc_bulge: np.ndarray  # [7] diffuse posterior bulge (mm), never a herniation
    concavity: float  # endplate concavity (fraction of disc half height)
    canal_ap: float
    canal_half_width: float
    cord_ap: float
    cord_half_width: float
    spinous_len: np.ndarray  # [8]
    ant_depth: float  # vertebral body front -> anterior skin
    post_depth: float  # canal back -> posterior skin
    airway: float  # airway antero-posterior width
    hernias: tuple[Hernia, ...]
    # placement: centre line samples (u -> image mm) and the field of view
    s: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    phi: np.ndarray  # angle of the centre line from the image vertical (+ = heading anterior)
    fov: float
    size: int
    dens_len: float = 16.0  # dens tip above the top of the C2 body
    skull_gap: float = 28.0  # foramen magnum above the top of the C2 body
    dens_half_width: float = 4.5
    c1_anterior_arch: float = 1.0  # size of C1's anterior arch (0 = not drawn)
    c1_posterior_arch: float = 0.0  # thickness (mm) of C1's posterior arch behind the canal (0 = not drawn)
    clivus: float = 0.0  # thickness (mm) of the clivus rising from above the dens tip (0 = not drawn)
    #: [7] length (mm) of the bony spurs at the posterior corners of the bodies around each disc
    #: (a degenerative confounder, never a herniation); None: none drawn
    osteophyte: np.ndarray | None = None

    @property
    def pixel_spacing(self) -> float:
        return self.fov / self.size

    @property
    def herniated_levels(self) -> tuple[str, ...]:
        return tuple(sorted({LEVELS[h.level] for h in self.hernias}, key=LEVELS.index))


def sample_spine(rng: np.random.Generator, hard: bool, size: int) -> Spine:
    """Draw a plausible spine (sizes, lordosis, degeneration, herniations) and place it."""
    scale = rng.uniform(0.85, 1.15)
    heights = np.r_[rng.uniform(14, 17), rng.uniform(11.5, 15, 5), rng.uniform(14, 17), 17.0] * scale
    discs = rng.uniform(4.0, 6.5, 7) * scale
    degenerated = rng.random(7) < (0.45 if hard else 0.3)
    discs[degenerated] *= rng.uniform(0.55, 0.85, degenerated.sum())
    nucleus = np.where(degenerated, rng.uniform(0.25, 0.55, 7), rng.uniform(0.8, 1.05, 7))
    edges = np.cumsum(np.r_[0.0, np.ravel(np.column_stack([heights, np.r_[discs, 0.0]]))])
    body_top, body_bot = edges[0:-1:2], edges[1::2]
    disc_center = (body_bot[:-1] + body_top[1:]) / 2
    depth = np.linspace(15, 18, 8) * scale * rng.uniform(0.92, 1.08, 8)
    bulge_max = 1.0 if hard else 0.6
    bulge = np.where(rng.random(7) < 0.5, rng.uniform(0.0, bulge_max, 7), 0.0)
    hernias = _sample_hernias(rng, hard, discs / 2)
    bulge[[h.level for h in hernias]] = 0.0

    tilt, lordosis = rng.uniform(-0.22, 0.22), rng.uniform(-0.1, 0.5)
    top_margin, bottom_margin = rng.uniform(30, 65), rng.uniform(-7.0, 1.0)
    length = body_bot[6]
    s = np.arange(-120.0, length + 80.0, 0.5)
    phi = tilt + lordosis * np.cos(np.pi * np.clip(s / length, 0, 1))
    cx = np.cumsum(-np.sin(phi)) * 0.5
    cy = np.cumsum(np.cos(phi)) * 0.5
    y_top, y_bot = np.interp([-top_margin, length + bottom_margin], s, cy)
    fov = float(y_bot - y_top)
    x_mid = np.interp(length / 2, s, cx)
    cx, cy = cx - x_mid + fov * rng.uniform(0.38, 0.47), cy - y_top
    return Spine(
        body_top=body_top,
        body_bot=body_bot,
        body_depth=depth,
        body_half_width=depth * rng.uniform(0.62, 0.72),
        disc_center=disc_center,
        disc_half_height=discs / 2,
        disc_nucleus=nucleus,
        disc_bulge=bulge,
        concavity=rng.uniform(0.1, 0.35),
        canal_ap=rng.uniform(12, 16) * scale,
        canal_half_width=rng.uniform(10.5, 13),
        cord_ap=rng.uniform(6.5, 9) * scale,
        cord_half_width=rng.uniform(5.0, 7.0),
        spinous_len=_spinous(rng) * scale,
        ant_depth=rng.uniform(32, 48),
        post_depth=rng.uniform(55, 75),
        airway=rng.uniform(9, 16),
        hernias=hernias,
        s=s,
        cx=cx,
        cy=cy,
        phi=phi,
        fov=fov,
        size=size,
    )


def with_osteophytes(spine: Spine, rng: np.random.Generator, share: float) -> Spine:
    """``spine`` with posterior corner osteophytes (1-3.5 mm) at a random ``share`` of its discs,
    herniated or not: a confounder the call must not take for a herniation. Draws nothing, and
    returns ``spine`` itself, when ``share`` is 0."""
    if share <= 0:
        return spine
    length = np.where(rng.random(7) < share, rng.uniform(1.0, 3.5, 7), 0.0)
    return replace(spine, osteophyte=length)


def _spinous(rng: np.random.Generator) -> np.ndarray:
    base = np.array([30, 22, 22, 24, 27, 34, 36, 36], float)
    return base * rng.uniform(0.8, 1.1, 8)


def _sample_hernias(rng: np.random.Generator, hard: bool, half_heights: np.ndarray) -> tuple[Hernia, ...]:
    count = rng.choice(4, p=[0.2, 0.4, 0.28, 0.12])
    levels = rng.choice(6, size=count, replace=False, p=_HERNIA_PRIOR)
    lo, hi = (1.2, 3.5) if hard else (2.2, 6.0)
    out = []
    for lv in sorted(levels):
        hh = half_heights[lv]
        out.append(
            Hernia(
                level=int(lv),
                size=rng.uniform(lo, hi),
                center=rng.uniform(-6, 6),
                half_width=rng.uniform(3.5, 9.0),
                extent=hh * rng.uniform(0.9, 1.6),
                shift=hh * rng.uniform(-0.6, 0.6),
                nucleus=rng.uniform(0, 1),
            )
        )
    return tuple(out)


def uv_grid(sp: Spine) -> tuple[np.ndarray, np.ndarray]:
    """Spine-frame coordinates (u, v) in mm of every pixel centre: two float32 [H, W] arrays."""
    ps = sp.pixel_spacing
    y = (np.arange(sp.size) + 0.5) * ps
    x = (np.arange(sp.size) + 0.5) * ps
    s0 = np.interp(y, sp.cy, sp.s)
    ph = np.interp(s0, sp.s, sp.phi)[:, None]
    dx = x[None, :] - np.interp(s0, sp.s, sp.cx)[:, None]
    u = s0[:, None] - dx * np.sin(ph)
    for _ in range(2):  # Newton-like refinement onto the curved centre line
        ph = np.interp(u, sp.s, sp.phi)
        dx = x[None, :] - np.interp(u, sp.s, sp.cx)
        dy = y[:, None] - np.interp(u, sp.s, sp.cy)
        u = u - dx * np.sin(ph) + dy * np.cos(ph)
    v = dx * np.cos(ph) + dy * np.sin(ph)
    return u.astype(np.float32), v.astype(np.float32)


def to_pixels(sp: Spine, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map spine-frame points (mm) to (column, row) pixel coordinates (pixel centres at k)."""
    ph = np.interp(u, sp.s, sp.phi)
    x = np.interp(u, sp.s, sp.cx) + v * np.cos(ph)
    y = np.interp(u, sp.s, sp.cy) + v * np.sin(ph)
    return x / sp.pixel_spacing - 0.5, y / sp.pixel_spacing - 0.5


def lateral_factor(d: float, half_width: np.ndarray | float) -> np.ndarray:
    """Fraction of the midline antero-posterior depth an oval structure shows at offset d."""
    return np.sqrt(np.clip(1.0 - (d / np.asarray(half_width)) ** 2, 0.0, 1.0))


def disc_depth(sp: Spine, d: float) -> np.ndarray:
    """[7] antero-posterior depth (mm) of each disc on the slice at offset d.

    Discs and bodies are kidney-shaped in axial section: off the midline their front recedes
    while their back stays on the canal, at v = midline depth / 2.
    """
    depth = (sp.body_depth[:-1] + sp.body_depth[1:]) / 2
    width = (sp.body_half_width[:-1] + sp.body_half_width[1:]) / 2
    return depth * lateral_factor(d, width)


def disc_back(sp: Spine) -> np.ndarray:
    """[7] v (mm) of each disc's posterior margin."""
    return (sp.body_depth[:-1] + sp.body_depth[1:]) / 4


def protrusions(sp: Spine, d: float) -> np.ndarray:
    """[7] herniation protrusion (mm) of each disc on the slice at offset d."""
    out = np.zeros(7)
    for h in sp.hernias:
        out[h.level] = h.protrusion(d)
    return out


def disc_boxes(sp: Spine, d: float, protrusion: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Ground truth on the slice at offset d: boxes [N, 4] (x0, y0, x1, y1 px), labels, levels.

    A disc is boxed where it shows at least 45% of its midline depth; its box covers the disc
    and any posterior protrusion (``protrusion=False``: the annulus and its bulge only, a box
    whose place does not tell the label). It is ``herniation`` where the protrusion reaches
    LABEL_THRESHOLD_MM on this slice, else ``normal_disc``.
    """
    depth, full, back0 = disc_depth(sp, d), disc_depth(sp, 0.0), disc_back(sp)
    prot = protrusions(sp, d)
    by_level = {h.level: h for h in sp.hernias}
    boxes, labels, names = [], [], []
    t = np.linspace(0, 1, 9)
    for j, name in enumerate(LEVELS):
        if depth[j] < 0.45 * full[j]:
            continue
        hh = sp.disc_half_height[j] * (1 + sp.concavity)
        u0, u1 = sp.disc_center[j] - hh, sp.disc_center[j] + hh
        front, back = back0[j] - depth[j], back0[j] + max(prot[j] if protrusion else 0.0, sp.disc_bulge[j])
        if prot[j] > 0 and protrusion:
            h = by_level[j]
            uc = sp.disc_center[j] + h.shift
            u0, u1 = min(u0, uc - h.extent), max(u1, uc + h.extent)
        uu = np.r_[u0 + (u1 - u0) * t, np.full(9, u1), u1 - (u1 - u0) * t, np.full(9, u0)]
        vv = np.r_[np.full(9, front), front + (back - front) * t, np.full(9, back), back - (back - front) * t]
        cols, rows = to_pixels(sp, uu, vv)
        box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        box = np.clip(box, 0, sp.size)
        if (box[2] - box[0]) < 2 or (box[3] - box[1]) < 2:
            continue
        boxes.append(box)
        labels.append(HERNIATION if prot[j] >= LABEL_THRESHOLD_MM else NORMAL_DISC)
        names.append(name)
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), names)
