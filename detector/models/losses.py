"""GFL losses (Li et al., Generalized Focal Loss, 2020): QFL, DFL and GIoU, element-wise.

Each returns a per-sample loss; the head weights and normalises them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.models.boxes import aligned_giou


def quality_focal_loss(logits: Tensor, labels: Tensor, quality: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss.

    logits [N, C]; labels [N] in [0, C] (C = background); quality [N] IoU targets of the
    positives (ignored for background) -> loss [N] (summed over classes).
    """
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    loss = loss * prob.pow(beta)
    pos = torch.nonzero((labels >= 0) & (labels < logits.shape[1])).squeeze(1)
    if pos.numel():
        cls = labels[pos]
        target = quality[pos].to(logits.dtype)
        scale = (target - prob[pos, cls]).abs().pow(beta)
        loss[pos, cls] = F.binary_cross_entropy_with_logits(logits[pos, cls], target, reduction="none") * scale
    return loss.sum(dim=1)


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss: logits [N, n_bins] over distances, target [N] in [0, n_bins - 1) -> [N]."""
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    return (
        F.cross_entropy(logits, left, reduction="none") * w_left
        + F.cross_entropy(logits, right, reduction="none") * w_right
    )


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - GIoU of matching boxes: pred, target [N, 4] -> [N]."""
    return 1.0 - aligned_giou(pred, target)
