"""GFL head: shared conv towers, quality-aware class scores and distributional box regression.

Every FPN level shares the same convs. The classification branch predicts a joint
class-and-quality (IoU) score per class; the regression branch predicts, for each side of the
box, a discrete distribution over distances ``0..reg_max`` (in units of the level's stride)
whose expectation (the "integral") is the distance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detector.config import HeadConfig
from detector.models.assigner import atss_assign
from detector.models.boxes import aligned_iou, batched_nms, bbox2distance, distance2bbox
from detector.models.losses import distribution_focal_loss, giou_loss, quality_focal_loss

Prediction = tuple[Tensor, Tensor, Tensor]  # boxes [K, 4], scores [K], labels [K]


def group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2 or g == 1)
    return nn.GroupNorm(groups, channels)


def conv_gn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), group_norm(cout), nn.ReLU(inplace=True))


class IdentityRefiner(nn.Module):
    """The default ``refine`` hook: returns the tower features unchanged."""

    def forward(self, cls_feats: list[Tensor], reg_feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """cls_feats, reg_feats: per level [B, C, H_l, W_l] -> the same."""
        return list(cls_feats), list(reg_feats)


def build_refiner(cfg: HeadConfig) -> nn.Module:
    """The module between the conv towers and the prediction convs (``HeadConfig.ode``)."""
    if cfg.ode == "none":
        return IdentityRefiner()
    if cfg.ode == "nmode2":
        from detector.models.nmode import NMODE2Refiner, ODESolver

        return NMODE2Refiner(cfg.feat_channels, ODESolver(method=cfg.ode_method, steps=cfg.ode_steps))  # type: ignore[arg-type]
    raise ValueError(f"head.ode: expected 'none' or 'nmode2', got {cfg.ode!r}")


class GFLHead(nn.Module):
    project: Tensor  # buffer: the bin values 0..reg_max of the box distributions

    def __init__(self, num_classes: int, in_channels: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        ch = cfg.feat_channels
        self.cls_convs = nn.Sequential(
            *(conv_gn_relu(in_channels if i == 0 else ch, ch) for i in range(cfg.stacked_convs))
        )
        self.reg_convs = nn.Sequential(
            *(conv_gn_relu(in_channels if i == 0 else ch, ch) for i in range(cfg.stacked_convs))
        )
        if cfg.stacked_convs == 0 and in_channels != ch:
            raise ValueError("head.feat_channels must equal the FPN channels when stacked_convs = 0")
        self.refine = build_refiner(cfg)
        self.gfl_cls = nn.Conv2d(ch, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(ch, 4 * (cfg.reg_max + 1), 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(cfg.strides)))
        self.register_buffer("project", torch.linspace(0, cfg.reg_max, cfg.reg_max + 1), persistent=False)
        for m in [*self.cls_convs.modules(), *self.reg_convs.modules(), self.gfl_cls, self.gfl_reg]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
        assert self.gfl_cls.bias is not None and self.gfl_reg.bias is not None
        nn.init.constant_(self.gfl_cls.bias, -math.log(99.0))  # prior probability 0.01
        nn.init.zeros_(self.gfl_reg.bias)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """feats: per level [B, C, H_l, W_l] -> (cls logits per level [B, num_classes, H_l, W_l],
        box distributions per level [B, 4 * (reg_max + 1), H_l, W_l] in stride units)."""
        cls_feats = [self.cls_convs(f) for f in feats]
        reg_feats = [self.reg_convs(f) for f in feats]
        cls_feats, reg_feats = self.refine(cls_feats, reg_feats)
        cls_scores = [self.gfl_cls(f) for f in cls_feats]
        bbox_preds = [self.gfl_reg(f) * self.scales[i] for i, f in enumerate(reg_feats)]
        return cls_scores, bbox_preds

    # --- geometry -------------------------------------------------------------------------

    def points(self, sizes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor, list[int]]:
        """Cell centers of every level: (points [A, 2] in pixels, strides [A], anchors per level)."""
        pts, strides = [], []
        for (h, w), s in zip(sizes, self.cfg.strides):
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            p = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float().add_(0.5).mul_(s)
            pts.append(p)
            strides.append(torch.full((h * w,), float(s), device=device))
        return torch.cat(pts), torch.cat(strides), [h * w for h, w in sizes]

    def integral(self, dist: Tensor) -> Tensor:
        """[N, 4 * (reg_max + 1)] logits -> [N, 4] expected distances (stride units)."""
        return dist.reshape(-1, 4, self.cfg.reg_max + 1).softmax(-1) @ self.project.to(dist.dtype)

    @staticmethod
    def _flatten(maps: list[Tensor]) -> Tensor:
        """per level [B, K, H_l, W_l] -> [B, A, K]"""
        return torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)

    # --- training ---------------------------------------------------------------------------

    def loss(
        self, cls_scores: list[Tensor], bbox_preds: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> dict[str, Tensor]:
        """Head outputs (see forward) and per image gt boxes [G_i, 4] / labels [G_i] ->
        {"loss_qfl", "loss_dfl", "loss_giou"} scalars (already weighted)."""
        cfg = self.cfg
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        points, strides, per_level = self.points(sizes, cls_scores[0].device)  # type: ignore[arg-type]
        half = (cfg.anchor_scale * strides / 2)[:, None]
        anchors = torch.cat([points - half, points + half], dim=1)
        cls = self._flatten(cls_scores).float()  # [B, A, C]
        reg = self._flatten(bbox_preds).float()  # [B, A, 4n]

        labels = torch.full(cls.shape[:2], self.num_classes, dtype=torch.long, device=cls.device)
        targets = torch.zeros(*cls.shape[:2], 4, device=cls.device)
        for b, (boxes, lab) in enumerate(zip(gt_boxes, gt_labels)):
            idx = atss_assign(anchors, per_level, boxes.float(), cfg.atss_topk)
            pos = idx >= 0
            labels[b, pos] = lab[idx[pos]].long()
            targets[b, pos] = boxes[idx[pos]].float()

        pos = labels < self.num_classes  # [B, A]
        num_pos = max(int(pos.sum()), 1)
        pos_stride = strides.expand_as(labels)[pos][:, None]
        pos_points = points.expand(*labels.shape, 2)[pos] / pos_stride
        pos_targets = targets[pos] / pos_stride
        pos_dist = reg[pos]  # [P, 4n]
        pos_boxes = distance2bbox(pos_points, self.integral(pos_dist))
        quality = torch.zeros_like(labels, dtype=cls.dtype)
        quality[pos] = aligned_iou(pos_boxes.detach(), pos_targets).clamp(min=0)
        weight = cls.detach().sigmoid().max(-1).values[pos]
        norm = weight.sum().clamp(min=1e-6)

        loss_qfl = (
            quality_focal_loss(cls.reshape(-1, self.num_classes), labels.reshape(-1), quality.reshape(-1)).sum()
            / num_pos
        )
        loss_giou = (giou_loss(pos_boxes, pos_targets) * weight).sum() / norm
        corners = bbox2distance(pos_points, pos_targets, cfg.reg_max).reshape(-1)
        dfl = distribution_focal_loss(pos_dist.reshape(-1, cfg.reg_max + 1), corners)
        loss_dfl = (dfl * weight.repeat_interleave(4)).sum() / (4.0 * norm)
        return {
            "loss_qfl": cfg.loss_qfl * loss_qfl,
            "loss_dfl": cfg.loss_dfl * loss_dfl,
            "loss_giou": cfg.loss_giou * loss_giou,
        }

    # --- inference --------------------------------------------------------------------------

    @torch.no_grad()
    def predict(
        self, cls_scores: list[Tensor], bbox_preds: list[Tensor], image_size: tuple[int, int]
    ) -> list[Prediction]:
        """Head outputs -> per image (boxes [K, 4] in input pixels, scores [K], labels [K]) after NMS."""
        cfg = self.cfg
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        points, strides, per_level = self.points(sizes, cls_scores[0].device)  # type: ignore[arg-type]
        cls = self._flatten(cls_scores).float().sigmoid()
        reg = self._flatten(bbox_preds).float()
        results = []
        for b in range(cls.shape[0]):
            keep_idx = []
            start = 0
            for n in per_level:  # top nms_pre cells per level by their best class score
                best = cls[b, start : start + n].max(-1).values
                k = min(cfg.nms_pre, n)
                keep_idx.append(best.topk(k).indices + start)
                start += n
            idx = torch.cat(keep_idx)
            boxes = distance2bbox(points[idx], self.integral(reg[b, idx]) * strides[idx, None], image_size)
            scores = cls[b, idx]  # [K, C]
            cell, label = torch.nonzero(scores > cfg.score_thr, as_tuple=True)
            boxes, scores = boxes[cell], scores[cell, label]
            keep = batched_nms(boxes, scores, label, cfg.nms_iou)[: cfg.max_per_img]
            results.append((boxes[keep], scores[keep], label[keep]))
        return results
