"""Inference: ``Detector.from_checkpoint(path=None).predict(images)`` (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from detector import SHIPPED_CHECKPOINT
from detector import checkpoint as ckpt
from detector.config import DetectorConfig, PreprocessConfig
from detector.models import GFL, build_detector
from detector.preprocess import preprocess
from detector.types import Detection

RawPrediction = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [K, 4], scores [K], labels [K]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def predict_arrays(
    model: GFL, images: Sequence[np.ndarray], pre: PreprocessConfig, batch_size: int = 8, channels_last: bool = True
) -> list[RawPrediction]:
    """Raw slices [H_i, W_i] -> per slice (boxes in that slice's pixels, scores, label indices)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out: list[RawPrediction] = []
    for start in range(0, len(images), batch_size):
        prepared = [preprocess(np.asarray(im), pre) for im in images[start : start + batch_size]]
        batch = torch.stack([t for t, _ in prepared]).to(device).contiguous(memory_format=fmt)
        for (boxes, scores, labels), (_, meta) in zip(model.predict(batch), prepared):
            out.append(
                (meta.to_original(boxes).cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy().astype(np.int64))
            )
    return out


class Detector:
    """A trained detector ready for slices; build with ``from_checkpoint``."""

    def __init__(
        self, model: GFL, cfg: DetectorConfig, class_names: Sequence[str], version: str, channels_last: bool = True
    ) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.class_names = tuple(class_names)
        self.version = version
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None, device: str | torch.device | None = None) -> Detector:
        """Load ``path`` (None = the shipped checkpoint) onto ``device`` (None = CUDA if present)."""
        path = Path(path) if path is not None else SHIPPED_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint: {path} does not exist")
        payload = ckpt.load(path)
        cfg = DetectorConfig.from_dict(payload["config"])
        model = build_detector(cfg)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()})
        return cls(model.to(pick_device(device)), cfg, payload["class_names"], payload["version"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[list[Detection]]:
        """float32 slices [H, W] (raw intensities) -> per slice, detections sorted by score."""
        raw = predict_arrays(self.model, images, self.cfg.preprocess, batch_size, self.channels_last)
        return [
            [
                Detection(self.class_names[int(c)], float(s), tuple(float(v) for v in b))  # type: ignore[arg-type]
                for b, s, c in zip(boxes, scores, labels)
            ]
            for boxes, scores, labels in raw
        ]
