"""AFA: adaptive feature alignment of one teacher's FPN levels to the student's."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class AFA(nn.Module):
    """Per FPN level: a 1x1 conv from the teacher's channels to the student's, then adaptive
    average pooling to the student level's spatial size (a no-op when sizes already match)."""

    def __init__(self, teacher_channels: int, student_channels: int, num_levels: int) -> None:
        super().__init__()
        if min(teacher_channels, student_channels, num_levels) < 1:
            raise ValueError("teacher_channels, student_channels and num_levels must be >= 1")
        self.convs = nn.ModuleList(nn.Conv2d(teacher_channels, student_channels, 1) for _ in range(num_levels))

    def forward(self, feats: Sequence[Tensor], sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """feats: per level [B, C_t, H_t, W_t]; sizes: the student's (H_s, W_s) per level
        -> per level [B, C_s, H_s, W_s]."""
        if len(feats) != len(self.convs) or len(sizes) != len(self.convs):
            raise ValueError(f"feats/sizes: expected {len(self.convs)} levels, got {len(feats)}/{len(sizes)}")
        out = []
        for conv, x, size in zip(self.convs, feats, sizes):
            y = conv(x)
            out.append(y if tuple(y.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(y, size))
        return out
