"""Checkpoint files: weights + config + class names + preprocessing + version, and a JSON sidecar.

``<name>.pt`` (torch) holds everything needed to rebuild and run the model; training
checkpoints add optimizer/scheduler/RNG state so training resumes exactly. ``<name>.json`` next
to it repeats the version and metrics so callers that must stay light (the DICOM node keys jobs
by model version) never import torch.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from detector.config import DetectorConfig
from detector.types import CLASS_NAMES

FORMAT = "meddet-checkpoint/1"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short, stable digest of the weights (the version's suffix)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def make_payload(
    model: torch.nn.Module, cfg: DetectorConfig, config_name: str, half: bool = False, **extra: Any
) -> dict[str, Any]:
    """The checkpoint dict; ``half`` stores float weights as float16 (for shipping)."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in model.state_dict().items()
    }
    return {
        "format": FORMAT,
        "version": f"{config_name}-{weights_digest(state)}",
        "config_name": config_name,
        "config": cfg.to_dict(),
        "class_names": list(CLASS_NAMES),
        "preprocess": cfg.to_dict()["preprocess"],
        "model": state,
        **extra,
    }


def save(payload: dict[str, Any], path: Path) -> None:
    """Write ``path`` atomically, and its ``.json`` sidecar (version, config, metrics)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_suffix(".pt.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    sidecar = {
        "name": "meddet",
        "version": payload["version"],
        "config_name": payload["config_name"],
        "class_names": payload["class_names"],
        "preprocess": payload["preprocess"],
        "epoch": payload.get("epoch"),
        "metrics": payload.get("metrics", {}),
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save``; raises ``ValueError`` for foreign files."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a {FORMAT} file")
    return payload


def export(src: Path, dst: Path, half: bool = True) -> dict[str, Any]:
    """Strip training state from ``src`` (and halve the weights) into a small ``dst``."""
    payload = load(src)
    keep = {k: v for k, v in payload.items() if k not in ("optimizer", "scheduler", "rng", "model")}
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in payload["model"].items()}
    keep["model"] = state
    keep["version"] = f"{payload['config_name']}-{weights_digest(state)}"
    save(keep, dst)
    return keep


#: The analysis rules a second stage stores beside its calibration (``DiscModels.rules``); its
#: version covers them, so a new stored rule goes here too (tests/detector/test_second_stage.py).
STORED_RULES = ("naming", "key_fraction", "crop_anchor")


def with_second_stage(payload: dict[str, Any], discs: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with the second stage (a ``DiscModels.to_payload()`` dict, calibration
    included) under ``"discs"``, versioned by the weights of both stages (a locator's with its
    fusion), the calibration and the rules it was calibrated under (naming, ``key_fraction``,
    ``crop_anchor``)."""
    h = hashlib.sha256(weights_digest(payload["model"]).encode())
    for key in ("herniation", "level", "locator"):
        states = discs.get(key, [])
        for state in states if isinstance(states, list) else [states]:  # an ensemble: each member
            h.update(weights_digest(state).encode())
    if "locator" in discs:  # how its view is used changes the names (without one it is unused)
        h.update(str(discs["level_fusion"]).encode())
    h.update(json.dumps(discs["calibration"], sort_keys=True).encode())
    for rule in STORED_RULES:  # how chains are named, calls read (absent before they were stored)
        if rule in discs:
            h.update(json.dumps(discs[rule], sort_keys=True).encode())
    return {**payload, "discs": discs, "version": f"{payload['config_name']}-{h.hexdigest()[:12]}"}


def annotate(path: Path, **metrics: Any) -> dict[str, Any]:
    """Add named metric blocks (e.g. ``hard_set={...}``) to a checkpoint and its sidecar."""
    payload = load(path)
    payload["metrics"] = {**payload.get("metrics", {}), **metrics}
    save(payload, path)
    return payload
