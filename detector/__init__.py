"""MedDet detector: pure ML (torch + numpy), float32 slices in, detections out.

Importing this package is light (no torch): ``model_version`` reads the JSON sidecar of a
checkpoint, and ``Detector`` is imported on first use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.types import CLASS_NAMES, Detection

if TYPE_CHECKING:
    from detector.inference import Detector

SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "meddet-student.pt"

#: The revision of the rules in code that turn a checkpoint's outputs into findings (the disc
#: chain, which members a disc's call reads, the key slice, the box shown). Bump it with every
#: change that alters the findings of an unchanged checkpoint: the model version that judges a
#: series (``model_version``) names it, so findings made under other rules never share a version,
#: a job key or the results' derived UIDs, and the audit says which rules judged. The held-out
#: run stored with the shipped checkpoint records the version it measured, revision included
#: (``metrics.heldout.model_version``); tests/detector/test_shipped_checkpoint.py holds it to today's.
#: 1: the rules of 2026-12-01 (chain of 2026-11-30, box shown where the crop looked).
ANALYSIS_RULES = 1

__all__ = [
    "ANALYSIS_RULES",
    "CLASS_NAMES",
    "SHIPPED_CHECKPOINT",
    "Detection",
    "Detector",
    "analysis_version",
    "checkpoint_version",
    "model_version",
]


def model_version(checkpoint: Path | None = None) -> str:
    """The version of the analysis a checkpoint (default: the shipped one) makes: its weights'
    version and the code's rules (``analysis_version``), without importing torch."""
    return analysis_version(checkpoint_version(checkpoint))


def analysis_version(weights_version: str, rules: int = ANALYSIS_RULES) -> str:
    """``<checkpoint version>+r<rules>``: what judged a series, e.g. ``meddet-student-960204dafb19+r1``."""
    return f"{weights_version}+r{rules}"


def checkpoint_version(checkpoint: Path | None = None) -> str:
    """The version of a checkpoint's weights (default: the shipped one), without importing torch.

    Read from the ``.json`` sidecar next to the checkpoint; a checkpoint without one is
    versioned by the first 12 hex digits of its file's SHA-256.
    """
    path = Path(checkpoint) if checkpoint is not None else SHIPPED_CHECKPOINT
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return str(json.loads(sidecar.read_text())["version"])
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    with path.open("rb") as fh:
        return f"{path.stem}-{hashlib.file_digest(fh, 'sha256').hexdigest()[:12]}"


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from detector.inference import Detector

        return Detector
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
