"""Alternative synthetic sagittal T2 cervical-spine MR generator with ground truth (training variety only).

Written independently of detector/data and detector/heldout; see docs/altgen.md.
"""

from __future__ import annotations

from .generator import make_study, studies
from .spec import BODIES, LEVELS, AltStudy, Box, Disc

__all__ = ["BODIES", "LEVELS", "AltStudy", "Box", "Disc", "make_study", "studies"]
