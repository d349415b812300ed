"""Feature pyramid network (Lin et al., 2017), mmdetection layout with extra levels on output."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest-upsampling sum, 3x3 output convs; levels beyond the
    inputs come from stride-2 3x3 convs on the last output (``add_extra_convs="on_output"``)."""

    def __init__(self, in_channels: list[int], channels: int, num_outs: int) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs: needs >= {len(in_channels)} levels, got {num_outs}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.extra = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(num_outs - len(in_channels))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                assert m.bias is not None
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """feats: per input level [B, C_i, H_i, W_i] (stride doubling) -> num_outs x [B, channels, H_l, W_l]."""
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs
