"""Series selection: the rules (:mod:`dicom_node.rules`) evaluated on header fields, purely."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.rules import SELECTION_FIELDS, Rule, RulesError, load_rules, orientation_plane

__all__ = [
    "Decision",
    "Rule",
    "RulesError",
    "evaluate",
    "load_rules",
    "orientation_plane",
    "series_fields",
    "slice_count",
]


@dataclass(frozen=True)
class Decision:
    selected: bool
    failed_rule: str | None = None
    detail: str | None = None


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


def evaluate(rules: list[Rule], fields: dict[str, Any]) -> Decision:
    """Apply every rule; the first that fails is the reason the series is skipped."""
    for rule in rules:
        if not rule.holds(fields):
            return Decision(False, rule.name, rule.description)
    return Decision(True)
