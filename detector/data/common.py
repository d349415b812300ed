"""Shared pieces of the datasets: class-name mapping, image files, box checks, ``collate``.

Item format of every dataset: ``(image float32 [H, W] raw intensities,
{"boxes": float32 [N, 4] x0 y0 x1 y1 pixels, "labels": int64 [N]})`` with label indices of
``detector.types.CLASS_NAMES`` (0 herniation, 1 normal_disc).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.types import CLASS_NAMES

# names that real data sets use for our two classes (CDH-1848 calls the second one "normal")
ALIASES = {
    "herniation": 0,
    "hernia": 0,
    "disc_herniation": 0,
    "herniated": 0,
    "herniated_disc": 0,
    "normal_disc": 1,
    "normal": 1,
    "disc": 1,
    "normal disc": 1,
    "healthy": 1,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")

Target = dict[str, np.ndarray]


def class_index(name: str) -> int:
    """Our class index for a data set's class name; a clear error for an unknown one."""
    key = name.strip().lower().replace("-", "_")
    if key in ALIASES:
        return ALIASES[key]
    if key.replace("_", " ") in ALIASES:
        return ALIASES[key.replace("_", " ")]
    raise ValueError(f"class name {name!r}: not one of {CLASS_NAMES} (or aliases {sorted(ALIASES)})")


def read_image(path: Path) -> np.ndarray:
    """A 2-D image file (PNG/JPEG/TIFF, 8 or 16 bit, or .npy) -> float32 [H, W]."""
    if path.suffix.lower() == ".npy":
        arr = np.load(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3:  # RGB(A) exports of grey MR: average the colour channels
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    return arr


def make_target(
    boxes: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    shape: tuple[int, int],
    where: str = "",
) -> Target:
    """Boxes clipped to the image and checked (x1 > x0, y1 > y0), as the item's target dict."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(b) != len(lab):
        raise ValueError(f"{where}: {len(b)} boxes but {len(lab)} labels")
    h, w = shape
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    bad = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bad.any():
        raise ValueError(f"{where}: empty or inverted box {b[bad][0].tolist()} (x0, y0, x1, y1)")
    if len(lab) and (lab.min() < 0 or lab.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{where}: label outside 0..{len(CLASS_NAMES) - 1}")
    return {"boxes": b, "labels": lab}


def collate(batch: Sequence[tuple[Any, Target]]) -> tuple[Any, list[dict[str, Any]]]:
    """Batch items: images stacked into a tensor [B, 1, H, W] when they share a size (else a
    list of [1, H, W] tensors); targets as a list of dicts of tensors (boxes [N, 4], labels [N])."""
    import torch

    images = [torch.as_tensor(np.asarray(im, dtype=np.float32)) for im, _ in batch]
    images = [im[None] if im.ndim == 2 else im for im in images]
    targets = [{k: torch.as_tensor(np.asarray(v)) for k, v in t.items()} for _, t in batch]
    if len({tuple(im.shape) for im in images}) == 1:
        return torch.stack(images), targets
    return images, targets
