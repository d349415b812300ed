"""ATSS assigner (Zhang et al., 2020), as used by GFL: adaptive IoU threshold per object."""

from __future__ import annotations

import torch
from torch import Tensor

from detector.models.boxes import box_iou


@torch.no_grad()
def atss_assign(anchors: Tensor, num_per_level: list[int], gt_boxes: Tensor, topk: int = 9) -> Tensor:
    """Assign each anchor to an object or to background.

    anchors [A, 4] (all levels concatenated, ``num_per_level`` anchors per level);
    gt_boxes [G, 4] -> assigned [A] long: index of the object, or -1 for background.
    """
    num_anchors = anchors.shape[0]
    assigned = anchors.new_full((num_anchors,), -1, dtype=torch.long)
    if gt_boxes.numel() == 0:
        return assigned
    num_gt = gt_boxes.shape[0]
    overlaps = box_iou(anchors, gt_boxes)  # [A, G]
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    distances = torch.cdist(centers, gt_centers)  # [A, G]

    per_level = []
    start = 0
    for n in num_per_level:
        k = min(topk, n)
        _, idx = distances[start : start + n].topk(k, dim=0, largest=False)
        per_level.append(idx + start)
        start += n
    candidates = torch.cat(per_level, dim=0)  # [K, G]
    cand_iou = overlaps.gather(0, candidates)  # [K, G]
    threshold = cand_iou.mean(0) + cand_iou.std(0).nan_to_num(0.0)  # one candidate: std is NaN
    is_pos = cand_iou >= threshold[None, :]

    cand_centers = centers[candidates]  # [K, G, 2]
    inside = ((cand_centers - gt_boxes[None, :, :2]).min(-1).values > 0.01) & (
        (gt_boxes[None, :, 2:] - cand_centers).min(-1).values > 0.01
    )
    is_pos &= inside

    masked = torch.full_like(overlaps, -1.0)
    gt_idx = torch.arange(num_gt, device=anchors.device).expand_as(candidates)
    masked[candidates[is_pos], gt_idx[is_pos]] = overlaps[candidates[is_pos], gt_idx[is_pos]]
    best, arg = masked.max(dim=1)
    pos = best > -1.0
    assigned[pos] = arg[pos]
    return assigned
