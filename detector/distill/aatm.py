"""AATM: adversarial attention transfer. Per FPN level a generator maps the student feature
to a teacher-like one; a discriminator sees the fused teacher feature as real and the
generated one as fake. The trainer alternates discriminator and student/generator updates."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detector.distill.losses import standardize


class Generator(nn.Module):
    """conv3x3 - ReLU - conv3x3 on the student feature (the MGD generator shape)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, C, H, W]."""
        return self.net(x)


class Discriminator(nn.Module):
    """A patch discriminator: [B, C, H, W] -> real/fake logits [B, 1, H, W]."""

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        h = hidden or max(channels // 2, 8)
        self.net = nn.Sequential(
            nn.Conv2d(channels, h, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(h, h, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(h, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, 1, H, W]."""
        return self.net(x)


class AATM(nn.Module):
    """Generators and discriminators for every FPN level; inputs of the discriminator are
    channel-standardised so it judges structure, not scale."""

    def __init__(self, channels: int, num_levels: int) -> None:
        super().__init__()
        self.generators = nn.ModuleList(Generator(channels) for _ in range(num_levels))
        self.discriminators = nn.ModuleList(Discriminator(channels) for _ in range(num_levels))

    def generate(self, student: Sequence[Tensor]) -> list[Tensor]:
        """per level [B, C, H_l, W_l] -> generated teacher-like maps, same shapes."""
        return [g(x) for g, x in zip(self.generators, student, strict=True)]

    def discriminate(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """per level [B, C, H_l, W_l] -> logits per level [B, 1, H_l, W_l]."""
        return [d(standardize(x)) for d, x in zip(self.discriminators, feats, strict=True)]
