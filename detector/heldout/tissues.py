"""Tissue relaxation properties and the T2-weighted fast spin echo signal.

Signal of a tissue: S = PD (1 - exp(-TR/T1)) exp(-TE/T2) for its water, plus its fat fraction
times the fat signal, which fat saturation multiplies by a small residual. Values are rough
1.5-3 T literature figures (ms), jittered per study by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name: (proton density, T1 ms, T2 ms, fat fraction)
TISSUES: dict[str, tuple[float, float, float, float]] = {
    "air": (0.0, 1000.0, 1.0, 0.0),
    "csf": (1.0, 4000.0, 1800.0, 0.0),
    "fat": (0.0, 350.0, 130.0, 1.0),
    "muscle": (0.75, 1100.0, 45.0, 0.03),
    "soft": (0.75, 1100.0, 55.0, 0.25),  # mixed deep neck tissue
    "skin": (0.7, 800.0, 40.0, 0.1),
    "cord": (0.72, 850.0, 80.0, 0.0),
    "brain": (0.78, 1000.0, 90.0, 0.0),
    "cerebellum": (0.8, 1150.0, 95.0, 0.0),
    "nucleus": (0.85, 1150.0, 120.0, 0.0),
    "annulus": (0.6, 1000.0, 48.0, 0.0),
    "hernia": (0.75, 1100.0, 70.0, 0.0),
    "marrow": (0.8, 900.0, 55.0, 0.5),  # fat fraction replaced per study (age)
    "cortex": (0.05, 500.0, 6.0, 0.0),
    "ligament": (0.12, 600.0, 12.0, 0.0),
    "cartilage": (0.7, 1000.0, 40.0, 0.0),
    "mucosa": (0.85, 1200.0, 110.0, 0.0),
    "lymphoid": (0.85, 1100.0, 100.0, 0.0),
    "thyroid": (0.8, 900.0, 85.0, 0.0),
    "nerve": (0.75, 900.0, 70.0, 0.1),
    "vessel": (0.0, 1000.0, 1.0, 0.0),  # flow void; slow flow adds a per-structure gain
    "edema": (0.9, 1500.0, 150.0, 0.0),
}
FAT_SIGNAL: tuple[float, float, float] = (1.0, 350.0, 130.0)


@dataclass(frozen=True)
class Sequence:
    """A T2-weighted FSE acquisition: repetition and echo times (ms) and fat saturation."""

    tr: float
    te: float
    fat_sat: bool
    fat_residual: float = 0.1  # fraction of fat signal left by fat saturation


def signals(seq: Sequence, rng: np.random.Generator, marrow_fat: float, jitter: float = 0.08) -> dict[str, float]:
    """Signal of every tissue for one study (T2 and T1 jittered by +-``jitter``)."""

    def water(pd: float, t1: float, t2: float) -> float:
        t1 *= 1.0 + rng.uniform(-jitter, jitter)
        t2 *= 1.0 + rng.uniform(-jitter, jitter)
        return pd * (1.0 - np.exp(-seq.tr / t1)) * np.exp(-seq.te / t2)

    fat = water(*FAT_SIGNAL) * (seq.fat_residual if seq.fat_sat else 1.0)
    out: dict[str, float] = {}
    for name, (pd, t1, t2, ff) in TISSUES.items():
        if name == "marrow":
            ff = marrow_fat
        out[name] = float((1.0 - ff) * water(pd, t1, t2) + ff * fat)
    return out
