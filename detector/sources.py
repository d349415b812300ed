"""Turn a ``--data`` spec into train / validation datasets.

Specs: ``synthetic`` (normal and hard slices mixed by ``train.hard_fraction``, ``train.varied``
of them with the second stage's wider variety; validation on hard slices of the plain
generator), ``synthetic:hard`` (hard only), or a folder in COCO-json or YOLO-txt layout. A
folder with ``train/`` and ``val/`` subfolders uses them; otherwise every tenth item validates.
``spider:PATH`` (or a folder holding ``images/`` + ``masks/`` with .mha/.nii volumes) is a
SPIDER-layout volume set (``detector.data.spider``), split by patient per its ``spider.toml``;
``meddet evaluate`` scores its validation patients.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

from torch.utils.data import ConcatDataset, Dataset, Subset

from detector.config import TrainConfig

VAL_SEED_OFFSET = 1_000_003  # validation slices never share a seed with training slices


class SliceDataset(Protocol):
    """Map-style: ``len(ds)`` and ``ds[i] -> (image float32 [H, W], {"boxes", "labels"})``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


def synthetic_split(tc: TrainConfig, hard_only: bool = False) -> tuple[SliceDataset, SliceDataset]:
    from detector.data.synthetic import SyntheticSliceDataset

    variety: dict[str, Any] = {}
    if tc.varied:  # the second stage's widened necks and random T2 looks (docs/results.md)
        from detector.data.render import sample_contrast, t2_random_contrast
        from detector.discs.samples import widen

        tissues = t2_random_contrast if tc.varied_tissues else sample_contrast
        variety = {"varied": tc.varied, "adjust": widen, "contrast_of": tissues}
    n_other = round(tc.train_images * tc.other_generator)  # the second training generator's
    n_ours = tc.train_images - n_other
    n_hard = n_ours if hard_only else round(n_ours * tc.hard_fraction)
    variety["random_look"] = tc.random_look
    parts: list[SliceDataset] = [SyntheticSliceDataset(n_hard, tc.seed * 2 + 1, hard=True, **variety)]
    if n_ours - n_hard > 0:
        parts.append(SyntheticSliceDataset(n_ours - n_hard, tc.seed * 2, hard=False, **variety))
    if n_other:
        from detector.other_slices import OtherGeneratorSlices

        other_hard = n_other if hard_only else n_other // 2
        parts.append(OtherGeneratorSlices(other_hard, tc.seed * 2 + 1, hard=True))
        if n_other - other_hard:
            parts.append(OtherGeneratorSlices(n_other - other_hard, tc.seed * 2, hard=False))
    val = SyntheticSliceDataset(tc.val_images, tc.seed + VAL_SEED_OFFSET, hard=True)
    return ConcatDataset(cast("list[Dataset[Any]]", parts)), val


SPIDER_PREFIX = "spider:"


def is_volume_folder(root: Path) -> bool:
    """A SPIDER-layout folder: ``images/`` with .mha/.mhd/.nii(.gz) volumes beside ``masks/``."""
    from detector.data.volumes import is_volume_file

    return (
        (root / "masks").is_dir()
        and (root / "images").is_dir()
        and any(map(is_volume_file, (root / "images").iterdir()))
    )


def spider_spec(spec: str) -> str | None:
    """The folder or TOML a ``spider:PATH`` spec (or a bare SPIDER-layout folder) names, else None."""
    if spec.startswith(SPIDER_PREFIX):
        return spec[len(SPIDER_PREFIX) :]
    return spec if Path(spec).is_dir() and is_volume_folder(Path(spec)) else None


def folder_dataset(root: Path) -> SliceDataset:
    """A COCO (``*.json`` at the top), YOLO (``labels/`` folder) or SPIDER-layout (``images/`` +
    ``masks/`` volumes, all patients) dataset at ``root``."""
    if is_volume_folder(root):
        from detector.data.spider import VolumeSliceDataset

        return VolumeSliceDataset(root)
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
    volumes = spider_spec(spec)
    if volumes is not None:
        from detector.data.spider import spider_datasets

        return spider_datasets(volumes)
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
    volumes = spider_spec(spec)
    if volumes is not None:  # the validation patients (the split's seed lives in spider.toml)
        from detector.data.spider import spider_datasets

        return spider_datasets(volumes)[1]
    root = Path(spec)
    if (root / "val").is_dir():
        return open_folder(root / "val")
    return open_folder(root)
