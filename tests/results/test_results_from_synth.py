"""Result objects from a `meddet synth` study written in a compressed transfer syntax, with its
ground truth standing in for the detector's findings (no checkpoint needed)."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from dicom_node.analysis import write_result_objects
from dicom_node.synth import write_studies
from tests.results.conftest import assert_valid


def _findings_from_truth(truth: dict, sources: list[pydicom.Dataset]) -> dict:
    """One finding per level at its largest box (herniations first), like the detector's."""
    best: dict[str, dict] = {}
    for uid, item in truth["instances"].items():
        for box, label, level in zip(item["boxes"], item["labels"], item["levels"]):
            area = (box[2] - box[0]) * (box[3] - box[1])
            key = (label == "herniation", area)
            if level not in best or key > best[level]["_key"]:
                best[level] = {
                    "level": level,
                    "label": label,
                    "sop_instance_uid": uid,
                    "box": box,
                    "score": 0.9 if label == "herniation" else 0.2,
                    "_key": key,
                }
    findings = [{k: v for k, v in f.items() if k != "_key"} for f in best.values()]
    return {
        "study_instance_uid": truth["study_instance_uid"],
        "series_instance_uid": truth["series_instance_uid"],
        "model": {"name": "meddet", "version": "ground-truth"},
        "findings": findings,
    }


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000"])
def test_objects_from_a_compressed_synthetic_study(tmp_path: Path, syntax: str) -> None:
    (study,) = write_studies(tmp_path / "synth", 1, seed=7, n_slices=7, size=128, transfer_syntax=syntax)
    sources = [pydicom.dcmread(p) for p in sorted(study.dicom_dir.iterdir())]
    findings = _findings_from_truth(json.loads(study.ground_truth.read_text()), sources)
    assert findings["findings"], "the synthetic study has discs"
    paths = write_result_objects(findings, sources, tmp_path / "out", ("sr", "seg", "gsps", "sc", "kos"))
    for path in paths:
        print(path.name, "dciodvfy warnings:", assert_valid(path))
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(tmp_path / "out" / "00-sr.dcm"))
    levels = {g.tracking_identifier.split()[0] for g in sr.content.get_planar_roi_measurement_groups()}
    assert levels == {f["level"] for f in findings["findings"]}
    herniated = {f["level"] for f in findings["findings"] if f["label"] == "herniation"}
    assert herniated == set(study.herniated_levels) and herniated  # seed 7: C5-C6, C6-C7
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(tmp_path / "out" / "01-seg.dcm"))
    assert seg.number_of_segments == len(herniated)
