"""Result objects: valid for dciodvfy / dsrdump, and read back with highdicom to the findings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from dicom_node.analysis import write_result_objects
from dicom_node.results import build_result_objects
from dicom_node.results.codes import (
    CERTAINTY_OF_FINDING,
    HERNIATED_STRUCTURE,
    HERNIATION,
    LEVEL_SITES,
    MANUFACTURER,
    MORPHOLOGICALLY_ABNORMAL,
    NORMAL,
)
from dicom_node.results.common import (
    Finding,
)
from dicom_node.results.seg import box_mask
from tests.results.conftest import assert_valid
from tests.results.make_sources import ALL_KINDS, SR_READERS, by_kind

ALL = ALL_KINDS

SR_CLASS_UIDS = {
    "3d": "1.2.840.10008.5.1.4.1.1.88.34",
    "comprehensive": "1.2.840.10008.5.1.4.1.1.88.33",
    "enhanced": "1.2.840.10008.5.1.4.1.1.88.22",
}


def _written(tmp_path: Path, findings, sources, sr_kind: str = "3d") -> dict[str, pydicom.Dataset]:
    paths = write_result_objects(findings, sources, tmp_path / "out", ALL, sr_kind)
    for path in paths:
        warnings = assert_valid(path)
        print(path.name, "dciodvfy warnings:", warnings)  # allowed; shown with -s
    return by_kind(paths)


@pytest.mark.parametrize("sr_kind", ["3d", "comprehensive", "enhanced"])
def test_every_object_passes_dciodvfy_and_sr_passes_dsrdump(tmp_path, sources, findings, sr_kind):
    objects = _written(tmp_path, findings, sources, sr_kind)
    assert set(objects) == {"sr", "seg", "gsps", "sc", "sc-2", "kos"}
    assert objects["sr"].SOPClassUID == SR_CLASS_UIDS[sr_kind]
    proc = subprocess.run(
        ["/usr/bin/dsrdump", str(tmp_path / "out" / "00-sr.dcm")],
        capture_output=True,
        text=True,
        errors="replace",
    )
    assert proc.returncode == 0, proc.stderr
    assert "E:" not in proc.stderr, proc.stderr
    print("dsrdump warnings:", proc.stderr)
    assert "Herniation of intervertebral disc" in proc.stdout
    assert "PRELIMINARY" in proc.stdout and "UNVERIFIED" in proc.stdout


@pytest.mark.parametrize("sr_kind", ["3d", "comprehensive", "enhanced"])
def test_sr_reads_back_to_the_findings(tmp_path, sources, findings, sr_kind):
    ds = _written(tmp_path, findings, sources, sr_kind)["sr"]
    sr = SR_READERS[sr_kind].from_dataset(ds)
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == ("PRELIMINARY", "UNVERIFIED", "PARTIAL")
    groups = {g.tracking_identifier: g for g in sr.content.get_planar_roi_measurement_groups()}
    assert len(groups) == len(findings["findings"])
    uids = set()
    for item in findings["findings"]:
        group = groups[f"{item['level']} disc"]
        uids.add(group.tracking_uid)
        expected = HERNIATION if item["label"] == "herniation" else NORMAL
        assert group.finding_type == expected
        assert [s.value for s in group.finding_sites] == [LEVEL_SITES[item["level"]]]
        if item["label"] == "herniation":
            assert group.finding_category == MORPHOLOGICALLY_ABNORMAL
        # The NUMs are in the disc's measurement group (TID 1501, same tracking UID); its ROI group
        # holds none, and carries the label a viewer lists (docs/conformance.md, section 6).
        assert group.get_measurements() == []
        (numbers,) = sr.content.get_image_measurement_groups(tracking_uid=group.tracking_uid)
        assert (numbers.tracking_identifier, numbers.finding_type) == (group.tracking_identifier, expected)
        assert [s.value for s in numbers.finding_sites] == [LEVEL_SITES[item["level"]]]
        (certainty,) = numbers.get_measurements(name=CERTAINTY_OF_FINDING)
        assert certainty.value == pytest.approx(item["score"] * 100, abs=0.01)
        assert certainty.unit == codes.UCUM.Percent
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        x0, y0, x1, y1 = item["box"]
        points = group.roi.value
        assert points.min(axis=0).tolist() == pytest.approx([x0, y0])
        assert points.max(axis=0).tolist() == pytest.approx([x1, y1])
        (source,) = group.roi.ContentSequence
        assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == item["sop_instance_uid"]
        texts = {item.ConceptNameCodeSequence[0].CodeValue: item.get("TextValue") for item in group[0].ContentSequence}
        assert texts[codes.DCM.AlgorithmName.value] == "meddet"
        assert texts[codes.DCM.AlgorithmVersion.value] == "0.1.0-test"
        label = f"{item['level']} {item['label'].replace('_disc', '')} {round(100 * item['score'])}%"
        assert texts[codes.DCM.Comment.value] == label
    assert len(uids) == len(findings["findings"])
    assert ds.Manufacturer == MANUFACTURER


def test_seg_frames_match_the_herniation_boxes(tmp_path, sources, findings):
    seg = hd.seg.Segmentation.from_dataset(_written(tmp_path, findings, sources)["seg"])
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    herniations = [f for f in findings["findings"] if f["label"] == "herniation"]
    assert seg.number_of_segments == len(herniations)
    sr_uids = {}
    for number, item in enumerate(herniations, start=1):
        description = seg.get_segment_description(number)
        assert description.segmented_property_type == HERNIATED_STRUCTURE
        assert description.segmented_property_category == MORPHOLOGICALLY_ABNORMAL
        assert description.tracking_id == f"{item['level']} disc"
        sr_uids[item["level"]] = description.tracking_uid
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[item["sop_instance_uid"]], segment_numbers=[number]
        )
        finding = Finding(item["level"], "herniation", item["score"], item["sop_instance_uid"], tuple(item["box"]))
        assert np.array_equal(pixels[0, :, :, 0].astype(bool), box_mask(finding, 64, 64))
    # Segments share the SR groups' tracking UIDs.
    sr = hd.sr.Comprehensive3DSR.from_dataset(_written(tmp_path, findings, sources)["sr"])
    by_level = {
        g.tracking_identifier.split()[0]: g.tracking_uid for g in sr.content.get_planar_roi_measurement_groups()
    }
    assert all(by_level[level] == uid for level, uid in sr_uids.items())


def test_gsps_annotates_the_key_slices_and_references_the_series(tmp_path, sources, findings):
    gsps = _written(tmp_path, findings, sources)["gsps"]
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in gsps.ReferencedSeriesSequence
        for item in series.ReferencedImageSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    assert gsps.BodyPartExamined == "CSPINE"
    texts, boxes = {}, {}
    for annotation in gsps.GraphicAnnotationSequence:
        (image,) = annotation.ReferencedImageSequence
        for text in annotation.TextObjectSequence:
            texts[text.UnformattedTextValue] = image.ReferencedSOPInstanceUID
        for graphic in annotation.GraphicObjectSequence:
            points = np.asarray(graphic.GraphicData, dtype=float).reshape(-1, 2)
            boxes[image.ReferencedSOPInstanceUID, tuple(points.min(0)) + tuple(points.max(0))] = True
    for item in findings["findings"]:
        if item["label"] != "herniation":
            continue
        text = f"{item['level']} herniation {round(item['score'] * 100)}%"
        assert texts[text] == item["sop_instance_uid"]
        assert (item["sop_instance_uid"], tuple(float(v) for v in item["box"])) in boxes
    assert "C5-C6 herniation 91%" in texts


def test_patient_study_copied_new_series_deterministic_uids(tmp_path, sources, findings):
    objects = _written(tmp_path, findings, sources)
    series_uids = set()
    for name, ds in objects.items():
        assert ds.StudyInstanceUID == sources[0].StudyInstanceUID, name
        assert str(ds.PatientName) == "Müller^Jörg", name
        assert ds.PatientID == sources[0].PatientID, name
        assert ds.AccessionNumber == sources[0].AccessionNumber, name
        assert ds.SpecificCharacterSet == "ISO_IR 100", name
        assert ds.Manufacturer == MANUFACTURER, name
        assert "meddet" in ds.SoftwareVersions and ds.ManufacturerModelName == "meddet"
        series_uids.add((ds.Modality, ds.SeriesInstanceUID))
    assert sources[0].SeriesInstanceUID not in {uid for _, uid in series_uids}
    assert len({uid for _, uid in series_uids}) == len({m for m, _ in series_uids}) == 5
    again = build_result_objects(findings, sources, ALL)
    assert [ds.SOPInstanceUID for _, ds in again] == [objects[n].SOPInstanceUID for n in objects]
    other = dict(findings, model={"name": "meddet", "version": "0.2.0"})
    changed = build_result_objects(other, sources, ("sr", "seg"))
    assert {ds.SOPInstanceUID for _, ds in changed}.isdisjoint(
        {objects["sr"].SOPInstanceUID, objects["seg"].SOPInstanceUID}
    )


def test_sc_burns_in_boxes_and_kos_references_key_images_and_results(tmp_path, sources, findings):
    objects = _written(tmp_path, findings, sources)
    sc = objects["sc"]
    assert sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in {
        f["sop_instance_uid"] for f in findings["findings"] if f["label"] == "herniation"
    }
    assert sc.pixel_array.max() == 255  # the white box; the windowed image stays below 231
    kos = objects["kos"]
    assert kos.ConceptNameCodeSequence[0].CodeValue == codes.DCM.OfInterest.value
    referenced = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in kos.ContentSequence
        if item.ValueType in ("IMAGE", "COMPOSITE")
    }
    key_slices = {f["sop_instance_uid"] for f in findings["findings"] if f["label"] == "herniation"}
    results = {objects[n].SOPInstanceUID for n in ("sr", "seg", "gsps", "sc", "sc-2")}
    assert referenced == key_slices | results


def test_gsps_is_applied_by_dcmtk_to_its_key_slice_with_our_boxes_and_texts(tmp_path, sources, findings):
    """dcmtk's presentation state renderer (dcmp2pgm, dcmpstat) reads our GSPS against a key slice:
    it finds the slice referenced, the MEDDET layer, each herniation's box and text. It does not
    draw graphic annotations into its bitmap (the output equals the slice rendered without the
    GSPS): no renderer we can run here shows the boxes, so the burned-in SC is the documented
    fallback (docs/conformance.md, section 6). A dcmtk that starts drawing them fails the last
    assert: then update that section."""
    objects = _written(tmp_path, findings, sources)
    gsps_path = tmp_path / "out" / "02-gsps.dcm"
    key = 2  # sources[2] holds the C5-C6 herniation
    source_path = tmp_path / "key.dcm"
    sources[key].save_as(source_path, enforce_file_format=True)
    with_ps = subprocess.run(
        ["/usr/bin/dcmp2pgm", "-v", "-p", str(gsps_path), str(source_path), str(tmp_path / "with.pgm")],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
    )
    assert with_ps.returncode == 0, with_ps.stdout + with_ps.stderr
    log = with_ps.stdout + with_ps.stderr
    assert "Graphic Layer #1 [MEDDET]" in log
    assert 'text 1: "C5-C6 herniation 91%"' in log
    assert "graphic 1: points=5 type=polyline filled=no units=pixel" in log
    assert "22\\24, 42\\24, 42\\33, 22\\33, 22\\24" in log  # the finding's box, closed
    assert objects["gsps"].GraphicAnnotationSequence  # and it is only on the key slices
    without = subprocess.run(
        ["/usr/bin/dcmp2pgm", str(source_path), str(tmp_path / "without.pgm")], capture_output=True, timeout=60
    )
    assert without.returncode == 0
    assert (tmp_path / "with.pgm").read_bytes() == (tmp_path / "without.pgm").read_bytes()
