"""Training crops for the second stage, drawn fresh from our own synthetic generator.

One draw is one synthetic patient (``detector.data``), three neighbouring sagittal slices
around a lateral position, and from them:

* a herniation crop for every disc boxed on the middle slice, anchored on a jittered box (the
  detector's boxes are not exact), labelled with the protrusion (mm) on that slice;
* a level crop for every disc C2-C3 .. T1-T2 in view, and a few "not a disc" crops (vertebral
  bodies, the dens, random places), labelled with ``LEVEL_CLASSES``.

The sampler widens what the generator draws: a field of view up to ~1.7x larger (smaller
spines in the image, more skull and thorax), protrusions from 0.3 mm up with the borderline
around the label threshold oversampled, and bulges up to 1.3 mm that stay "normal". Half
the patients are drawn with random tissue intensities that keep what the call needs (bright
CSF, a dark annulus and cortex: ``t2_random_contrast``, domain randomisation). Only
``detector.data`` is used here: the held-out generator never feeds training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from detector.data.anatomy import LEVELS, Spine, disc_boxes, protrusions, to_pixels, with_osteophytes
from detector.data.render import random_contrast, sample_contrast, t2_random_contrast
from detector.data.synthetic import SIZES, study_renderer
from detector.discs.crop_batch import CropBatch, jitter_box, shift_anchor
from detector.discs.crops import CropRequest, CropSpec, anchor_of_box, random_level_request, take_crops
from detector.levels import box_iou
from detector.naming import NOT_DISC

LABEL_THRESHOLD_MM = 1.5
#: The share of training patients drawn with random intensities that keep a T2 image's
#: bright CSF and dark annulus (``t2_random_contrast``).
T2_RANDOM_CONTRAST = 0.5
#: A detector for one slice: image [H, W] -> boxes (x0, y0, x1, y1) it found.
Detect = Callable[[np.ndarray], list[tuple[float, float, float, float]]]


@dataclass(frozen=True)
class Variety:
    """What the training sampler varies beyond ``widen`` and the random T2 looks (all off in
    the shipped recipe): ``random_look``, the share of patients with every tissue's intensity
    at random (``random_contrast``, taken from the generator's own look's share),
    ``craniovertebral_bones`` (``with_craniovertebral_bones``), ``warp_mm``, ``other_generator``
    ``anchor_shift_mm``, ``annulus_anchor`` and ``osteophytes``."""

    random_look: float = 0.0
    craniovertebral_bones: bool = False
    warp_mm: float = 0.0  # level crops: a smooth elastic warp, this sd (mm) per cosine mode
    other_generator: float = 0.0  # share of patients from ``detector.altgen`` (its own look and anatomy)
    #: herniation crops on true boxes: the anchor moved up to this far (mm) along the rows and half
    #: that along the columns, as a detector on another scanner misplaces its boxes
    anchor_shift_mm: float = 0.0
    #: herniation crops anchored on the annulus (the disc's box without its protrusion), and none
    #: on the detector's boxes: the crop's place then cannot tell the label (``annulus_anchor``)
    annulus_anchor: bool = False
    #: share of our generator's discs with posterior corner osteophytes (``with_osteophytes``)
    osteophytes: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.random_look <= 1.0 - T2_RANDOM_CONTRAST:
            raise ValueError(f"random_look: expected 0..{1 - T2_RANDOM_CONTRAST}, got {self.random_look}")
        if not 0.0 <= self.other_generator <= 1.0:
            raise ValueError(f"other_generator: expected 0..1, got {self.other_generator}")
        if not 0.0 <= self.osteophytes <= 1.0:
            raise ValueError(f"osteophytes: expected 0..1, got {self.osteophytes}")
        if not 0.0 <= self.anchor_shift_mm <= 8.0:
            raise ValueError(f"anchor_shift_mm: expected 0..8, got {self.anchor_shift_mm}")


def widen(spine: Spine, rng: np.random.Generator) -> Spine:
    """A larger field of view around the same anatomy, and a wider range of protrusions."""
    extra = spine.fov * rng.uniform(0.0, 0.7) if rng.random() < 0.7 else 0.0
    top = extra * rng.uniform(0.45, 0.85)
    bottom = min(extra - top, 22.0)
    extra = top + bottom
    hernias = tuple(replace(h, size=_protrusion(rng)) for h in spine.hernias)
    bulge = np.where(rng.random(7) < 0.5, rng.uniform(0.0, 1.3, 7), 0.0)
    bulge[[h.level for h in hernias]] = 0.0
    cx, cy = spine.cx + extra * rng.uniform(0.3, 0.7), spine.cy + top
    if rng.random() < 0.35:  # straighter or kyphotic necks
        cx, cy = _bend(spine, cx, cy, float(rng.uniform(-0.6, 0.0)))
    if rng.random() < 0.3:  # the top of C2 close under the image's upper edge (skull base cut off)
        cy = cy - (float(np.interp(0.0, spine.s, cy)) - float(rng.uniform(8.0, 30.0)))
    wide = replace(spine, fov=spine.fov + extra, cy=cy, cx=cx, hernias=hernias, disc_bulge=bulge)
    return _vary_craniovertebral(wide, rng) if rng.random() < 0.75 else wide


def _vary_craniovertebral(spine: Spine, rng: np.random.Generator) -> Spine:
    """Other proportions at the anchor: a C2 body up to 8 mm taller (everything below moves
    down), a dens of 10-22 mm and the foramen magnum 5-20 mm above its tip. Another anatomy
    model (or a real neck) draws C2 differently; the level net must not learn one drawing."""
    grow = float(rng.uniform(-1.0, 8.0))
    top, bot = spine.body_top.copy(), spine.body_bot + grow
    top[1:] += grow
    dens = float(rng.uniform(10.0, 22.0))
    return replace(
        spine,
        body_top=top,
        body_bot=bot,
        disc_center=spine.disc_center + grow,
        dens_len=dens,
        skull_gap=dens + float(rng.uniform(5.0, 20.0)),
    )


def with_craniovertebral_bones(spine: Spine, rng: np.random.Generator) -> Spine:
    """``widen``, then C1's posterior arch and the clivus (each present in most necks, of
    random size), C1's anterior arch of another size and a dens of another width: the bones
    around the anchor that our generator leaves out or draws one way, drawn many ways."""
    wide = widen(spine, rng)
    return replace(
        wide,
        dens_half_width=float(rng.uniform(3.5, 6.0)),
        c1_anterior_arch=float(rng.uniform(0.6, 1.5)),
        c1_posterior_arch=float(rng.uniform(4.0, 9.0)) if rng.random() < 0.7 else 0.0,
        clivus=float(rng.uniform(6.0, 12.0)) if rng.random() < 0.7 else 0.0,
    )


def _bend(spine: Spine, cx: np.ndarray, cy: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The centre line with ``delta`` radians less lordosis, pinned at the middle of the neck."""
    length = spine.body_bot[6]
    phi = spine.phi + delta * np.cos(np.pi * np.clip(spine.s / length, 0, 1))
    bx, by = np.cumsum(-np.sin(phi)) * 0.5, np.cumsum(np.cos(phi)) * 0.5
    k = int(np.argmin(np.abs(spine.s - length / 2)))
    return bx - bx[k] + cx[k], by - by[k] + cy[k]


