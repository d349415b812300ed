"""A detector checkpoint for the end-to-end tests."""

from __future__ import annotations

from pathlib import Path


def checkpoint_with_findings(folder: Path) -> tuple[Path, bool]:
    """(path, trained): the shipped checkpoint, or until it ships a tiny untrained one biased so
    that every detection is a herniation (score ~0.97), so SR, SEG and GSPS all get written."""
    from detector import SHIPPED_CHECKPOINT

    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT, True
    path = folder / "tiny-herniation.pt"
    if path.is_file():
        return path, False
    import torch

    from detector import checkpoint
    from detector.config import load_config
    from detector.models import build_detector

    torch.manual_seed(0)
    cfg = load_config("tiny")
    model = build_detector(cfg)
    with torch.no_grad():
        model.head.gfl_cls.bias[0] += 8.0  # class 0 = herniation
    checkpoint.save(checkpoint.make_payload(model, cfg, "tiny"), path)
    return path, False
