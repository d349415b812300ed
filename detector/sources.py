"""Turn a ``--data`` spec into train / validation datasets.

Specs: ``synthetic`` (normal and hard slices mixed by ``train.hard_fraction``; validation on
hard slices), ``synthetic:hard`` (hard only), or a folder in COCO-json or YOLO-txt layout. A
folder with ``train/`` and ``val/`` subfolders uses them; otherwise every tenth item validates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset, Subset

from detector.config import TrainConfig

VAL_SEED_OFFSET = 1_000_003  # validation slices never share a seed with training slices


def synthetic_split(tc: TrainConfig, hard_only: bool = False) -> tuple[Dataset, Dataset]:
    from detector.data.synthetic import SyntheticSliceDataset

    n_hard = tc.train_images if hard_only else round(tc.train_images * tc.hard_fraction)
    parts: list[Dataset] = [SyntheticSliceDataset(n_hard, tc.seed * 2 + 1, hard=True)]
    if tc.train_images - n_hard > 0:
        parts.append(SyntheticSliceDataset(tc.train_images - n_hard, tc.seed * 2, hard=False))
    val = SyntheticSliceDataset(tc.val_images, tc.seed + VAL_SEED_OFFSET, hard=True)
    return ConcatDataset(parts), val


def folder_dataset(root: Path) -> Dataset:
    """A COCO (``*.json`` at the top) or YOLO (``labels/`` folder) dataset at ``root``."""
    if any(root.glob("*.json")) or any(root.glob("annotations/*.json")):
        from detector.data.coco import CocoDataset

        return CocoDataset(root)
    if (root / "labels").is_dir():
        from detector.data.yolo import YoloDataset

        return YoloDataset(root)
    raise ValueError(f"data: {root} is neither COCO (*.json) nor YOLO (labels/) layout")


FolderOpener = Callable[[Path], Any]


def resolve(spec: str, tc: TrainConfig, open_folder: FolderOpener = folder_dataset) -> tuple[Any, Any]:
    """``--data`` spec -> (train dataset, validation dataset).

    ``open_folder`` reads one folder; the CLI passes one that also knows DICOM series with a
    box file (that loader lives in ``dicom_node``, since this package never imports pydicom).
    """
    if spec in ("synthetic", "synthetic:hard"):
        return synthetic_split(tc, hard_only=spec.endswith(":hard"))
    root = Path(spec)
    if not root.is_dir():
        raise ValueError(f"data: expected 'synthetic', 'synthetic:hard' or a folder, got {spec!r}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        return open_folder(root / "train"), open_folder(root / "val")
    full = open_folder(root)
    idx = range(len(full))
    return Subset(full, [i for i in idx if i % 10]), Subset(full, [i for i in idx if i % 10 == 0])


def eval_dataset(spec: str, n: int, seed: int, open_folder: FolderOpener = folder_dataset) -> Any:
    """The dataset ``meddet evaluate`` scores: fresh synthetic slices or a whole folder."""
    from detector.data.synthetic import SyntheticSliceDataset

    if spec in ("synthetic", "synthetic:hard"):
        return SyntheticSliceDataset(n, seed, hard=spec.endswith(":hard"))
    root = Path(spec)
    if (root / "val").is_dir():
        return open_folder(root / "val")
    return open_folder(root)
