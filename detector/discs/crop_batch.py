"""A draw of training crops (``CropBatch``) and how a draw places them as a detector would:
shared by the samplers of both training generators (``samples``, ``other_generator``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class CropBatch:
    """Raw crops and their targets (un-normalised, un-randomised)."""

    herniation: Tensor  # [N, C, S, S]
    protrusion_mm: Tensor  # [N]
    level: Tensor  # [M, C', S', S']
    level_class: Tensor  # [M] int64

    @staticmethod
    def cat(batches: list[CropBatch]) -> CropBatch:
        return CropBatch(
            *(
                torch.cat([getattr(b, f) for b in batches])
                for f in ("herniation", "protrusion_mm", "level", "level_class")
            )
        )

    def __len__(self) -> int:
        return len(self.herniation)


def shift_anchor(
    rng: np.random.Generator, anchor: tuple[float, float], mm: float, spacing: tuple[float, float]
) -> tuple[float, float]:
    """``anchor`` (row, col px) moved by up to ``mm`` along the rows and ``mm / 2`` along the
    columns (uniform), on pixels of ``spacing`` (row mm, col mm)."""
    return (
        anchor[0] + float(rng.uniform(-mm, mm)) / spacing[0],
        anchor[1] + float(rng.uniform(-mm / 2, mm / 2)) / spacing[1],
    )


def jitter_box(rng: np.random.Generator, box: np.ndarray, mm_per_px: float) -> np.ndarray:
    """A box as a detector might draw it: each edge off by up to ~8% of the box and ~0.6 mm."""
    w, h = box[2] - box[0], box[3] - box[1]
    scale = np.array([w, h, w, h]) * 0.08 + 0.6 / mm_per_px
    return box + rng.uniform(-1, 1, 4) * scale
