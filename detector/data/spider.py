"""SPIDER-layout volume data sets: one box per visible disc per sagittal slice, labelled from gradings.

Layout (SPIDER, Zenodo 10159290, or any set written the same way)::

    root/images/<patient>_<sequence>.mha   # or .mhd (+ raw), .nii, .nii.gz
    root/masks/<patient>_<sequence>.mha    # same name; integer labels: vertebrae 1..N, canal 100,
                                           # discs 201.. counted from the bottom (201 = lowest disc)
    root/radiological_gradings.csv         # one row per (Patient, IVD label); IVD label k = mask 200 + k
    root/overview.csv                      # optional: SPIDER's new_file_name, subset (split = "official")
    root/spider.toml                       # optional settings (``SpiderConfig``), see docs/data.md

The settings, the level map (mask value -> disc name) and the label policy (gradings row ->
class) are in ``detector.data.spider_config``. Here: finding the series, splitting patients,
boxing and labelling each series' discs, and the slice dataset. A disc whose grade is skipped
(``missing = "skip"``) drops every slice that shows it. Patients, never slices or sequences,
are split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.data.common import Target, make_target
from detector.data.spider_config import CONFIG_FILE, Gradings, SpiderConfig, load_config, patient_key, read_gradings
from detector.data.volumes import disc_boxes, grid_difference, is_volume_file, read_volume, to_sagittal, volume_stem


@dataclass(frozen=True)
class Case:
    """One series: ``images/<name>.*`` and its mask ``masks/<name>.*``."""

    name: str  # file stem, "<patient>_<sequence>"
    patient: str
    sequence: str
    image: Path
    mask: Path


def find_cases(root: Path, sequences: Sequence[str] = ()) -> list[Case]:
    """Image/mask pairs under ``root/images`` and ``root/masks``, by file name."""
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"{root}: expected images/ and masks/ folders (SPIDER layout)")
    mask_by_stem = {volume_stem(p): p for p in masks.iterdir() if is_volume_file(p)}
    wanted = {s.lower() for s in sequences}
    cases = []
    for image in sorted(p for p in images.iterdir() if is_volume_file(p)):
        stem = volume_stem(image)
        patient, _, sequence = stem.partition("_")
        if wanted and sequence.lower() not in wanted:
            continue
        if stem not in mask_by_stem:
            raise FileNotFoundError(f"{image}: no mask {masks / stem}.* (.mha/.mhd/.nii/.nii.gz) beside it")
        cases.append(Case(stem, patient_key(patient), sequence, image, mask_by_stem[stem]))
    if not cases:
        raise ValueError(f"{images}: no volumes" + (f" of sequence(s) {sorted(wanted)}" if wanted else ""))
    return cases


def split_patients(ids: Iterable[object], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Patients -> (train, validation), disjoint and deterministic: patients ranked by
    sha256(f"{seed}:{patient}"), the first ``round(n * val_fraction)`` validate (at least one
    on each side when 0 < val_fraction < 1 and there are two patients or more)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction {val_fraction} is not within 0..1")
    unique = sorted({patient_key(i) for i in ids})
    n_val = round(len(unique) * val_fraction)
    if 0 < val_fraction < 1 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    ranked = sorted(unique, key=lambda p: (hashlib.sha256(f"{seed}:{p}".encode()).hexdigest(), p))
    val = set(ranked[:n_val])
    return [p for p in unique if p not in val], [p for p in unique if p in val]


def official_split(root: Path, patients: Iterable[str]) -> tuple[list[str], list[str]]:
    """SPIDER's own split: a patient validates when overview.csv's ``subset`` says validation."""
    path = root / "overview.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split = 'official' needs SPIDER's overview.csv")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"new_file_name", "subset"} <= set(rows[0]):
        raise ValueError(f"{path}: split = 'official' needs the columns new_file_name and subset")
    val = {patient_key(r["new_file_name"].partition("_")[0]) for r in rows if "val" in (r["subset"] or "").lower()}
    unique = sorted(set(patients))
    return [p for p in unique if p not in val], [p for p in unique if p in val]


@dataclass(frozen=True)
class LabelledVolume:
    """One series in the canonical view with its discs (slice k: ``boxes[k]``, ``labels[k]``, ...)."""

    case: Case
    volume: np.ndarray | None  # float32 [S, H, W]; None in the dataset's mask-only index
    pixel_spacing: tuple[float, float]  # (row mm, column mm), shared by every slice
    slice_spacing: float  # mm
    boxes: list[np.ndarray]  # per slice float32 [N, 4] x0, y0, x1, y1 pixels
    labels: list[np.ndarray]  # per slice int64 [N]: 0 herniation, 1 normal_disc
    levels: list[list[str]]  # per slice, the level name of each box
    discs: dict[str, int | None]  # level -> class for the whole series (None: grade skipped)
    unlabelled: list[bool]  # slice shows a disc whose grade was skipped
    grid: tuple[tuple[int, ...], tuple[float, ...], np.ndarray]  # mask shape, spacing, direction


def label_case(case: Case, config: SpiderConfig, gradings: Gradings, gradings_path: Path) -> LabelledVolume:
    """Read ``case``'s mask and name and label its discs (the image is not read)."""
    mask_vol = read_volume(case.mask)
    mask = to_sagittal(mask_vol, dtype=None)
    per_slice = disc_boxes(mask.volume, min_fraction=config.min_fraction)
    classes: dict[int, int | None] = {}
    for value in sorted({v for s in per_slice for v in s}):
        if value not in config.levels:
            raise ValueError(
                f"{case.mask}: disc label {value} is not in the level map {sorted(config.levels)}"
                f" (set 'levels' in {CONFIG_FILE}; docs/data.md)"
            )
        key = (case.patient, value - 200)
        if key not in gradings:
            msg = f"{gradings_path}: no row for Patient {case.patient}, IVD label {value - 200} ({config.levels[value]}, in {case.mask})"
            if config.policy.missing != "skip":
                raise ValueError(msg)
            warnings.warn(msg + "; skipped (slices showing this disc are dropped)", stacklevel=2)
        classes[value] = gradings.get(key)
    boxes, labels, levels, unlabelled = [], [], [], []
    for on_slice in per_slice:
        graded = [v for v in sorted(on_slice, key=lambda v: on_slice[v][1]) if classes[v] is not None]  # top down
        boxes.append(np.asarray([on_slice[v] for v in graded], dtype=np.float32).reshape(-1, 4))
        labels.append(np.asarray([classes[v] for v in graded], dtype=np.int64))
        levels.append([config.levels[v] for v in graded])
        unlabelled.append(len(graded) < len(on_slice))
    return LabelledVolume(
        case,
        None,
        mask.pixel_spacing,
        mask.slice_spacing,
        boxes,
        labels,
        levels,
        {config.levels[v]: c for v, c in classes.items()},
        unlabelled,
        (mask_vol.array.shape, mask_vol.spacing, mask_vol.direction),
    )


