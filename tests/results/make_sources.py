"""Small synthetic sagittal MR sources for the result-object tests (pydicom only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.factories import make_mr_series

ROWS = COLS = 64
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1002"
FOR_UID = "1.2.826.0.1.3680043.8.498.1003"


def _pixels(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    img = rng.integers(0, 200, (ROWS, COLS), dtype=np.uint16)
    img[20:44, 28:36] += 600  # a bright "spine"
    return img


def _patient_study(ds: Dataset, charset: str | None) -> None:
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = "Müller^Jörg" if charset == "ISO_IR 100" else "Doe^John"
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "MR"
    ds.SeriesInstanceUID = SERIES_UID
    ds.SeriesNumber = 3
    ds.BodyPartExamined = "CSPINE"
    ds.FrameOfReferenceUID = FOR_UID
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "Synthetic"


def _meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def mr_series(
    n: int = 5,
    charset: str | None = "ISO_IR 100",
    pixel_spacing: tuple[float, float] = (0.5, 0.5),
    drop: tuple[str, ...] = (),
    **extra: Any,
) -> list[Dataset]:
    """``n`` single-frame sagittal MR slices, 64x64, ordered left to right (tests/factories)."""
    out = make_mr_series(n, ROWS, COLS, study_uid=STUDY_UID, series_uid=SERIES_UID)
    for i, ds in enumerate(out):
        _patient_study(ds, charset)
        ds.PixelSpacing = list(pixel_spacing)
        ds.PixelData = _pixels(i).tobytes()
        for key, value in extra.items():
            setattr(ds, key, value)
        for keyword in drop:
            if keyword in ds:
                delattr(ds, keyword)
    return out


def enhanced_mr(n_frames: int = 5) -> Dataset:
    """One multi-frame Enhanced MR instance with the functional groups highdicom reads."""
    uid = generate_uid(entropy_srcs=["emr", SERIES_UID])
    ds = Dataset()
    ds.file_meta = _meta(EnhancedMRImageStorage, uid)
    _patient_study(ds, "ISO_IR 192")
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER", "NONE"]
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    ds.AcquisitionDateTime = "20260101120000"
    ds.NumberOfFrames = n_frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 3.0
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i in range(n_frames):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [-6.0 + 3.0 * i, -16.0, 16.0]
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([_pixels(i) for i in range(n_frames)]).tobytes()
    return ds


def findings_for(sources: list[Dataset], multiframe: bool = False) -> dict[str, Any]:
    """Two herniations and one normal disc on slices 1 and 2 (or frames 2 and 3)."""

    def ref(i: int) -> dict[str, Any]:
        if multiframe:
            return {"sop_instance_uid": sources[0].SOPInstanceUID, "frame": i + 1}
        return {"sop_instance_uid": sources[i].SOPInstanceUID}

    return {
        "study_instance_uid": STUDY_UID,
        "series_instance_uid": SERIES_UID,
        "model": {"name": "meddet", "version": "0.1.0-test"},
        "findings": [
            {"level": "C4-C5", "label": "normal_disc", "score": 0.12, "box": [20, 10, 40, 18], **ref(1)},
            {"level": "C5-C6", "label": "herniation", "score": 0.91, "box": [22, 24, 42, 33], **ref(2)},
            {"level": "C6-C7", "label": "herniation", "score": 0.634, "box": [21.5, 40, 41, 47.5], **ref(1)},
        ],
    }


OPERATING_POINT = {
    "threshold": 0.31,
    "target_sensitivity": 0.9,
    "method": "platt",
    "data": "synthetic seeds 300000-300399",
}
NO_ANCHOR = "no C2 anchor found: levels cannot be counted"


def calibrated_findings_for(sources: list[Dataset], multiframe: bool = False) -> dict[str, Any]:
    """The calibrated document (DESIGN.md section 3): ``findings_for``'s three levels with
    probabilities (score == probability), protrusions (one absent, one null), the operating
    point, and two discs whose level is unknown (one herniation, one normal) on slice 3 (frame 4).
    """
    doc = findings_for(sources, multiframe)
    doc["operating_point"] = dict(OPERATING_POINT)
    doc["levels"] = {"anchor": "found", "reason": None}
    c45, c56, c67 = doc["findings"]
    c45.update(score=0.12, probability=0.12, protrusion_mm=0.3)
    c56.update(score=0.91, probability=0.91, protrusion_mm=2.4)
    c67.update(score=0.634, probability=0.634, protrusion_mm=None)

    def ref(i: int) -> dict[str, Any]:
        if multiframe:
            return {"sop_instance_uid": sources[0].SOPInstanceUID, "frame": i + 1}
        return {"sop_instance_uid": sources[i].SOPInstanceUID}

    doc["findings"] += [
        {
            "level": "unknown",
            "label": "herniation",
            "score": 0.77,
            "probability": 0.77,
            "protrusion_mm": 1.9,
            "box": [20, 30, 40, 38],
            "reason": NO_ANCHOR,
            **ref(3),
        },
        {
            "level": "unknown",
            "label": "normal_disc",
            "score": 0.05,
            "probability": 0.05,
            "box": [20, 44, 40, 52],
            "reason": "chain of discs inconsistent: 2 gaps",
            **ref(3),
        },
    ]
    return doc


#: Every result kind, and the highdicom reader of each SR kind.
ALL_KINDS = ("sr", "seg", "gsps", "sc", "kos")
SR_READERS = {
    "3d": hd.sr.Comprehensive3DSR,
    "comprehensive": hd.sr.ComprehensiveSR,
    "enhanced": hd.sr.EnhancedSR,
}


def by_kind(paths: list[Path]) -> dict[str, Dataset]:
    """Written result objects (``NN-<kind>.dcm``) by kind: ``sr``, ``seg``, ``sc``, ``sc-2``..."""
    seen: dict[str, int] = {}
    objects = {}
    for path in paths:
        kind = path.stem.split("-", 1)[1]
        seen[kind] = seen.get(kind, 0) + 1
        objects[kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"] = dcmread(path)
    return objects
