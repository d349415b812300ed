"""Calibrated findings (issue 11): probability, operating point, protrusion and unknown levels
in every result object; dciodvfy without errors or warnings; read back with highdicom."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from dicom_node.analysis import write_result_objects
from dicom_node.results import FindingsError, build_result_objects
from dicom_node.results.codes import (
    CERTAINTY_OF_FINDING,
    HERNIATION,
    HERNIATION_PROBABILITY,
    HERNIATION_THRESHOLD,
    LEVEL_SITES,
    NORMAL,
    PROTRUSION,
)
from tests.results.conftest import dciodvfy
from tests.results.make_sources import (
    ALL_KINDS,
    NO_ANCHOR,
    SR_READERS,
    by_kind,
    calibrated_findings_for,
    enhanced_mr,
    findings_for,
    mr_series,
)

ALL = ALL_KINDS
TRACKING_IDS = ["C4-C5 disc", "C5-C6 disc", "C6-C7 disc", "unknown disc 1", "unknown disc 2"]
LEVEL_NAME = re.compile(r"C\d-(C\d|T1)")


def _written_clean(tmp_path: Path, findings, sources, sr_kind: str = "3d") -> dict[str, pydicom.Dataset]:
    """Write every kind; each object passes dciodvfy with neither errors nor warnings."""
    paths = write_result_objects(findings, sources, tmp_path / "out", ALL, sr_kind)
    for path in paths:
        errors, warnings = dciodvfy(path)
        assert not errors and not warnings, f"{path.name}: {errors + warnings}"
    return by_kind(paths)


def _texts(group, concept) -> list[str]:
    """TEXT values of ``concept`` directly in a measurement group."""
    return [
        item.TextValue
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == concept.value
    ]


def _numbers(sr, group):
    """The disc's measurement group (TID 1501, its NUMs): same tracking UID as its ROI group."""
    (numbers,) = sr.content.get_image_measurement_groups(tracking_uid=group.tracking_uid)
    assert numbers.tracking_identifier == group.tracking_identifier
    assert group.get_measurements() == []  # the ROI group holds no NUM (OHIF, docs/conformance.md)
    return numbers


def _value(group, name) -> float | None:
    found = group.get_measurements(name=name)
    assert len(found) <= 1
    return float(found[0].value) if found else None


@pytest.mark.parametrize("sr_kind", ["3d", "comprehensive", "enhanced"])
def test_sr_carries_probability_operating_point_protrusion_and_unknown_levels(tmp_path, sr_kind):
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    objects = _written_clean(tmp_path, doc, sources, sr_kind)
    proc = subprocess.run(
        ["/usr/bin/dsrdump", str(tmp_path / "out" / "00-sr.dcm")], capture_output=True, text=True, errors="replace"
    )
    assert proc.returncode == 0 and "E:" not in proc.stderr, proc.stderr

    sr = SR_READERS[sr_kind].from_dataset(objects["sr"])
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == TRACKING_IDS
    assert len({g.tracking_uid for g in groups}) == len(groups)  # unique, unknown ones too
    for item, group in zip(doc["findings"], groups):
        p = item["probability"]
        herniation = item["label"] == "herniation"
        numbers = _numbers(sr, group)
        assert group.finding_type == numbers.finding_type == (HERNIATION if herniation else NORMAL)
        # Certainty of Finding is about the stated finding; the probability is of herniation.
        assert _value(numbers, CERTAINTY_OF_FINDING) == pytest.approx(100 * (p if herniation else 1 - p))
        assert _value(numbers, HERNIATION_PROBABILITY) == pytest.approx(100 * p)
        (probability,) = numbers.get_measurements(name=HERNIATION_PROBABILITY)
        assert probability.unit == codes.UCUM.Percent
        assert _value(numbers, HERNIATION_THRESHOLD) == pytest.approx(31.0)
        for g in (group, numbers):
            params = _texts(g, codes.DCM.AlgorithmParameters)
            assert "herniation_threshold=0.31" in params and "target_sensitivity=0.9" in params
            assert "calibration=platt" in params
        if item.get("protrusion_mm") is None:
            assert _value(numbers, PROTRUSION) is None
        else:
            (protrusion,) = numbers.get_measurements(name=PROTRUSION)
            assert float(protrusion.value) == pytest.approx(item["protrusion_mm"])
            assert protrusion.unit == codes.UCUM.Millimeter
        # The first Comment is the label a viewer shows (as the GSPS text); then the reason.
        label = (
            f"{item['level']} {'herniation' if herniation else 'normal'} {round(100 * (p if herniation else 1 - p))}%"
        )
        if item["level"] == "unknown":
            assert group.finding_sites == numbers.finding_sites == []  # no level claimed
            label = label.replace("unknown", "disc (level unknown)", 1)
            assert _texts(group, codes.DCM.Comment) == [label, f"Disc level unknown: {item['reason']}"]
        else:
            assert [s.value for s in group.finding_sites] == [LEVEL_SITES[item["level"]]]
            assert [s.value for s in numbers.finding_sites] == [LEVEL_SITES[item["level"]]]
            assert _texts(group, codes.DCM.Comment) == [label]
    assert NO_ANCHOR in proc.stdout or "Disc level unknown" in proc.stdout


