"""Detector models: backbones, FPN, GFL head, losses, assigner, box ops."""

from detector.models.detector import GFL, build_detector

__all__ = ["GFL", "build_detector"]
