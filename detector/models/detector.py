"""The GFL detector: backbone -> FPN -> GFL head. Teachers and students share this builder."""

from __future__ import annotations

from torch import Tensor, nn

from detector.config import DetectorConfig
from detector.models.backbones import build_backbone
from detector.models.fpn import FPN
from detector.models.head import GFLHead, Prediction


class GFL(nn.Module):
    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        if cfg.neck.num_outs != len(cfg.head.strides):
            raise ValueError(
                f"head.strides: need one stride per FPN level ({cfg.neck.num_outs}), got {cfg.head.strides}"
            )
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.neck = FPN(self.backbone.out_channels, cfg.neck.channels, cfg.neck.num_outs)
        self.head = GFLHead(cfg.num_classes, cfg.neck.channels, cfg.head)

    def extract_feats(self, images: Tensor) -> list[Tensor]:
        """images [B, 1, H, W] (preprocessed) -> FPN features per level [B, C, H/s_l, W/s_l]."""
        if images.shape[1] != self.cfg.backbone.in_channels:
            images = images.expand(-1, self.cfg.backbone.in_channels, -1, -1)
        return self.neck(self.backbone(images))

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """images [B, 1, H, W] -> head outputs (cls logits, box distributions) per level."""
        return self.head(self.extract_feats(images))

    def forward_train(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """images [B, 1, H, W]; targets: per image {"boxes": [G, 4] pixels, "labels": [G]} -> losses."""
        cls_scores, bbox_preds = self(images)
        return self.head.loss(cls_scores, bbox_preds, [t["boxes"] for t in targets], [t["labels"] for t in targets])

    def predict(self, images: Tensor) -> list[Prediction]:
        """images [B, 1, H, W] -> per image (boxes [K, 4] in input pixels, scores [K], labels [K])."""
        cls_scores, bbox_preds = self(images)
        return self.head.predict(cls_scores, bbox_preds, tuple(images.shape[-2:]))  # type: ignore[arg-type]


def build_detector(cfg: DetectorConfig) -> GFL:
    """Build any configured detector (paper student, teachers, slim and tiny variants)."""
    if cfg.name != "gfl":
        raise ValueError(f"name: only 'gfl' detectors exist, got {cfg.name!r}")
    return GFL(cfg)
