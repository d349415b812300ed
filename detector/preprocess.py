"""Preprocessing shared by training, evaluation and inference.

A raw slice (float32 [H, W], any intensity scale) is windowed per image between two
percentiles to [0, 1], then resized with its aspect ratio kept and padded at the bottom/right
to a square model input ("letterbox"). ``Letterbox`` records how to map boxes back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detector.config import PreprocessConfig


@dataclass(frozen=True)
class Letterbox:
    """Original (height, width) and the scale applied; boxes map back by dividing."""

    height: int
    width: int
    scale: float

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Original-pixel boxes [N, 4] -> model-input pixels [N, 4]."""
        return (np.asarray(boxes, dtype=np.float32) * self.scale).astype(np.float32)

    def to_original(self, boxes: Tensor) -> Tensor:
        """Model-input boxes [N, 4] -> original pixels [N, 4], clipped to the image."""
        b = boxes / self.scale
        return torch.stack(
            [
                b[:, 0].clamp(0, self.width),
                b[:, 1].clamp(0, self.height),
                b[:, 2].clamp(0, self.width),
                b[:, 3].clamp(0, self.height),
            ],
            dim=1,
        )


def normalize_intensity(image: np.ndarray, p_low: float = 0.5, p_high: float = 99.5) -> np.ndarray:
    """[H, W] raw intensities -> float32 [H, W] in [0, 1] between the two percentiles."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, (p_low, p_high))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("image: contains NaN or infinite values")
    scale = np.float32(1.0 / max(float(hi - lo), 1e-6))
    return np.clip((image - np.float32(lo)) * scale, 0.0, 1.0).astype(np.float32, copy=False)


def letterbox(image: np.ndarray, size: int) -> tuple[Tensor, Letterbox]:
    """[H, W] float32 -> ([1, size, size] tensor, Letterbox). Antialiased when shrinking."""
    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    out = x.new_zeros(1, size, size)
    out[:, :nh, :nw] = x[0]
    return out, Letterbox(h, w, scale)


def preprocess(image: np.ndarray, cfg: PreprocessConfig) -> tuple[Tensor, Letterbox]:
    """Raw slice [H, W] -> (model input [1, size, size], Letterbox)."""
    if image.ndim != 2:
        raise ValueError(f"image: expected a 2-D slice [H, W], got shape {image.shape}")
    return letterbox(normalize_intensity(image, cfg.p_low, cfg.p_high), cfg.size)
