"""The conditions of a selection rule, as typed models checked when the rules file is loaded.

A condition is one of the TOML tables below; which one is told by its keys. Unknown keys,
unknown fields, empty lists, a bad regex or ``min > max`` are refused at load, so a rule that
loads cannot fail later on the series it is evaluated on.

- ``{ field = "Name", in = [..] }``: the value (stripped, case-insensitive) is one of the list
- ``{ field = "Name", matches = "regex" }``: the *whole* text value matches (``re.fullmatch``:
  write ``.*t2.*``, not ``t2``, to find a word inside a description)
- ``{ field = "Name", min = x, max = y }``: a numeric range, either bound optional
- ``{ orientation = "sagittal" }``: the plane of ImageOrientationPatient
- ``{ any = [cond, ...] }`` / ``{ all = [cond, ...] }``
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Fields = Mapping[str, Any]
Plane = Literal["axial", "coronal", "sagittal"]

#: Header fields the rules can read (``dicom_node.selection.series_fields`` provides them).
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
#: Derived: instances in the series x frames per instance.
DERIVED_FIELDS = ("SliceCount",)
KNOWN_FIELDS = SELECTION_FIELDS + DERIVED_FIELDS


def orientation_plane(iop: Any) -> Plane | None:
    """'axial', 'coronal' or 'sagittal' from ImageOrientationPatient (largest normal axis)."""
    try:
        rx, ry, rz, cx, cy, cz = (float(v) for v in iop)
    except (TypeError, ValueError):
        return None
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    axis = max(range(3), key=lambda i: abs(normal[i]))
    planes: tuple[Plane, Plane, Plane] = ("sagittal", "coronal", "axial")
    return planes[axis]


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def holds(self, fields: Fields) -> bool:
        raise NotImplementedError


class _FieldCondition(_Condition):
    field: str

    @field_validator("field")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in KNOWN_FIELDS:
            raise ValueError(f"unknown field {value!r}; known: {', '.join(KNOWN_FIELDS)}")
        return value

    def values(self, fields: Fields) -> list[Any]:
        """The field's value(s); empty when it is missing or blank."""
        value = fields.get(self.field)
        if value is None or value == "" or value == []:
            return []
        return list(value) if isinstance(value, list) else [value]


class InList(_FieldCondition):
    """``in``: the value, stripped and upper-cased, is one of the list (also upper-cased)."""

    allowed: frozenset[str] = Field(alias="in", min_length=1)

    @field_validator("allowed", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple, set, frozenset)):
            return frozenset(str(v).strip().upper() for v in value)
        return value

    def holds(self, fields: Fields) -> bool:
        return any(str(v).strip().upper() in self.allowed for v in self.values(fields))


class Matches(_FieldCondition):
    """``matches``: a regex, compiled at load, that must match a whole text value."""

    pattern: re.Pattern[str] = Field(alias="matches")

    @field_validator("pattern", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string (a Python regular expression)")
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None

    def holds(self, fields: Fields) -> bool:
        return any(self.pattern.fullmatch(str(v)) for v in self.values(fields))


class Range(_FieldCondition):
    """``min`` / ``max``: the first value, as a number, lies within the bounds (inclusive)."""

    low: float | None = Field(None, alias="min")
    high: float | None = Field(None, alias="max")

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"min ({self.low:g}) is above max ({self.high:g})")
        return self

    def holds(self, fields: Fields) -> bool:
        values = self.values(fields)
        try:
            number = float(values[0])
        except (IndexError, TypeError, ValueError):
            return False
        low = float("-inf") if self.low is None else self.low
        high = float("inf") if self.high is None else self.high
        return low <= number <= high


class Orientation(_Condition):
    """``orientation``: the plane of the first instance's ImageOrientationPatient."""

    orientation: Plane

    def holds(self, fields: Fields) -> bool:
        return orientation_plane(fields.get("ImageOrientationPatient")) == self.orientation


class AnyOf(_Condition):
    """``any``: at least one of the conditions holds."""

    conditions: list[Condition] = Field(alias="any", min_length=1)

    def holds(self, fields: Fields) -> bool:
        return any(c.holds(fields) for c in self.conditions)


class AllOf(_Condition):
    """``all``: every condition holds."""

    conditions: list[Condition] = Field(alias="all", min_length=1)

    def holds(self, fields: Fields) -> bool:
        return all(c.holds(fields) for c in self.conditions)


_TAGS: Sequence[tuple[str, str]] = (
    ("any", "any"),
    ("all", "all"),
    ("orientation", "orientation"),
    ("in", "in"),
    ("matches", "matches"),
    ("min", "range"),
    ("max", "range"),
)


def _condition_kind(value: Any) -> str | None:
    """Which condition a TOML table is, from its keys (the first of _TAGS present)."""
    if isinstance(value, _Condition):
        return _KIND_OF[type(value)]
    if not isinstance(value, Mapping):
        return None
    return next((tag for key, tag in _TAGS if key in value), None)


Condition = Annotated[
    Annotated[AnyOf, Tag("any")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[Orientation, Tag("orientation")]
    | Annotated[InList, Tag("in")]
    | Annotated[Matches, Tag("matches")]
    | Annotated[Range, Tag("range")],
    Discriminator(
        _condition_kind,
        custom_error_type="condition",
        custom_error_message="a condition needs field + in, matches or min/max; orientation; any; or all",
    ),
]
_KIND_OF: dict[type[_Condition], str] = {
    AnyOf: "any",
    AllOf: "all",
    Orientation: "orientation",
    InList: "in",
    Matches: "matches",
    Range: "range",
}

AnyOf.model_rebuild()
AllOf.model_rebuild()
