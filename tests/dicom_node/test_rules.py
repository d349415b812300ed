"""Typed selection rules (issue 13): checked at load, regexes compiled once, anchored matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicom_node.config import Settings
from dicom_node.rules import RulesError, load_rules, parse_rules
from dicom_node.rules.conditions import AllOf, AnyOf, InList, Matches, Orientation, Range
from dicom_node.selection import evaluate


def one_rule(when: object, name: str = "r") -> dict[str, object]:
    return {"rules": [{"name": name, "when": when}]}


def test_the_default_rules_load_as_typed_conditions_with_compiled_regexes() -> None:
    rules = {rule.name: rule for rule in load_rules()}
    assert list(rules) == ["modality_mr", "sagittal", "cervical_spine", "t2_weighted", "min_slices"]
    assert isinstance(rules["modality_mr"].when, InList)
    assert isinstance(rules["sagittal"].when, Orientation)
    assert isinstance(rules["min_slices"].when, Range) and rules["min_slices"].when.low == 5
    cervical = rules["cervical_spine"].when
    assert isinstance(cervical, AnyOf)
    patterns = [c for c in cervical.conditions if isinstance(c, Matches)]
    assert len(patterns) == 3 and all(isinstance(c.pattern, re.Pattern) for c in patterns)
    t2 = rules["t2_weighted"].when
    assert isinstance(t2, AnyOf) and isinstance(t2.conditions[-1], AllOf)


def test_matches_is_anchored_to_the_whole_value() -> None:
    rules = parse_rules(one_rule({"field": "SeriesDescription", "matches": "(?i)t2"}))
    assert evaluate(rules, {"SeriesDescription": "T2"}).selected
    assert not evaluate(rules, {"SeriesDescription": "SAG T2 TSE"}).selected  # no search
    inside = parse_rules(one_rule({"field": "SeriesDescription", "matches": "(?i).*t2.*"}))
    assert evaluate(inside, {"SeriesDescription": "SAG T2 TSE"}).selected
    assert not evaluate(inside, {"SeriesDescription": "SAG T1"}).selected


@pytest.mark.parametrize(
    "description",
    ["SAG T2 C-SPINE", "t2_tse_sag cervical", "HWS sag T2", "T2 CS"],
)
def test_default_descriptions_still_select(description: str) -> None:
    fields = {
        "Modality": "MR",
        "ImageOrientationPatient": [0, 1, 0, 0, 0, -1],
        "SeriesDescription": description,
        "SliceCount": 12,
    }
    assert evaluate(load_rules(), fields).selected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"field": "SeriesDescription", "matches": "(?i"}, r"when\.matches: invalid regular expression '\(\?i'"),
        ({"any": [{"orientation": "sagittal"}, {"field": "ProtocolName", "matches": "["}]}, r"when\.any\[1\]\.matches"),
        ({"field": "Modalty", "in": ["MR"]}, r"when\.field: unknown field 'Modalty'; known: Modality"),
        ({"field": "EchoTime", "min": 100, "max": 60}, r"when: min \(100\) is above max \(60\)"),
        ({"field": "Modality"}, r"when: a condition needs field \+ in, matches or min/max"),
        ({"orientation": "oblique"}, r"when\.orientation: Input should be 'axial', 'coronal' or 'sagittal'"),
        ({"all": []}, r"when\.all: List should have at least 1 item"),
        ({"field": "Modality", "in": ["MR"], "mathces": "x"}, r"when\.mathces: Extra inputs are not permitted"),
        ({"field": "EchoTime", "min": "long"}, r"when\.min: Input should be a valid number"),
    ],
)
def test_malformed_conditions_are_refused_naming_rule_and_field(when: object, expected: str) -> None:
    data = {"rules": [{"name": "fine", "when": {"orientation": "axial"}}, {"name": "broken", "when": when}]}
    with pytest.raises(RulesError, match=r"rule 'broken' \(#2\): " + expected):
        parse_rules(data, "rules.toml")


def test_malformed_rules_are_refused() -> None:
    with pytest.raises(RulesError, match=r"rule 'r' \(#1\): descripton: Extra inputs"):
        parse_rules({"rules": [{"name": "r", "descripton": "typo", "when": {"orientation": "axial"}}]})
    with pytest.raises(RulesError, match=r"rule #1: name: Field required"):
        parse_rules({"rules": [{"when": {"orientation": "axial"}}]})
    with pytest.raises(RulesError, match="repeated: r"):
        parse_rules({"rules": [{"name": "r", "when": {"orientation": "axial"}}] * 2})
    with pytest.raises(RulesError, match=r"no \[\[rules\]\]"):
        parse_rules({})


def test_a_bad_rules_file_stops_the_node_at_start(tmp_path: Path) -> None:
    """The rules are loaded when the Node is built: a bad regex never reaches an assembly pass."""
    from dicom_node.node import Node

    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "t2"\nwhen = { field = "SeriesDescription", matches = "T2(" }\n')
    with pytest.raises(RulesError, match=rf"{re.escape(str(path))}: rule 't2' \(#1\): when\.matches"):
        load_rules(path)
    settings = Settings(data_dir=tmp_path / "data", rules_file=path, port=0)
    with pytest.raises(RulesError, match="invalid regular expression"):
        Node(settings, None, on_selected=lambda session, series: None)  # type: ignore[arg-type]
    path.write_text("[[rules]\n")
    with pytest.raises(RulesError, match="not valid TOML"):
        load_rules(path)


def test_in_lists_compare_case_insensitively_and_numbers_as_text() -> None:
    rules = parse_rules(one_rule({"field": "BodyPartExamined", "in": ["cspine", 7]}))
    assert evaluate(rules, {"BodyPartExamined": " CSPINE "}).selected
    assert evaluate(rules, {"BodyPartExamined": ["LSPINE", "7"]}).selected
    assert not evaluate(rules, {"BodyPartExamined": None}).selected
    assert not evaluate(rules, {}).selected


def test_a_range_reads_the_first_value_and_refuses_text() -> None:
    rules = parse_rules(one_rule({"field": "EchoTime", "max": 20}))
    assert evaluate(rules, {"EchoTime": 12.5}).selected
    assert evaluate(rules, {"EchoTime": [20, 90]}).selected
    assert not evaluate(rules, {"EchoTime": "short"}).selected
    assert not evaluate(rules, {"EchoTime": 20.01}).selected
