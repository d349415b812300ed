"""Synthetic sagittal T2 cervical spine studies as real DICOM MR series plus ground truth.

Layout written by ``write_studies(out, n, seed)`` (``meddet synth``)::

    OUT/
      index.json                        # one entry per study: folders, UIDs, herniated levels
      SYN0001/
        dicom/IM0001.dcm ... IM00KK.dcm # MR Image Storage, one sagittal slice per file
        ground_truth.json               # the box file (format in dicom_node.datasets)

Pixels come from ``detector.data.synthetic.make_study`` (numpy); headers are those of a
sagittal T2 TSE of the cervical spine (orientation [0, 1, 0, 0, 0, -1], BodyPartExamined
CSPINE, SE / TE 100 ms / TR 3000 ms). Names are fake (``SYNTH^0001``). UIDs are derived from
the seed, so the same command writes the same UIDs.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)

from detector.types import CLASS_NAMES

TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflate": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
_NAMESPACE = uuid.UUID("8f0e4f2a-5b1c-4c8e-9d7e-3a6f1b2c4d5e")


def synth_uid(*parts: object) -> str:
    """A valid ``2.25.`` UID from a UUID5 of ``parts`` (deterministic)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, '|'.join(map(str, parts))).int}"


@dataclass(frozen=True)
class WrittenStudy:
    """Where one synthetic study went and what it holds."""

    name: str
    dicom_dir: Path
    ground_truth: Path
    study_instance_uid: str
    series_instance_uid: str
    herniated_levels: tuple[str, ...]

    def as_dict(self, root: Path) -> dict[str, Any]:
        return {
            "name": self.name,
            "dicom_dir": str(self.dicom_dir.relative_to(root)),
            "ground_truth": str(self.ground_truth.relative_to(root)),
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "herniated_levels": list(self.herniated_levels),
        }


def write_studies(
    out: Path,
    n: int,
    seed: int,
    hard: bool = False,
    n_slices: int = 15,
    size: int | None = None,
    transfer_syntax: str = "explicit",
) -> list[WrittenStudy]:
    """Write ``n`` studies (study i drawn from seed ``[seed, i]``) and ``OUT/index.json``."""
    from detector.data.synthetic import make_study

    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax: {transfer_syntax!r} not one of {list(TRANSFER_SYNTAXES)}")
    out = Path(out)
    written = []
    for i in range(n):
        study = make_study(np.random.default_rng([seed, i]), hard=hard, n_slices=n_slices, size=size)
        name = f"SYN{i + 1:04d}"
        datasets = study_datasets(
            study, key=(seed, i, hard, n_slices, size), number=i + 1, patient_id=f"SYNTH-{seed}-{i + 1:04d}"
        )
        dicom_dir = out / name / "dicom"
        dicom_dir.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(datasets):
            save(ds, dicom_dir / f"IM{k + 1:04d}.dcm", TRANSFER_SYNTAXES[transfer_syntax])
        gt = out / name / "ground_truth.json"
        gt.write_text(json.dumps(ground_truth(study, datasets, hard), indent=1))
        written.append(
            WrittenStudy(
                name, dicom_dir, gt, datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, study.herniated_levels
            )
        )
    (out / "index.json").write_text(
        json.dumps({"seed": seed, "hard": hard, "studies": [w.as_dict(out) for w in written]}, indent=1)
    )
    return written


def ground_truth(study: Any, datasets: list[Dataset], hard: bool) -> dict[str, Any]:
    """The box file of one series: boxes, labels and levels per SOP Instance UID."""
    return {
        "study_instance_uid": datasets[0].StudyInstanceUID,
        "series_instance_uid": datasets[0].SeriesInstanceUID,
        "hard": hard,
        "herniated_levels": list(study.herniated_levels),
        "instances": {
            ds.SOPInstanceUID: {
                "instance_number": int(ds.InstanceNumber),
                "boxes": [[round(float(v), 2) for v in b] for b in boxes],
                "labels": [CLASS_NAMES[int(c)] for c in labels],
                "levels": list(levels),
            }
            for ds, boxes, labels, levels in zip(datasets, study.boxes, study.labels, study.levels)
        },
    }


def study_datasets(study: Any, key: tuple[object, ...], number: int, patient_id: str) -> list[Dataset]:
    """One MR Image Storage dataset per slice of a ``SyntheticStudy`` (no file meta yet).

    ``key``: what makes the UIDs unique and repeatable; ``number``: the patient number.
    """
    study_uid, series_uid, frame_uid = (synth_uid(*key, kind) for kind in ("study", "series", "frame"))
    day = date(2024, 1, 1) + timedelta(days=int(study_uid[-6:]) % 365)
    n, rows, cols = study.volume.shape
    ps = float(study.pixel_spacing)
    pixels = np.clip(np.rint(study.volume), 0, 65535).astype(np.uint16)
    lo, hi = np.percentile(pixels, [1, 99.5])
    out = []
    for k in range(n):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = synth_uid(*key, "image", k)
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = "093000"
        ds.AcquisitionTime = ds.ContentTime = f"0931{k:02d}"
        ds.AccessionNumber = f"A{number:06d}"
        ds.Modality = "MR"
        ds.Manufacturer = "MedDet synthetic"
        ds.InstitutionName = "Synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MRI CERVICAL SPINE"
        ds.SeriesDescription = "SAG T2 TSE"
        ds.ManufacturerModelName = "phantom"
        ds.PatientName = f"SYNTH^{number:04d}"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CSPINE"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "tse2d1_16"
        ds.SliceThickness = f"{study.slice_thickness:.2f}"
        ds.RepetitionTime = "3000"
        ds.EchoTime = "100"
        ds.EchoTrainLength = 16
        ds.NumberOfAverages = "2"
        ds.ImagingFrequency = "123.2"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "3"
        ds.SpacingBetweenSlices = f"{study.spacing_between_slices:.2f}"
        ds.FlipAngle = "150"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        # sagittal: rows run to the feet (-z), columns to the back (+y); the slice normal is
        # row x column = -x, so slices step along -x and instance numbers follow the normal
        x = -float(study.slice_offsets[k])
        ds.ImagePositionPatient = [f"{x:.3f}", f"{-cols * ps / 2:.3f}", f"{rows * ps / 2:.3f}"]
        ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{x:.3f}"
        ds.ImagesInAcquisition = n
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [f"{ps:.6f}", f"{ps:.6f}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = f"{(lo + hi) / 2:.0f}"
        ds.WindowWidth = f"{max(hi - lo, 1):.0f}"
        ds.PixelData = pixels[k].tobytes()
        out.append(ds)
    return out


def save(ds: Dataset, path: Path, syntax: UID) -> None:
    """Write ``ds`` as a DICOM file (preamble, file meta) in ``syntax``, compressing if needed.

    ``ds`` itself is left as it was (a copy is compressed)."""
    ds = copy.deepcopy(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDDET_SYNTH"
    ds.file_meta = meta
    if syntax.is_compressed:
        ds.compress(syntax, generate_instance_uid=False)  # lossless: the same instance
    else:
        meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