def test_seg_gsps_sc_name_no_level_for_unknown_discs(tmp_path):
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    objects = _written_clean(tmp_path, doc, sources)
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["sr"])
    sr_uids = {g.tracking_identifier: g.tracking_uid for g in sr.content.get_planar_roi_measurement_groups()}

    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    assert seg.number_of_segments == 3  # C5-C6, C6-C7 and the unknown herniation
    labels = {}
    for number in range(1, 4):
        description = seg.get_segment_description(number)
        labels[description.tracking_id] = description.SegmentLabel
        assert description.tracking_uid == sr_uids[description.tracking_id]
        algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
        assert "herniation_threshold=0.31" in algorithm.AlgorithmParameters
        if description.tracking_id.startswith("unknown"):
            assert "AnatomicRegionSequence" not in description
    assert labels["C5-C6 disc"] == "C5-C6 herniation"
    assert not LEVEL_NAME.search(labels["unknown disc 1"]) and "unknown" in labels["unknown disc 1"]

    gsps = objects["gsps"]
    texts = [t.UnformattedTextValue for a in gsps.GraphicAnnotationSequence for t in a.TextObjectSequence]
    assert sorted(texts) == ["C5-C6 herniation 91%", "C6-C7 herniation 63%", "disc (level unknown) herniation 77%"]
    graphics = {g.TrackingID: g.TrackingUID for a in gsps.GraphicAnnotationSequence for g in a.GraphicObjectSequence}
    assert graphics == {k: v for k, v in sr_uids.items() if k != "C4-C5 disc" and k != "unknown disc 2"}

    comments = {
        ds.SourceImageSequence[0].ReferencedSOPInstanceUID: ds.ImageComments
        for name, ds in objects.items()
        if name.startswith("sc")
    }
    assert comments[sources[3].SOPInstanceUID] == "disc (level unknown) herniation 77%"
    assert comments[sources[2].SOPInstanceUID] == "C5-C6 herniation 91%"


def test_old_document_without_calibration_works_as_before(tmp_path):
    sources = mr_series()
    doc = findings_for(sources)  # no operating_point, no probability, no levels
    objects = _written_clean(tmp_path, doc, sources)
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["sr"])
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["C4-C5 disc", "C5-C6 disc", "C6-C7 disc"]
    for item, group in zip(doc["findings"], groups):
        numbers = _numbers(sr, group)
        assert _value(numbers, CERTAINTY_OF_FINDING) == pytest.approx(100 * item["score"])
        assert [m.name for m in numbers.get_measurements()] == [CERTAINTY_OF_FINDING]
        assert _texts(group, codes.DCM.AlgorithmParameters) == []
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    assert "AlgorithmParameters" not in (seg.get_segment_description(1).SegmentationAlgorithmIdentificationSequence[0])
    texts = [t.UnformattedTextValue for a in objects["gsps"].GraphicAnnotationSequence for t in a.TextObjectSequence]
    assert sorted(texts) == ["C5-C6 herniation 91%", "C6-C7 herniation 63%"]


