"""Synthetic sagittal T2 cervical spine MR: whole studies and a slice dataset for training.

Each study is one patient: vertebral bodies C2-T1 on a lordotic curve, discs (some degenerated,
some bulging), CSF, cord, posterior elements and neck tissue, posterior disc herniations of
varied size that show only on the slices they reach, a coil bias field, motion ghosting and
Rician noise, at a varied matrix size and contrast. Every disc C2-C3..C7-T1 is boxed on every
slice where it is visible: class 0 ``herniation`` where it protrudes >= 1 mm on that slice,
else class 1 ``normal_disc`` (``detector.types.CLASS_NAMES`` order).

``hard=True`` draws subtle herniations (1.2-3.5 mm), bulging and degenerated discs, strong noise,
ghosting, bias and compressed contrast: a good detector does not reach AP50 0.99 there.
Everything is deterministic given the ``numpy.random.Generator`` (or the seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from detector.data.anatomy import LEVELS, Spine, disc_boxes, sample_spine, uv_grid
from detector.data.render import (
    Contrast,
    blur,
    random_contrast,
    render_slice,
    sample_artifacts,
    sample_contrast,
    smooth_noise,
)

SIZES = (224, 256, 288, 320, 384)  # matrix sizes drawn when ``size`` is None
__all__ = ["LEVELS", "SIZES", "SyntheticStudy", "SyntheticSliceDataset", "make_study"]


@dataclass(frozen=True)
class SyntheticStudy:
    """One sagittal series with its ground truth (slice k: ``boxes[k]``, ``labels[k]``, ...)."""

    volume: np.ndarray  # float32 [S, H, W], raw scanner-like intensities (>= 0)
    boxes: list[np.ndarray]  # per slice float32 [N, 4] x0, y0, x1, y1 in pixels
    labels: list[np.ndarray]  # per slice int64 [N]: 0 herniation, 1 normal_disc
    levels: list[list[str]]  # per slice, the level name of each box ("C2-C3" ...)
    pixel_spacing: float  # mm, square pixels
    slice_thickness: float  # mm
    spacing_between_slices: float  # mm, centre to centre
    slice_offsets: np.ndarray  # float32 [S] lateral position of each slice (mm, + = patient left)
    herniated_levels: tuple[str, ...]  # levels holding a herniation (seen on >= 1 slice)
    level_protrusion: tuple[float, ...] = ()  # per LEVELS, the largest protrusion (mm) of its herniation

    def level_under(self, k: int, box: Sequence[float], min_iou: float = 0.3) -> str | None:
        """The level of the true disc under ``box`` on slice k, or on the nearest slice (up to
        two away) that boxes one: a key slice may be too lateral for the phantom to box it."""
        from detector.levels import level_under

        return level_under([list(zip(lv, bx)) for lv, bx in zip(self.levels, self.boxes)], k, box, min_iou)


def make_study(
    rng: np.random.Generator,
    hard: bool = False,
    n_slices: int = 15,
    size: int | None = None,
    adjust: Callable[[Spine, np.random.Generator], Spine] | None = None,
    contrast_of: Callable[[np.random.Generator, bool], Contrast] = sample_contrast,
) -> SyntheticStudy:
    """Draw one synthetic study of ``n_slices`` sagittal slices of ``size`` x ``size`` pixels
    (``adjust``, ``contrast_of``: as in ``study_renderer``)."""
    size = int(size or rng.choice(SIZES))
    spine, render = study_renderer(rng, hard, size, adjust, contrast_of)
    thickness = float(rng.uniform(2.5, 3.5))
    step = thickness + float(rng.uniform(0.0, 0.5))
    offsets = (np.arange(n_slices) - (n_slices - 1) / 2) * step + rng.uniform(-2.0, 2.0)
    vol, boxes, labels, levels = [], [], [], []
    for d in offsets:
        vol.append(render(float(d)))
        b, lab, lev = disc_boxes(spine, float(d))
        boxes.append(b)
        labels.append(lab)
        levels.append(lev)
    seen = {lv for lab, lev in zip(labels, levels) for c, lv in zip(lab, lev) if c == 0}
    return SyntheticStudy(
        volume=np.stack(vol),
        boxes=boxes,
        labels=labels,
        levels=levels,
        pixel_spacing=spine.pixel_spacing,
        slice_thickness=thickness,
        spacing_between_slices=step,
        slice_offsets=offsets.astype(np.float32),
        herniated_levels=tuple(lv for lv in LEVELS if lv in seen),
        level_protrusion=tuple(
            max((h.size for h in spine.hernias if h.level == j), default=0.0) for j in range(len(LEVELS))
        ),
    )


def study_renderer(
    rng: np.random.Generator,
    hard: bool,
    size: int,
    adjust: Callable[[Spine, np.random.Generator], Spine] | None = None,
    contrast_of: Callable[[np.random.Generator, bool], Contrast] = sample_contrast,
):
    """Sample one patient and scanner; return (spine, render(d) -> float32 [H, W]).

    ``adjust`` may change the sampled spine before anything is rendered (the second stage's
    sampler widens the field of view and the range of protrusions with it); ``contrast_of``
    draws the tissue intensities (the second stage's training also uses ``t2_random_contrast``).
    """
    spine: Spine = sample_spine(rng, hard, size)
    if adjust is not None:
        spine = adjust(spine, rng)
    contrast = contrast_of(rng, hard)
    artifacts = sample_artifacts(rng, hard, size)
    grid = max(4, size // 24)
    texture = np.stack([smooth_noise(rng, (size, size), grid), smooth_noise(rng, (size, size), grid * 2)])
    texture *= 0.5
    u, v = uv_grid(spine)
    sigma = contrast.blur * (size / 256)

    def render(d: float) -> np.ndarray:
        clean = blur(render_slice(spine, contrast, u, v, d, texture), sigma)
        return artifacts.apply(clean, rng) * np.float32(contrast.gain)

    return spine, render


class SyntheticSliceDataset:
    """``n`` independent synthetic slices; item = (image float32 [H, W], {boxes, labels}).

    A map-style dataset (``__len__`` + ``__getitem__``): torch's DataLoader, ConcatDataset and
    Subset take it as is, and importing it does not import torch.

    Item ``i`` is a function of (``seed``, ``i``) only, so workers and epochs agree. Each item
    draws a fresh patient and a slice position (mostly where the discs show, a few lateral
    slices without any disc, and extra weight on slices through a herniation).

    ``varied``: the share of items drawn with ``adjust`` (another neck geometry) and
    ``contrast_of`` (other tissue intensities), e.g. the second stage's ``widen`` and
    ``t2_random_contrast``; with ``varied=0`` the items are those of earlier releases.
    ``random_look``: the share of the other items whose tissues are drawn by ``random_contrast``
    (any tissue as bright as any other), their geometry the generator's own; with 0 the items
    are unchanged.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        hard: bool = False,
        size: int | None = None,
        varied: float = 0.0,
        adjust: Callable[[Spine, np.random.Generator], Spine] | None = None,
        contrast_of: Callable[[np.random.Generator, bool], Contrast] = sample_contrast,
        random_look: float = 0.0,
    ) -> None:
        self.n, self.seed, self.hard, self.size = n, seed, hard, size
        self.varied, self.adjust, self.contrast_of = varied, adjust, contrast_of
        self.random_look = random_look

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        size = int(self.size or rng.choice(SIZES))
        if self.varied and rng.random() < self.varied:
            spine, render = study_renderer(rng, self.hard, size, self.adjust, self.contrast_of)
        elif self.random_look and rng.random() < self.random_look:
            spine, render = study_renderer(rng, self.hard, size, contrast_of=random_contrast)
        else:
            spine, render = study_renderer(rng, self.hard, size)
        if spine.hernias and rng.random() < 0.5:
            h = spine.hernias[rng.integers(len(spine.hernias))]
            d = h.center + rng.uniform(-1, 1) * h.half_width * 0.8
        else:
            d = rng.uniform(-1, 1) * 14.0
        boxes, labels, _ = disc_boxes(spine, d)
        return render(d), {"boxes": boxes, "labels": labels}
