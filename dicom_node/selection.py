"""Series selection: rules as data (TOML), evaluated on header fields by pure functions."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

SELECTION_FIELDS = (
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "SequenceName",
    "ScanningSequence",
    "EchoTime",
    "RepetitionTime",
    "ImageOrientationPatient",
)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    when: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    selected: bool
    failed_rule: str | None = None
    detail: str | None = None


def load_rules(path: Path | None = None) -> list[Rule]:
    """Rules from ``path``, or the built-in ``rules/default.toml``; errors name the bad rule."""
    if path is None:
        text = resources.files("dicom_node.rules").joinpath("default.toml").read_text()
    else:
        text = Path(path).read_text()
    raw = tomllib.loads(text).get("rules")
    if not raw:
        raise ValueError(f"no [[rules]] in {path or 'default rules'}")
    rules = []
    for index, item in enumerate(raw):
        if "name" not in item or "when" not in item:
            raise ValueError(f"rule #{index + 1} needs 'name' and 'when'")
        _validate(item["when"], item["name"])
        rules.append(Rule(item["name"], item.get("description", item["name"]), item["when"]))
    return rules


def _validate(cond: dict[str, Any], rule: str) -> None:
    if "any" in cond or "all" in cond:
        for sub in cond.get("any", cond.get("all")):
            _validate(sub, rule)
    elif "orientation" in cond:
        if cond["orientation"] not in {"axial", "coronal", "sagittal"}:
            raise ValueError(f"rule {rule!r}: orientation must be axial, coronal or sagittal")
    elif "field" not in cond or not ({"in", "matches", "min", "max"} & cond.keys()):
        raise ValueError(f"rule {rule!r}: condition {cond} needs field + in/matches/min/max")


def _first_in_functional_groups(ds: Dataset, sequence: str, keyword: str) -> Any:
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(groups, [])[:1]:
            for item in group.get(sequence, [])[:1]:
                if keyword in item:
                    return item.get(keyword)
    return None


def slice_count(ds: Dataset, n_instances: int) -> int:
    """Slices in a series of ``n_instances`` like ``ds``: instances x frames per instance."""
    try:
        frames = max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        frames = 1
    return n_instances * frames


def series_fields(ds: Dataset, n_instances: int | None = None) -> dict[str, Any]:
    """Header fields the rules read, from a classic or an Enhanced (multi-frame) instance.

    With ``n_instances`` (the series' instance count) the derived field ``SliceCount`` is set.
    """
    fields = {name: ds.get(name) for name in SELECTION_FIELDS}
    if fields["ImageOrientationPatient"] is None:
        fields["ImageOrientationPatient"] = _first_in_functional_groups(
            ds, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
    if fields["EchoTime"] is None:
        fields["EchoTime"] = _first_in_functional_groups(ds, "MREchoSequence", "EffectiveEchoTime")
    if fields["RepetitionTime"] is None:
        fields["RepetitionTime"] = _first_in_functional_groups(
            ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime"
        )
    plain = {k: _plain(v) for k, v in fields.items()}
    if n_instances is not None:
        plain["SliceCount"] = slice_count(ds, n_instances)
    return plain


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if type(value).__name__ in ("DSfloat", "IS", "DSdecimal") else str(value)
    except (TypeError, ValueError):
        return str(value)


def orientation_plane(iop: Any) -> str | None:
    """'axial', 'coronal' or 'sagittal' from ImageOrientationPatient (largest normal axis)."""
    try:
        rx, ry, rz, cx, cy, cz = (float(v) for v in iop)
    except (TypeError, ValueError):
        return None
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    axis = max(range(3), key=lambda i: abs(normal[i]))
    return ("sagittal", "coronal", "axial")[axis]


def _holds(cond: dict[str, Any], fields: dict[str, Any]) -> bool:
    if "any" in cond:
        return any(_holds(sub, fields) for sub in cond["any"])
    if "all" in cond:
        return all(_holds(sub, fields) for sub in cond["all"])
    if "orientation" in cond:
        return orientation_plane(fields.get("ImageOrientationPatient")) == cond["orientation"]
    value = fields.get(cond["field"])
    if value is None or value == "" or value == []:
        return False
    values = value if isinstance(value, list) else [value]
    if "in" in cond:
        allowed = {str(v).upper() for v in cond["in"]}
        return any(str(v).strip().upper() in allowed for v in values)
    if "matches" in cond:
        return any(re.search(cond["matches"], str(v)) for v in values)
    try:
        number = float(values[0])
    except (TypeError, ValueError):
        return False
    return cond.get("min", float("-inf")) <= number <= cond.get("max", float("inf"))


def evaluate(rules: list[Rule], fields: dict[str, Any]) -> Decision:
    """Apply every rule; the first that fails is the reason the series is skipped."""
    for rule in rules:
        if not _holds(rule.when, fields):
            return Decision(False, rule.name, rule.description)
    return Decision(True)
