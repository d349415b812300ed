"""Box operations in plain torch: IoU/GIoU, point-distance coding, greedy NMS.

Boxes are ``[..., 4]`` as (x0, y0, x1, y1) in pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """[..., 4] -> [...]"""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise IoU: a [N, 4], b [M, 4] -> [N, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=eps)


def aligned_iou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of matching rows: a, b [N, 4] -> [N]."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a) + box_area(b) - inter).clamp(min=eps)


def aligned_giou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Generalized IoU of matching rows: a, b [N, 4] -> [N] in [-1, 1]."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (box_area(a) + box_area(b) - inter).clamp(min=eps)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(-1)
    return inter / union - (hull - union) / hull.clamp(min=eps)


def distance2bbox(points: Tensor, distance: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
    """Decode (left, top, right, bottom) distances from points: [N, 2], [N, 4] -> [N, 4].

    ``max_shape`` (H, W) clips the boxes to the image.
    """
    x0y0 = points - distance[:, :2]
    x1y1 = points + distance[:, 2:]
    boxes = torch.cat([x0y0, x1y1], dim=-1)
    if max_shape is not None:
        h, w = max_shape
        boxes = torch.stack(
            [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], -1
        )
    return boxes


def bbox2distance(points: Tensor, boxes: Tensor, max_dis: float) -> Tensor:
    """Encode boxes as distances from points, clipped to [0, max_dis - 0.01]: [N, 2], [N, 4] -> [N, 4]."""
    d = torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], dim=-1)
    return d.clamp(min=0, max=max_dis - 0.01)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: boxes [N, 4], scores [N] -> kept indices [K], highest score first."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True)
    overlap = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu()
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1 :] &= ~overlap[i, i + 1 :]
    return order[keep.to(order.device)]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each label: boxes [N, 4], scores [N], labels [N] -> kept indices [K]."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes.dtype)[:, None] * (boxes.max() + 1)
    return nms(boxes + offsets, scores, iou_threshold)
