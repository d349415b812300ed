"""Small DICOM MR series for node tests (no PHI: synthetic names and UIDs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def make_mr_series(
    n: int = 5,
    rows: int = 64,
    columns: int = 64,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    orientation: tuple[float, ...] = (0, 1, 0, 0, 0, -1),
    description: str = "SAG T2 TSE",
    body_part: str = "CSPINE",
    images_in_acquisition: bool = True,
    seed: int = 0,
) -> list[Dataset]:
    """A sagittal cervical T2 MR series of ``n`` uncompressed 16-bit slices."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference = generate_uid()  # one per series: slices share their geometry
    datasets = []
    for index in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientName = "SYNTH^TEST"
        ds.PatientID = "SYNTH0001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = "20260101"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.Modality = "MR"
        ds.Manufacturer = "MedDet Tests"
        ds.BodyPartExamined = body_part
        ds.SeriesDescription = description
        ds.StudyDescription = "MRI CERVICAL SPINE"
        ds.SeriesNumber = 3
        ds.InstanceNumber = index + 1
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = 100
        ds.RepetitionTime = 3000
        ds.EchoTrainLength = 16
        ds.MagneticFieldStrength = 1.5
        ds.SliceThickness = 3
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [-6.0 + 3.0 * index, -60.0, 60.0]
        if images_in_acquisition:
            ds.ImagesInAcquisition = n
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4000, (rows, columns), dtype=np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_size_bomb(rows: int = 65535, columns: int = 65535, frames: int = 10000) -> Dataset:
    """A ~1 KB RLE MR instance whose header declares ``rows`` x ``columns`` x ``frames`` pixels.

    The pixel data is one tiny fragment: nothing decodes it, but a reader that trusts the
    header would allocate ``rows * columns * frames`` samples (65535^2 x 10000 by default).
    """
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = make_mr_series(1, 8, 8)[0]
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds
