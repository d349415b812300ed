"""Settings of a SPIDER-layout folder and the rules that name and class its discs.

``root/spider.toml`` (or a TOML file naming ``root``) -> :class:`SpiderConfig`, see docs/data.md.
Mask values 201-299 are discs; the level map names them (explicit, default ``cervical``: 201 =
C7-T1 ... 206 = C2-C3); the label policy turns a disc's row of ``radiological_gradings.csv``
(one row per (Patient, IVD label); IVD label k = mask 200 + k) into our class. A missing or
unknown grade raises an error naming the file and row, or (``missing = "skip"``) warns and
leaves the disc unclassed. The folder itself is read by ``detector.data.spider``.
"""

from __future__ import annotations

import csv
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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
