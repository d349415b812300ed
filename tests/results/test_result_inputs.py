"""Imperfect sources still give valid objects, or an error that names what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.analysis import write_result_objects
from dicom_node.results import FindingsError, build_result_objects
from tests.results.conftest import assert_valid
from tests.results.make_sources import by_kind, enhanced_mr, findings_for, mr_series

ALL = ("sr", "seg", "gsps", "sc", "kos")


def _write_valid(tmp_path: Path, findings, sources, sr_kind: str = "3d") -> dict[str, pydicom.Dataset]:
    paths = write_result_objects(findings, sources, tmp_path / "out", ALL, sr_kind)
    for path in paths:
        print(path.name, "dciodvfy warnings:", assert_valid(path))
    return by_kind(paths)


def test_unknown_charset_from_disk_gives_utf8_objects(tmp_path):
    written = []
    for i, ds in enumerate(mr_series()):
        path = tmp_path / f"src{i}.dcm"
        ds.save_as(path, enforce_file_format=True)  # Latin-1 bytes for "Müller^Jörg"
        raw = bytearray(path.read_bytes())
        raw[raw.index(b"ISO_IR 100")] = ord("X")  # declares "XSO_IR 100": nobody knows it
        path.write_bytes(bytes(raw))
        written.append(path)
    with pytest.warns(UserWarning):
        sources = [pydicom.dcmread(p) for p in written]
        decoded_name = str(sources[0].PatientName)
    findings = findings_for(sources)
    objects = _write_valid(tmp_path, findings, sources)
    for ds in objects.values():
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == decoded_name
    assert sources[0].SpecificCharacterSet == "XSO_IR 100"  # the caller's datasets untouched


def test_non_ascii_text_without_charset_is_written_as_utf8(tmp_path):
    sources = mr_series(drop=("SpecificCharacterSet",))  # names still hold "Müller^Jörg"
    objects = _write_valid(tmp_path, findings_for(sources), sources)
    assert {ds.SpecificCharacterSet for ds in objects.values()} == {"ISO_IR 192"}
    assert str(objects["sr"].PatientName) == "Müller^Jörg"


def test_missing_optional_attributes_still_valid(tmp_path):
    dropped = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "BodyPartExamined",
        "SeriesNumber",
        "InstanceNumber",
        "Manufacturer",
        "SliceThickness",
        "PositionReferenceIndicator",
    )
    sources = mr_series(drop=dropped)
    objects = _write_valid(tmp_path, findings_for(sources), sources)
    assert objects["gsps"].BodyPartExamined == "CSPINE"
    assert objects["sr"].PatientID == ""
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    thickness = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
    assert float(thickness) == pytest.approx(3.0)  # from the slice positions


def test_odd_pixel_spacing_is_carried_into_the_seg(tmp_path):
    sources = mr_series(pixel_spacing=(0.3125, 0.78125))
    objects = _write_valid(tmp_path, findings_for(sources), sources)
    measures = objects["seg"].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.3125, 0.78125]
    assert [float(v) for v in objects["sc"].PixelSpacing] == [0.3125, 0.78125]


@pytest.mark.parametrize("sr_kind", ["3d", "enhanced"])
def test_multiframe_enhanced_mr_source(tmp_path, sr_kind):
    source = enhanced_mr()
    findings = findings_for([source], multiframe=True)
    objects = _write_valid(tmp_path, findings, [source], sr_kind)
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=[3], segment_numbers=[1]
    )
    assert pixels[0, 24:33, 22:42, 0].all() and pixels[0].sum() == 9 * 20  # C5-C6 on frame 3
    sr = objects["sr"]
    regions = [
        item
        for group in sr.ContentSequence[-1].ContentSequence
        for item in group.ContentSequence
        if item.ValueType == "SCOORD"
    ]
    frames = {int(r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber) for r in regions}
    assert frames == {2, 3}
    annotations = objects["gsps"].GraphicAnnotationSequence
    assert {int(a.ReferencedImageSequence[0].ReferencedFrameNumber) for a in annotations} == {2, 3}


def test_multiframe_source_without_frame_names_the_field():
    source = enhanced_mr()
    findings = findings_for([source], multiframe=True)
    del findings["findings"][0]["frame"]
    with pytest.raises(FindingsError, match=r"\['frame'\].*5 frames"):
        build_result_objects(findings, [source])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, s: f["findings"][0].update(level="L4-L5"), r"\['level'\]"),
        (lambda f, s: f["findings"][0].update(label="tumour"), r"\['label'\]"),
        (lambda f, s: f["findings"][0].update(score=1.5), r"\['score'\]"),
        (lambda f, s: f["findings"][0].update(box=[10, 10, 90, 20]), r"\['box'\].*outside"),
        (lambda f, s: f["findings"][0].update(box=[30, 10, 20, 20]), r"\['box'\]"),
        (lambda f, s: f["findings"][0].update(sop_instance_uid="1.2.3"), r"\['sop_instance_uid'\]"),
        (lambda f, s: f.pop("model"), r"'model'"),
        (lambda f, s: f.update(study_instance_uid="1.2.3"), r"StudyInstanceUID"),
        (lambda f, s: delattr(s[0], "Rows"), r"sources\[0\]: missing required attribute Rows"),
    ],
)
def test_bad_findings_raise_errors_naming_the_field(change, message):
    sources = mr_series()
    findings = copy.deepcopy(findings_for(sources))
    change(findings, sources)
    with pytest.raises(FindingsError, match=message):
        build_result_objects(findings, sources)


def test_bad_kinds_and_sr_kind_are_named():
    sources = mr_series()
    with pytest.raises(FindingsError, match="kinds"):
        build_result_objects(findings_for(sources), sources, kinds=("sr", "pdf"))
    with pytest.raises(FindingsError, match="sr_kind"):
        build_result_objects(findings_for(sources), sources, sr_kind="basic")


def test_seg_needs_frame_of_reference(tmp_path):
    sources = mr_series(drop=("FrameOfReferenceUID",))
    with pytest.raises(FindingsError, match="FrameOfReferenceUID"):
        build_result_objects(findings_for(sources), sources, kinds=("seg",))
    # Objects that do not need it are still built and valid.
    paths = write_result_objects(findings_for(sources), sources, tmp_path, ("sr", "gsps", "kos"))
    assert [p.name for p in paths] == ["00-sr.dcm", "01-gsps.dcm", "02-kos.dcm"]
    for path in paths:
        assert_valid(path)


def test_seg_needs_one_frame_of_reference():
    sources = mr_series()
    sources[1].FrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(FindingsError, match="FrameOfReferenceUID differs"):
        build_result_objects(findings_for(sources), sources, kinds=("seg",))


def test_no_herniation_skips_seg_and_keeps_the_normal_levels(tmp_path):
    sources = mr_series()
    findings = findings_for(sources)
    findings["findings"] = [f for f in findings["findings"] if f["label"] != "herniation"]
    objects = _write_valid(tmp_path, findings, sources)
    assert "seg" not in objects and {"sr", "gsps", "sc", "kos"} <= set(objects)
    sr = hd.sr.Comprehensive3DSR.from_dataset(objects["sr"])
    (group,) = sr.content.get_planar_roi_measurement_groups()
    assert group.tracking_identifier == "C4-C5 disc"
    assert "no herniation" in objects["sc"].ImageComments
    assert np.asarray(objects["sc"].pixel_array).max() < 255  # nothing burned in


@pytest.mark.parametrize("box", [[0, 0, 64, 64], [50, 58, 64, 64], [0, 0, 0.5, 0.5]])
def test_boxes_at_the_image_edges_stay_valid(tmp_path, box):
    sources = mr_series()
    findings = findings_for(sources)
    findings["findings"][1]["box"] = box
    objects = _write_valid(tmp_path, findings, sources)
    seg = hd.seg.Segmentation.from_dataset(objects["seg"])
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[sources[2].SOPInstanceUID], segment_numbers=[1]
    )
    assert pixels.sum() >= 1  # even a sub-pixel box marks its pixel
