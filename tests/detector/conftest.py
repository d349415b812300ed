"""Helpers shared by the detector tests."""

from __future__ import annotations

import numpy as np

from detector.naming import LEVEL_CLASSES


def chain_log_probs(levels: list[int], confidence: float = 0.9) -> np.ndarray:
    """A chain whose position i looks like class levels[i] with the given confidence."""
    out = np.full((len(levels), len(LEVEL_CLASSES)), (1 - confidence) / (len(LEVEL_CLASSES) - 1))
    for i, c in enumerate(levels):
        out[i, c] = confidence
    return np.log(out)
