from pathlib import Path

import pytest

from dicom_node.selection import evaluate, load_rules, orientation_plane, series_fields
from tests.factories import make_mr_series

GOOD = {
    "Modality": "MR",
    "ImageOrientationPatient": [0, 1, 0, 0, 0, -1],
    "BodyPartExamined": "CSPINE",
    "SeriesDescription": "SAG T2 TSE",
    "EchoTime": 100.0,
    "RepetitionTime": 3000.0,
    "SliceCount": 20,
}


def test_orientation_planes() -> None:
    assert orientation_plane([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert orientation_plane([1, 0, 0, 0, 1, 0]) == "axial"
    assert orientation_plane([1, 0, 0, 0, 0, -1]) == "coronal"
    assert orientation_plane(None) is None


def test_default_rules_select_a_sagittal_cervical_t2_series() -> None:
    assert evaluate(load_rules(), GOOD).selected


@pytest.mark.parametrize(
    ("change", "failed_rule"),
    [
        ({"Modality": "CT"}, "modality_mr"),
        ({"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]}, "sagittal"),
        ({"BodyPartExamined": "LSPINE", "SeriesDescription": "SAG T2"}, "cervical_spine"),
        ({"SeriesDescription": "SAG T1 CSPINE", "EchoTime": 12.0, "RepetitionTime": 500.0}, "t2_weighted"),
        ({"SliceCount": 2}, "min_slices"),
        ({"SliceCount": 4}, "min_slices"),
    ],
)
def test_the_first_failing_rule_is_named(change, failed_rule) -> None:  # type: ignore[no-untyped-def]
    decision = evaluate(load_rules(), {**GOOD, **change})
    assert not decision.selected and decision.failed_rule == failed_rule


def test_t2_from_sequence_parameters_without_description() -> None:
    fields = {**GOOD, "SeriesDescription": "SAG TSE CERVICAL", "EchoTime": 110.0, "RepetitionTime": 3500.0}
    assert evaluate(load_rules(), fields).selected


def test_fields_are_read_from_a_dataset() -> None:
    fields = series_fields(make_mr_series(1)[0], n_instances=5)
    assert fields["SliceCount"] == 5
    assert evaluate(load_rules(), fields).selected


def test_too_few_slices_are_skipped_with_the_rule_named() -> None:
    """Issue 12 item 13: a 2-slice "series" is not analysed."""
    decision = evaluate(load_rules(), series_fields(make_mr_series(2)[0], n_instances=2))
    assert not decision.selected and decision.failed_rule == "min_slices"
    assert decision.detail and "5" in decision.detail
    assert evaluate(load_rules(), {**GOOD, "SliceCount": 5}).selected


def test_slices_of_a_multi_frame_instance_count() -> None:
    ds = make_mr_series(1)[0]
    ds.NumberOfFrames = 24
    assert series_fields(ds, n_instances=1)["SliceCount"] == 24
    ds.NumberOfFrames = 3
    assert series_fields(ds, n_instances=1)["SliceCount"] == 3


def test_custom_rules_file_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "ct"\nwhen = { field = "Modality", in = ["CT"] }\n')
    assert not evaluate(load_rules(path), GOOD).selected
    path.write_text('[[rules]]\nname = "broken"\nwhen = { field = "Modality" }\n')
    with pytest.raises(ValueError, match="broken"):
        load_rules(path)