def _calibration_spine(spine: Spine, rng: np.random.Generator) -> Spine:
    wide = widen(spine, rng)
    sizes = [float(rng.uniform(0.3, 1.2) if rng.random() < 0.25 else rng.uniform(1.5, 6.5)) for _ in wide.hernias]
    return replace(wide, hernias=tuple(replace(h, size=size) for h, size in zip(wide.hernias, sizes)))


def _protrusion(rng: np.random.Generator) -> float:
    """Herniation sizes: half of them near the 1.5 mm label threshold."""
    return float(rng.uniform(0.3, 2.8) if rng.random() < 0.5 else rng.uniform(2.8, 6.5))


def draw(
    rng: np.random.Generator,
    herniation_spec: CropSpec,
    level_spec: CropSpec,
    augment: bool = True,
    detect: Detect | None = None,
    variety: Variety = Variety(),
) -> CropBatch:
    """The crops of one synthetic patient (see the module docstring). With ``detect`` (a
    detector's boxes for one slice), half the patients' herniation crops sit on its boxes
    instead of jittered true ones, labelled by the true disc they overlap. A share
    ``variety.other_generator`` of patients comes from the other training generator
    (``detector.discs.other_generator``)."""
    if variety.other_generator > 0 and rng.random() < variety.other_generator:
        from detector.discs.other_generator import draw_other  # altgen: imported when drawn from

        return draw_other(
            rng, herniation_spec, level_spec, augment, variety.warp_mm, variety.anchor_shift_mm, variety.annulus_anchor
        )
    hard = bool(rng.random() < 0.5)
    size = int(rng.choice(SIZES))
    look = rng.random() if augment else 1.0
    contrast_of = (
        t2_random_contrast
        if look < T2_RANDOM_CONTRAST
        else random_contrast
        if look < T2_RANDOM_CONTRAST + variety.random_look
        else sample_contrast
    )
    geometry = with_craniovertebral_bones if variety.craniovertebral_bones else widen

    def adjust(spine: Spine, rng: np.random.Generator) -> Spine:
        return with_osteophytes(geometry(spine, rng), rng, variety.osteophytes)

    spine, render = study_renderer(rng, hard, size, adjust=adjust, contrast_of=contrast_of)
    if spine.hernias and rng.random() < 0.6:
        h = spine.hernias[rng.integers(len(spine.hernias))]
        d = h.center + rng.uniform(-1, 1) * h.half_width
    else:
        d = float(rng.uniform(-1, 1) * 13.0)
    step = float(rng.uniform(2.5, 4.5))
    volume = torch.from_numpy(np.stack([render(d + k * step) for k in (-1, 0, 1)]))
    spacing = (spine.pixel_spacing, spine.pixel_spacing)
    jitter = (
        (lambda: (float(rng.uniform(-0.2, 0.2)), float(rng.uniform(0.93, 1.07)))) if augment else (lambda: (0.0, 1.0))
    )

    boxes, _, names = disc_boxes(spine, d)
    anchors = annulus_boxes(spine, d, boxes, names) if variety.annulus_anchor else boxes
    prot = protrusions(spine, d)
    h_req: list[CropRequest] = []
    h_mm: list[float] = []
    for box, name in zip(anchors, names):
        row, col = anchor_of_box(jitter_box(rng, box, spine.pixel_spacing) if augment else box)
        if augment and variety.anchor_shift_mm > 0:
            row, col = shift_anchor(rng, (row, col), variety.anchor_shift_mm, spacing)
        angle, zoom = jitter()
        h_req.append(CropRequest(1, row, col, angle, 1 + (zoom - 1) * 0.5))
        h_mm.append(float(prot[LEVELS.index(name)]))
    if detect is not None and augment and not variety.annulus_anchor and rng.random() < 0.5:
        h_req, h_mm = [], []
        for box, mm in _detected(detect(volume[1].numpy()), boxes, names, prot):
            row, col = anchor_of_box(box)
            angle, zoom = jitter()
            h_req.append(CropRequest(1, row, col, angle, 1.0))
            h_mm.append(mm)
    if augment:  # what a detector also boxes: a disc on a slice too lateral for it, or not a disc
        for point in _stray_points(spine, d, names, rng):
            angle, zoom = jitter()
            h_req.append(CropRequest(1, point[0], point[1], angle, 1.0))
            h_mm.append(point[2])

    l_req: list[CropRequest] = []
    l_cls: list[int] = []
    for level_point, cls in _level_points(spine, d, boxes, names, rng):
        l_req.append(
            random_level_request(rng, level_point, variety.warp_mm) if augment else CropRequest(1, *level_point)
        )
        l_cls.append(cls)
    return CropBatch(
        herniation=take_crops(volume, spacing, herniation_spec, h_req),
        protrusion_mm=torch.tensor(h_mm, dtype=torch.float32),
        level=take_crops(volume, spacing, level_spec, l_req),
        level_class=torch.tensor(l_cls, dtype=torch.int64),
    )


def annulus_boxes(spine: Spine, d: float, boxes: np.ndarray, names: list[str]) -> np.ndarray:
    """The discs ``names`` (boxed as ``boxes`` by ``disc_boxes``) boxed without their protrusion.

    A herniation extends its disc's box backwards by the protrusion, so a crop centred on that
    box sits further back on a herniated disc: the net would learn the crop's place, which a
    detector trained elsewhere does not reproduce, instead of the canal."""
    bare, _, bare_names = disc_boxes(spine, d, protrusion=False)
    by_name = dict(zip(bare_names, bare))
    return np.stack([by_name.get(n, b) for b, n in zip(boxes, names)]) if len(boxes) else boxes


def _detected(
    found: list[tuple[float, float, float, float]], boxes: np.ndarray, names: list[str], prot: np.ndarray
) -> list[tuple[tuple[float, float, float, float], float]]:
    """A detector's boxes with the protrusion of the true disc each overlaps (IoU >= 0.3), or
    0 mm for a box on no disc (IoU < 0.1 with all); ambiguous boxes are left out."""
    out = []
    for box in found:
        ious = [box_iou(box, b) for b in boxes]
        best = int(np.argmax(ious)) if ious else -1
        if best >= 0 and ious[best] >= 0.3:
            out.append((box, float(prot[LEVELS.index(names[best])])))
        elif not ious or ious[best] < 0.1:
            out.append((box, 0.0))
    return out


def _stray_points(
    spine: Spine, d: float, names: list[str], rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """(row, col, protrusion mm) of herniation-crop anchors a detector might produce besides
    the boxed discs: a disc's midline box on this (too lateral) slice, and places along the
    spine that are not a disc (vertebral bodies, the dens, the posterior elements)."""
    mid_boxes, _, mid_names = disc_boxes(spine, 0.0)
    prot = protrusions(spine, d)
    out = []
    for box, name in zip(mid_boxes, mid_names):
        if name not in names and rng.random() < 0.5:
            row, col = anchor_of_box(jitter_box(rng, box, spine.pixel_spacing))
            out.append((row, col, float(prot[LEVELS.index(name)])))
    body_c = (spine.body_top + spine.body_bot) / 2
    for _ in range(2):
        u = float(rng.uniform(-20.0, body_c[-2]))
        v = float(rng.uniform(-4.0, 30.0))
        cols, rows = to_pixels(spine, np.array([u]), np.array([v]))
        if 0 <= rows[0] < spine.size and 0 <= cols[0] < spine.size and min(abs(u - spine.disc_center)) > 4.0:
            out.append((float(rows[0]), float(cols[0]), 0.0))
    return out


def _level_points(
    spine: Spine, d: float, boxes: np.ndarray, names: list[str], rng: np.random.Generator
) -> list[tuple[tuple[float, float], int]]:
    """(row, col) points with their LEVEL_CLASSES index: boxed discs, T1-T2, non-discs."""
    ps = spine.pixel_spacing
    out = []
    for box, name in zip(boxes, names):
        row, col = anchor_of_box(box)
        out.append(((row + rng.normal(0, 1.5 / ps), col + rng.normal(0, 1.5 / ps)), LEVELS.index(name)))
    # v = 0 is a disc's midline, halfway between its front and ``disc_back``
    points_uv = [(spine.disc_center[6], 0.0, 6)]  # T1-T2, often at the edge
    body_c = (spine.body_top + spine.body_bot) / 2
    for k in rng.choice(len(body_c), size=2, replace=False):
        points_uv.append((body_c[k], rng.uniform(-4, 4), NOT_DISC))
    points_uv.append((rng.uniform(-spine.dens_len + 2, -2), rng.uniform(-3, 2), NOT_DISC))  # dens / C1-C2
    step = spine.disc_center[1] - spine.disc_center[0]  # where a chain extended above C2-C3 looks
    points_uv.append((spine.disc_center[0] - step * rng.uniform(0.8, 1.3), 0.0, NOT_DISC))
    for u, v, cls in points_uv:
        cols, rows = to_pixels(spine, np.array([u]), np.array([v]))
        if 0 <= rows[0] < spine.size and 0 <= cols[0] < spine.size:
            out.append(((float(rows[0]), float(cols[0])), cls))
    if rng.random() < 0.5:  # anywhere: neck, skull, background
        out.append(((rng.uniform(0, spine.size), rng.uniform(0, spine.size)), NOT_DISC))
    return out


def draw_many(
    seed: int | tuple[int, ...],
    n: int,
    herniation_spec: CropSpec,
    level_spec: CropSpec,
    augment: bool = True,
    detect: Detect | None = None,
    variety: Variety = Variety(),
) -> CropBatch:
    """``n`` patients' crops; patient i is a function of (seed, i) (and ``detect``) only."""
    seeds = (seed,) if isinstance(seed, int) else tuple(seed)
    return CropBatch.cat(
        [
            draw(np.random.default_rng([*seeds, i]), herniation_spec, level_spec, augment, detect, variety)
            for i in range(n)
        ]
    )


def calibration_studies(n: int, seed: int, n_slices: int = 15):
    """``n`` labelled synthetic studies from our own generator (half hard), for calibration:
    yields (volume [S, H, W], pixel spacing (row, col) mm, {level: herniated}); a level is
    herniated when its herniation protrudes at least ``LABEL_THRESHOLD_MM``. Geometry as in
    training (``widen``); protrusions either clearly below the threshold (0.3-1.2 mm, a quarter)
    or at or above it (1.5-6.5 mm): a truth within a pixel of the threshold is no truth."""
    from detector.data.synthetic import make_study

    for i in range(n):
        rng = np.random.default_rng([seed, i])
        study = make_study(rng, hard=bool(i % 2), n_slices=n_slices, adjust=_calibration_spine)
        truth = {lv: p >= LABEL_THRESHOLD_MM for lv, p in zip(LEVELS, study.level_protrusion)}
        yield study.volume, (study.pixel_spacing, study.pixel_spacing), truth
