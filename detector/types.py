"""The detector's public data types (contract in DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Label = Literal["herniation", "normal_disc"]
CLASS_NAMES: tuple[Label, ...] = ("herniation", "normal_disc")


@dataclass(frozen=True)
class Detection:
    """One detected disc on one slice; ``box`` is (x0, y0, x1, y1) in pixels of that slice."""

    label: Label
    score: float
    box: tuple[float, float, float, float]
