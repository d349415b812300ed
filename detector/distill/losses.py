"""Distillation losses: feature MSE (optionally on channel-standardised features, as in PKD)
and the non-saturating GAN losses of AATM. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def standardize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """[B, C, H, W] -> the same, each channel at zero mean / unit variance over (B, H, W)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt()


def feature_mse(student: Sequence[Tensor], target: Sequence[Tensor], normalize: bool = True) -> Tensor:
    """Mean over levels of MSE(student_l, target_l); maps per level [B, C, H_l, W_l]."""
    losses = []
    for s, t in zip(student, target, strict=True):
        if normalize:
            s, t = standardize(s), standardize(t)
        losses.append(F.mse_loss(s, t))
    return torch.stack(losses).mean()


def discriminator_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor]) -> Tensor:
    """BCE pushing real (fused teacher) logits to 1 and fake (generated) logits to 0."""
    losses = [
        F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
        + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
        for r, f in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(losses).mean() / 2


def generator_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Non-saturating generator loss: BCE pushing the generated logits to 1."""
    return torch.stack([F.binary_cross_entropy_with_logits(f, torch.ones_like(f)) for f in fake_logits]).mean()
