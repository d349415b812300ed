"""dicom_node.datasets: DICOM series + box file -> the detector's items."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pydicom.uid import JPEGLSLossless

from detector.data.synthetic import make_study
from dicom_node.datasets import DicomBoxDataset
from dicom_node.pixels import SeriesError
from dicom_node.synth import save, study_datasets, write_studies


def test_synth_output_trains_as_is(tmp_path):
    write_studies(tmp_path, 2, seed=5, n_slices=3, size=96, transfer_syntax="jpeg-ls")
    ds = DicomBoxDataset(tmp_path)
    assert len(ds) == 6
    for i in range(2):
        study = make_study(np.random.default_rng([5, i]), n_slices=3, size=96)
        for k in range(3):
            img, target = ds[3 * i + k]
            assert img.dtype == np.float32 and np.array_equal(img, np.clip(np.rint(study.volume[k]), 0, 65535))
            np.testing.assert_allclose(target["boxes"], study.boxes[k], atol=0.01)
            assert np.array_equal(target["labels"], study.labels[k])


def test_user_box_file_on_a_flipped_series(tmp_path):
    """Boxes are given on the stored pixels; items come in the canonical view with boxes moved."""
    study = make_study(np.random.default_rng(2), n_slices=2, size=96)
    datasets = study_datasets(study, key=("user",), number=1, patient_id="U")
    folder = tmp_path / "patient" / "series"
    folder.mkdir(parents=True)
    instances = {}
    for k, ds in enumerate(datasets):
        ds = copy.deepcopy(ds)
        pixels = np.frombuffer(ds.PixelData, np.uint16).reshape(96, 96)[::-1, ::-1]
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.ImageOrientationPatient = ["0", "-1", "0", "0", "0", "1"]
        save(ds, folder / f"{k}.dcm", JPEGLSLossless)
        boxes = [[96 - b[2], 96 - b[3], 96 - b[0], 96 - b[1]] for b in study.boxes[k].tolist()]
        labels = ["herniation" if c == 0 else "normal" for c in study.labels[k]]
        if k == 0:
            instances[ds.SOPInstanceUID] = {"boxes": boxes, "labels": labels}
    (tmp_path / "patient" / "boxes.json").write_text(json.dumps({"instances": instances}))
    ds = DicomBoxDataset(tmp_path)
    assert len(ds) == 1  # the unlisted slice is skipped
    img, target = ds[0]
    assert np.array_equal(img, np.clip(np.rint(study.volume[0]), 0, 65535))
    np.testing.assert_allclose(target["boxes"], study.boxes[0], atol=0.01)
    assert len(DicomBoxDataset(tmp_path, include_unlisted=True)) == 2


def test_box_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="boxes.json"):
        DicomBoxDataset(tmp_path)
    (tmp_path / "boxes.json").write_text(json.dumps({"instances": {"1.2.3": {"boxes": [], "labels": []}}}))
    with pytest.raises(SeriesError, match="1.2.3"):
        DicomBoxDataset(tmp_path)
    (tmp_path / "boxes.json").write_text(json.dumps({"instances": {"1.2.3": {"boxes": [[0, 0, 1, 1]], "labels": []}}}))
    with pytest.raises(ValueError, match="1 boxes but 0 labels"):
        DicomBoxDataset(tmp_path)
