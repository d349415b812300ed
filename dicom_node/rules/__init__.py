"""Series selection rules: a TOML file of ``[[rules]]``, loaded once into typed models.

``load_rules`` refuses a malformed file at start (``RulesError`` naming the rule and the
field), so evaluating a loaded rule on a series cannot fail. The conditions and their
semantics (``matches`` is anchored: ``re.fullmatch``) are in :mod:`dicom_node.rules.conditions`.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dicom_node.rules.conditions import (
    KNOWN_FIELDS,
    SELECTION_FIELDS,
    Condition,
    Fields,
    orientation_plane,
)

__all__ = [
    "KNOWN_FIELDS",
    "SELECTION_FIELDS",
    "Condition",
    "Rule",
    "RulesError",
    "load_rules",
    "orientation_plane",
    "parse_rules",
]


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the rule and the field."""


class Rule(BaseModel):
    """One ``[[rules]]`` table: every rule must hold for a series to be selected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    when: Condition

    @model_validator(mode="after")
    def _describe(self) -> Rule:
        if not self.description:
            object.__setattr__(self, "description", self.name)
        return self

    def holds(self, fields: Fields) -> bool:
        return self.when.holds(fields)


def load_rules(path: Path | None = None) -> list[Rule]:
    """Rules from ``path``, or the built-in ``rules/default.toml``; RulesError if malformed."""
    if path is None:
        source = "default rules"
        text = resources.files("dicom_node.rules").joinpath("default.toml").read_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RulesError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from exc
    return parse_rules(data, source)


def parse_rules(data: dict[str, Any], source: str = "rules") -> list[Rule]:
    """Typed rules from a parsed rules file (``{"rules": [{name, description, when}, ...]}``)."""
    raw = data.get("rules")
    if not raw:
        raise RulesError(f"no [[rules]] in {source}")
    if not isinstance(raw, list):
        raise RulesError(f"{source}: 'rules' must be an array of tables ([[rules]])")
    rules = []
    for index, item in enumerate(raw):
        label = _label(item, index)
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as exc:
            raise RulesError(f"{source}: rule {label}: {_describe(exc)}") from None
    names = [rule.name for rule in rules]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RulesError(f"{source}: rule names must be unique, repeated: {', '.join(repeated)}")
    return rules


def _label(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"{name!r} (#{index + 1})" if isinstance(name, str) and name else f"#{index + 1}"


def _describe(exc: ValidationError) -> str:
    """Each error as ``when.any[1].matches: why`` (the union's tags left out of the path)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where, tag_next = "", False
        for part in error["loc"]:
            if isinstance(part, int):
                where, tag_next = f"{where}[{part}]", True
                continue
            if not (tag_next and part in _TAGS):
                where = f"{where}.{part}" if where else str(part)
            tag_next = part == "when"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where or 'rule'}: {message}")
    return "; ".join(lines)


_TAGS = {"any", "all", "orientation", "in", "matches", "range"}
