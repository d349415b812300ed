"""Alternative synthetic sagittal T2 cervical-spine MR generator with ground truth (training variety only).

Written independently of detector/data and detector/heldout; see docs/altgen.md.
"""

from __future__ import annotations

from .generator import make_study, studies
from .spec import BODIES, DISCS_SHOW_MM, LEVELS, TRAINING_SEEDS, AltStudy, Box, Disc, development_seed

__all__ = [
    "BODIES",
    "DISCS_SHOW_MM",
    "LEVELS",
    "TRAINING_SEEDS",
    "AltStudy",
    "Box",
    "Disc",
    "development_seed",
    "make_study",
    "studies",
]
