"""Public constants and result types of the alternative generator."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEVELS = ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1", "T1-T2")
BODIES = ("C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2")
#: Every body the anatomy model builds (T3, T4 are drawn to fill the bottom, never labelled).
ALL_BODIES = (*BODIES, "T3", "T4")
#: Every disc the anatomy model builds, cranial first (T2-T3, T3-T4 unlabelled).
ALL_DISCS = tuple(f"{a}-{b}" for a, b in zip(ALL_BODIES[:-1], ALL_BODIES[1:]))
HERNIATION_MM = 1.5
#: Labelled discs show on slices within about this distance of the spine's midline (mm).
DISCS_SHOW_MM = 10.0
#: Study seeds below this are for training draws; ``development_seed`` gives seeds above it.
TRAINING_SEEDS = 2**31

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Disc:
    """Ground truth of one labelled disc; ``protrusion_by_slice`` is the displacement (mm) drawn on each
    slice of ``boxes`` (beyond the same line, on that slice's centre plane), never above ``protrusion_mm``."""

    level: str
    herniated: bool
    protrusion_mm: float
    kind: str
    boxes: dict[int, Box]
    centres: dict[int, tuple[float, float]]
    protrusion_by_slice: dict[int, float] = field(default_factory=dict)
    confounders: tuple[str, ...] = ()  # "osteophyte", "dark": as ``detector.heldout``'s DiscTruth


@dataclass(frozen=True, eq=False)
class AltStudy:
    """A rendered study: volume [S, H, W] and its ground truth in pixels."""

    volume: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_positions: tuple[float, ...]
    hard: bool
    seed: int
    discs: tuple[Disc, ...]
    landmarks: dict[int, dict[str, tuple[float, float]]]
    meta: dict = field(default_factory=dict)

    def disc(self, level: str) -> Disc | None:
        """The labelled disc of that level, if the field of view holds it."""
        return next((d for d in self.discs if d.level == level), None)


def development_seed(seed: int, i: int) -> int:
    """Study ``i``'s seed in a development run seeded ``seed``: never a training draw's."""
    return int(np.random.SeedSequence([seed, i, 0xA17]).generate_state(1)[0]) + TRAINING_SEEDS