class VolumeSliceDataset:
    """Sagittal slices of SPIDER-layout volumes; item = (image float32 [H, W], {boxes, labels}).

    Map-style like ``SyntheticSliceDataset`` (no torch import). Masks are read once here (boxes,
    labels and errors come up front); images are read when an item asks, one volume cached, so
    reading items in order (as ``detector.train`` does) reads each volume once.
    ``patients``: keep only these (e.g. one side of ``split_patients``); ``volume(k)`` gives
    series ``k`` whole, for a second-stage crop classifier.
    """

    def __init__(
        self, root: str | Path, config: SpiderConfig | None = None, patients: Iterable[object] | None = None
    ) -> None:
        self.root = Path(root)
        if config is None:
            self.root, config = load_config(root)
        self.config = config
        cases = find_cases(self.root, config.sequences)
        if patients is not None:
            keep = {patient_key(p) for p in patients}
            cases = [c for c in cases if c.patient in keep]
        gradings_path = self.root / config.gradings
        gradings = read_gradings(gradings_path, config.policy) if cases else {}
        self.cases = cases
        self.series = [label_case(c, config, gradings, gradings_path) for c in cases]
        self.index = [
            (ci, k)
            for ci, lv in enumerate(self.series)
            for k in range(len(lv.boxes))
            if not lv.unlabelled[k] and (config.keep_empty or len(lv.boxes[k]))
        ]
        self._cached: tuple[int, np.ndarray] | None = None

    @property
    def patients(self) -> list[str]:
        return sorted({c.patient for c in self.cases})

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Target]:
        if not 0 <= i < len(self.index):
            raise IndexError(i)
        ci, k = self.index[i]
        lv = self.series[ci]
        image = self._image(ci)[k]
        return image, make_target(lv.boxes[k], lv.labels[k], image.shape, where=f"{lv.case.mask} slice {k}")

    def case_of(self, i: int) -> Case:
        """The series item ``i`` comes from."""
        return self.cases[self.index[i][0]]

    def volume(self, k: int | str) -> LabelledVolume:
        """Series ``k`` (index or name such as ``"12_t2"``) with its canonical float32 volume."""
        ci = k if isinstance(k, int) else next((j for j, c in enumerate(self.cases) if c.name == k), -1)
        if not 0 <= ci < len(self.cases):
            raise KeyError(f"{self.root}: no series {k!r}")
        return dataclasses.replace(self.series[ci], volume=self._image(ci))

    def _image(self, ci: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != ci:
            case, lv = self.cases[ci], self.series[ci]
            vol = read_volume(case.image)
            differs = grid_difference(vol, *lv.grid)
            if differs:
                raise ValueError(f"{case.image}: not on the grid of its mask {case.mask} ({differs})")
            self._cached = (ci, to_sagittal(vol).volume)
        return self._cached[1]


def spider_datasets(spec: str | Path) -> tuple[VolumeSliceDataset, VolumeSliceDataset]:
    """(train, validation) of a SPIDER-layout folder or TOML, split by patient per its settings."""
    root, config = load_config(spec)
    patients = {c.patient for c in find_cases(root, config.sequences)}
    if config.split == "official":
        train_ids, val_ids = official_split(root, patients)
    else:
        train_ids, val_ids = split_patients(patients, config.val_fraction, config.seed)
    return VolumeSliceDataset(root, config, train_ids), VolumeSliceDataset(root, config, val_ids)
