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

__all__ = ["CLASS_NAMES", "SHIPPED_CHECKPOINT", "Detection", "Detector", "model_version"]


def model_version(checkpoint: Path | None = None) -> str:
    """The version of a checkpoint (default: the shipped one), without importing torch.

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
