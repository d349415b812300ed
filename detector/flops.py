"""Parameters and multiply-accumulates (MACs) of any detector config, counted with fvcore.

fvcore counts one fused multiply-add as one "flop", i.e. MACs: the mmcv/fvcore convention the
paper's "GFLOPs" follow. The count covers backbone, FPN and head (no post-processing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from detector.config import DetectorConfig
from detector.models import build_detector


@dataclass(frozen=True)
class Complexity:
    params_m: float
    gmacs: float
    size: int

    def row(self) -> str:
        return f"{self.params_m:.2f} M params, {self.gmacs:.2f} GMACs at {self.size}x{self.size}"


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, size: int, in_channels: int = 1) -> int:
    """MACs of one forward pass on a [1, in_channels, size, size] input."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model.eval()
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, torch.zeros(1, in_channels, size, size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


def complexity(cfg: DetectorConfig, size: int | None = None) -> Complexity:
    """Params (M) and GMACs of ``cfg`` at ``size`` (default: its preprocessing size)."""
    size = size or cfg.preprocess.size
    model = build_detector(cfg)
    return Complexity(count_params(model) / 1e6, count_macs(model, size, cfg.backbone.in_channels) / 1e9, size)
