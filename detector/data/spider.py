"""SPIDER-layout volume data sets: one box per visible disc per sagittal slice, labelled from gradings.

Layout (SPIDER, Zenodo 10159290, or any set written the same way)::

    root/images/<patient>_<sequence>.mha   # or .mhd (+ raw), .nii, .nii.gz
    root/masks/<patient>_<sequence>.mha    # same name; integer labels: vertebrae 1..N, canal 100,
                                           # discs 201.. counted from the bottom (201 = lowest disc)
    root/radiological_gradings.csv         # one row per (Patient, IVD label); IVD label k = mask 200 + k
    root/overview.csv                      # optional: SPIDER's new_file_name, subset (split = "official")
    root/spider.toml                       # optional settings (``SpiderConfig``), see docs/data.md

Mask values 201-299 are discs; the level map names them (explicit, default ``cervical``: 201 =
C7-T1 ... 206 = C2-C3); the label policy turns a disc's gradings row into our class. A missing
or unknown grade raises an error naming the file and row, or (``missing = "skip"``) warns and
drops every slice that shows that disc. Patients, never slices or sequences, are split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from detector.data.common import Target, make_target
from detector.data.volumes import disc_boxes, grid_difference, is_volume_file, read_volume, to_sagittal, volume_stem
from detector.types import CLASS_NAMES

SPINE_UP = (
    "S1",
    "L5",
    "L4",
    "L3",
    "L2",
    "L1",
    *(f"T{i}" for i in range(12, 0, -1)),
    *(f"C{i}" for i in range(7, 1, -1)),
)
LEVEL_PRESETS = {"cervical": "C7-T1", "lumbar": "L5-S1"}  # name of mask label 201, the lowest disc
FIRST_DISC = 201
DEFAULT_GRADES = {
    "normal": "normal_disc",
    "normal_disc": "normal_disc",
    "bulge": "normal_disc",
    "bulging": "normal_disc",
    "protrusion": "herniation",
    "extrusion": "herniation",
    "sequestration": "herniation",
    "herniation": "herniation",
}
CONFIG_FILE = "spider.toml"


def level_map(lowest: str = "C7-T1", first: int = FIRST_DISC) -> dict[int, str]:
    """Mask label -> level name, discs counted from the bottom: ``first`` is ``lowest``, ``first + 1``
    the disc above it, ... up to C2-C3 (``level_map("L5-S1")``: 201 L5-S1, 202 L4-L5, ...)."""
    upper, _, lower = lowest.strip().upper().partition("-")
    at = SPINE_UP.index(lower) if lower in SPINE_UP else -1
    if at < 0 or at + 1 >= len(SPINE_UP) or SPINE_UP[at + 1] != upper:
        raise ValueError(f"level map: {lowest!r} is not a disc name such as 'C7-T1' or 'L5-S1'")
    return {first + n: f"{SPINE_UP[at + n + 1]}-{SPINE_UP[at + n]}" for n in range(len(SPINE_UP) - at - 1)}


def parse_levels(spec: str | Mapping[str, Any] | None) -> dict[int, str]:
    """``None`` / ``"cervical"`` / ``"lumbar"`` / a lowest disc name (``"C6-C7"``) / a table
    ``{"201": "C7-T1", ...}`` (optionally with ``lowest``, which the numbered keys override)."""
    if spec is None or isinstance(spec, str):
        return level_map(LEVEL_PRESETS.get(spec or "cervical", spec or ""))
    out = level_map(str(spec["lowest"])) if "lowest" in spec else {}
    for key, name in spec.items():
        if key == "lowest":
            continue
        if not str(key).isdigit() or not FIRST_DISC <= int(key) <= 299:
            raise ValueError(f"level map: key {key!r} is not a disc mask label 201..299")
        out[int(key)] = str(name)
    return out


def patient_key(value: object) -> str:
    """Patient ids compare as text, numbers without leading zeros (``"007"`` == ``7``)."""
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


@dataclass(frozen=True)
class LabelPolicy:
    """How a gradings row becomes our class (``detector.types.CLASS_NAMES``).

    With ``grade_column`` the row's text grade is looked up in ``grades`` (case-insensitive);
    without it SPIDER's binary columns decide: ``herniation_column`` 1 -> herniation, 0 ->
    normal_disc (``bulging_column`` 1 with herniation 0 -> the ``bulging`` class, normal_disc by
    default). ``missing``: "error" (default) or "skip" for rows and discs without a valid grade.
    """

    grade_column: str | None = None
    grades: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_GRADES))
    herniation_column: str = "Disc herniation"
    bulging_column: str = "Disc bulging"
    bulging: str = "normal_disc"
    missing: str = "error"

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.grades.items() if v not in CLASS_NAMES}
        if bad or self.bulging not in CLASS_NAMES:
            raise ValueError(f"label policy: classes must be one of {CLASS_NAMES}, got {bad or self.bulging!r}")
        if self.missing not in ("error", "skip"):
            raise ValueError(f"label policy: missing must be 'error' or 'skip', got {self.missing!r}")

    @property
    def columns(self) -> list[str]:
        return [self.grade_column] if self.grade_column else [self.herniation_column]

    def classify(self, row: Mapping[str, str | None]) -> int:
        """Class index of one gradings row; ``ValueError`` saying what is wrong with it."""
        if self.grade_column:
            grade = (row.get(self.grade_column) or "").strip().lower()
            lookup = {k.strip().lower(): v for k, v in self.grades.items()}
            if grade not in lookup:
                raise ValueError(f"{self.grade_column} {grade!r} is not in the label policy {sorted(lookup)}")
            return CLASS_NAMES.index(lookup[grade])
        hern = _binary(row.get(self.herniation_column))
        if hern is None:
            raise ValueError(f"{self.herniation_column} is {row.get(self.herniation_column)!r}, not 0 or 1")
        if hern:
            return CLASS_NAMES.index("herniation")
        if self.bulging != "normal_disc":
            bulge = _binary(row.get(self.bulging_column))
            if bulge is None:
                raise ValueError(f"{self.bulging_column} is {row.get(self.bulging_column)!r}, not 0 or 1")
            if bulge:
                return CLASS_NAMES.index(self.bulging)
        return CLASS_NAMES.index("normal_disc")


def _binary(value: str | None) -> bool | None:
    try:
        number = float((value or "").strip())
    except ValueError:
        return None
    return bool(number) if number in (0.0, 1.0) else None


Gradings = dict[tuple[str, int], int | None]  # (patient, IVD label) -> class, None = skipped


def read_gradings(path: Path, policy: LabelPolicy) -> Gradings:
    """The gradings CSV (``Patient``, ``IVD label`` and the policy's columns) -> classes."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no gradings file (set 'gradings' in {CONFIG_FILE})")
    out: Gradings = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        absent = [c for c in ["Patient", "IVD label", *policy.columns] if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{path}: no column(s) {absent}; its columns are {reader.fieldnames}")
        for row in reader:
            where = f"{path}, line {reader.line_num} (Patient {row['Patient']!r}, IVD label {row['IVD label']!r})"
            try:
                key = (patient_key(row["Patient"]), int(float(row["IVD label"] or "")))
            except ValueError:
                raise ValueError(f"{where}: IVD label is not a number") from None
            if key in out:
                raise ValueError(f"{where}: a second row for this patient and disc")
            try:
                out[key] = policy.classify(row)
            except ValueError as exc:
                if policy.missing != "skip":
                    raise ValueError(f"{where}: {exc}") from None
                warnings.warn(f"{where}: {exc}; skipped (slices showing this disc are dropped)", stacklevel=2)
                out[key] = None
    return out


@dataclass(frozen=True)
class SpiderConfig:
    """Settings of a SPIDER-layout folder (``root/spider.toml`` or a TOML file naming ``root``)."""

    levels: dict[int, str] = field(default_factory=level_map)
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    gradings: str = "radiological_gradings.csv"
    sequences: tuple[str, ...] = ()  # e.g. ("t2",): only these series; empty = all
    val_fraction: float = 0.2
    seed: int = 0
    split: str = "hash"  # or "official": overview.csv's subset column
    min_fraction: float = 0.3  # a disc is boxed where it shows >= this share of its largest section
    keep_empty: bool = True  # slices without a disc stay, as negatives

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = CONFIG_FILE) -> SpiderConfig:
        known = {f.name for f in fields(cls)} - {"policy"} | {"labels"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        kw: dict[str, Any] = {k: v for k, v in data.items() if k not in ("levels", "labels")}
        kw["levels"] = parse_levels(data.get("levels"))
        labels = dict(data.get("labels", {}))
        if "grades" in labels:
            labels["grades"] = {**DEFAULT_GRADES, **labels["grades"]}
        try:
            kw["policy"] = LabelPolicy(**labels)
        except TypeError as exc:
            raise ValueError(f"{where}: [labels]: {exc}") from None
        kw["sequences"] = tuple(str(s) for s in kw.get("sequences", ()))
        if kw.get("split", "hash") not in ("hash", "official"):
            raise ValueError(f"{where}: split must be 'hash' or 'official', got {kw['split']!r}")
        return cls(**kw)


def load_config(spec: str | Path) -> tuple[Path, SpiderConfig]:
    """A folder (with an optional ``spider.toml``) or a TOML file (``root = "..."``, relative
    to the file, default its folder) -> (root, settings)."""
    path = Path(spec)
    toml = path if path.is_file() else path / CONFIG_FILE
    if not toml.is_file():
        if not path.is_dir():
            raise FileNotFoundError(f"{spec}: neither a SPIDER-layout folder nor a {CONFIG_FILE}-style TOML file")
        return path, SpiderConfig()
    with toml.open("rb") as fh:
        data = tomllib.load(fh)
    return toml.parent / str(data.pop("root", ".")), SpiderConfig.from_dict(data, str(toml))


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
