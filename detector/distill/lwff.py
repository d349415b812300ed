"""LWFF: learnable weighted fusion of the aligned teacher features (and the ablation's
alternatives, plain ``sum`` and plain ``concat``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

FusionMode = Literal["lwff", "sum", "concat"]


class LevelFusion(nn.Module):
    """Fuses K aligned teacher maps of one FPN level into one map.

    ``lwff``: per-teacher, per-channel weights (softmax over teachers, so they cannot all
    vanish) scale each map; the maps are concatenated and mixed by a 1x1 conv.
    ``concat``: concatenation and 1x1 conv, no weights. ``sum``: the mean of the maps.
    """

    def __init__(self, num_teachers: int, channels: int, mode: FusionMode = "lwff") -> None:
        super().__init__()
        if mode not in ("lwff", "sum", "concat"):
            raise ValueError(f"mode: expected 'lwff', 'sum' or 'concat', got {mode!r}")
        self.mode = mode
        self.num_teachers = num_teachers
        self.logits = nn.Parameter(torch.zeros(num_teachers, channels)) if mode == "lwff" else None
        self.mix = nn.Conv2d(num_teachers * channels, channels, 1) if mode != "sum" else None
        if self.mix is not None:  # start as the mean of the teachers
            eye = torch.eye(channels).repeat(1, num_teachers) / num_teachers
            with torch.no_grad():
                self.mix.weight.copy_(eye[:, :, None, None])
                assert self.mix.bias is not None
                self.mix.bias.zero_()

    def weights(self) -> Tensor | None:
        """[K, C] per-teacher channel weights (scaled so equal weights are all ones)."""
        if self.logits is None:
            return None
        return self.logits.softmax(0) * self.num_teachers

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """feats: K maps [B, C, H, W] -> [B, C, H, W]."""
        if len(feats) != self.num_teachers:
            raise ValueError(f"feats: expected {self.num_teachers} teachers, got {len(feats)}")
        if self.mode == "sum":
            return torch.stack(list(feats)).mean(0)
        w = self.weights()
        if w is not None:
            feats = [f * w[k][None, :, None, None] for k, f in enumerate(feats)]
        assert self.mix is not None
        return self.mix(torch.cat(list(feats), dim=1))


class LWFF(nn.Module):
    """One ``LevelFusion`` per FPN level."""

    def __init__(self, num_teachers: int, channels: int, num_levels: int, mode: FusionMode = "lwff"):
        super().__init__()
        self.levels = nn.ModuleList(LevelFusion(num_teachers, channels, mode) for _ in range(num_levels))

    def forward(self, per_teacher: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """per_teacher[k][l]: [B, C, H_l, W_l] -> per level [B, C, H_l, W_l]."""
        return [fuse([t[level] for t in per_teacher]) for level, fuse in enumerate(self.levels)]