def test_multiframe_source_with_unknown_levels(tmp_path):
    source = enhanced_mr()
    doc = calibrated_findings_for([source], multiframe=True)
    objects = _written_clean(tmp_path, doc, [source], "enhanced")
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=[4], segment_numbers=[3]
    )
    assert pixels[0, 30:38, 20:40, 0].all()  # the unknown herniation on frame 4
    frames = {
        int(a.ReferencedImageSequence[0].ReferencedFrameNumber) for a in objects["gsps"].GraphicAnnotationSequence
    }
    assert frames == {2, 3, 4}


def test_uids_are_deterministic_and_distinct_per_unknown_disc():
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    first = build_result_objects(doc, sources, ALL)
    again = build_result_objects(copy.deepcopy(doc), sources, ALL)
    assert [ds.SOPInstanceUID for _, ds in first] == [ds.SOPInstanceUID for _, ds in again]
    sr = hd.sr.Comprehensive3DSR.from_dataset(dict(first)["sr"])
    sr_again = hd.sr.Comprehensive3DSR.from_dataset(dict(again)["sr"])
    uids = [g.tracking_uid for g in sr.content.get_planar_roi_measurement_groups()]
    assert uids == [g.tracking_uid for g in sr_again.content.get_planar_roi_measurement_groups()]
    assert len(set(uids)) == 5


def test_reason_falls_back_to_the_document_levels_reason():
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    doc["levels"] = {"anchor": "missing", "reason": NO_ANCHOR}
    for item in doc["findings"]:
        item.pop("reason", None)
    ((_, ds),) = build_result_objects(doc, sources, ("sr",))
    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_planar_roi_measurement_groups()
    assert [_texts(g, codes.DCM.Comment)[1:] for g in groups[3:]] == [[f"Disc level unknown: {NO_ANCHOR}"]] * 2


def test_probability_alone_is_enough_and_score_follows_it():
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    for item in doc["findings"]:
        del item["score"]
    ((_, ds),) = build_result_objects(doc, sources, ("sr",))
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert _value(_numbers(sr, groups[1]), CERTAINTY_OF_FINDING) == pytest.approx(91.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # a herniation below the threshold that defines it (and a normal disc above it)
        (lambda d: d["findings"][1].update(probability=0.2, score=0.2), r"\[1\]\['label'\].*threshold"),
        (lambda d: d["findings"][0].update(probability=0.5, score=0.5), r"\[0\]\['label'\].*threshold"),
        (lambda d: d["findings"][0].update(probability=1.2), r"\['probability'\]"),
        (lambda d: d["findings"][0].update(probability="high"), r"\['probability'\]"),
        (lambda d: d["findings"][1].update(protrusion_mm=-1), r"\['protrusion_mm'\]"),
        (lambda d: d["findings"][1].update(protrusion_mm=float("nan")), r"\['protrusion_mm'\]"),
        (lambda d: d["operating_point"].pop("threshold"), r"\['operating_point'\].*threshold"),
        (lambda d: d["operating_point"].update(threshold=2), r"\['operating_point'\]\['threshold'\]"),
        (lambda d: d["findings"][0].update(level="C5-C6"), r"a level appears twice"),
        (lambda d: d["findings"][0].update(level="level 4"), r"\['level'\].*unknown"),
        (lambda d: [f.pop(k) for f in d["findings"][:1] for k in ("score", "probability")], r"'score'"),
    ],
)
def test_bad_calibrated_findings_name_the_field(change, message):
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    change(doc)
    with pytest.raises(FindingsError, match=message):
        build_result_objects(doc, sources)


def test_probability_within_rounding_of_the_threshold_is_accepted():
    sources = mr_series()
    doc = calibrated_findings_for(sources)
    doc["findings"][1].update(probability=0.3099, score=0.3099)  # rounded after labelling
    build_result_objects(doc, sources, ("sr",))
