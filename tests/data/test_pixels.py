"""dicom_node.pixels: decoding, rescale, ordering, multi-frame, canonical sagittal view, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, RLELossless

from detector.data.synthetic import make_study
from dicom_node.pixels import SeriesError, View, read_series, series_from_datasets
from dicom_node.synth import save, study_datasets, synth_uid

SIZE, N = 96, 4


@pytest.fixture(scope="module")
def study():
    return make_study(np.random.default_rng(8), n_slices=N, size=SIZE)


@pytest.fixture()
def datasets(study):
    return study_datasets(study, key=("pixels-test",), number=1, patient_id="T1")


def pixels_of(ds: Dataset) -> np.ndarray:
    return np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(ds.Rows, ds.Columns)


def write(datasets, folder: Path, syntax=ExplicitVRLittleEndian) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(datasets):
        save(ds, folder / f"{k:03d}.dcm", syntax)
    return folder


def test_order_follows_the_slice_normal_not_the_file_names(datasets, tmp_path):
    write(datasets[::-1], tmp_path)  # file 000 holds the last slice
    (tmp_path / "notes.txt").write_text("not DICOM")
    series = read_series(tmp_path)
    assert [s.sop_instance_uid for s in series.slices] == [d.SOPInstanceUID for d in datasets]
    assert np.all(np.diff([s.position for s in series.slices]) > 0)
    assert series.series_instance_uid == datasets[0].SeriesInstanceUID
    assert len(series.sources) == N


def test_file_list_and_compressed_input(datasets, tmp_path):
    write(datasets, tmp_path, RLELossless)
    files = sorted(tmp_path.glob("*.dcm"))[:2]
    series = read_series(files)
    assert len(series.slices) == 2
    assert np.array_equal(series.images[0], pixels_of(datasets[0]).astype(np.float32))


def test_rescale_and_monochrome1(datasets):
    ds = copy.deepcopy(datasets[0])
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-10"
    raw = pixels_of(ds).astype(np.float32)
    img = series_from_datasets([ds]).images[0]
    np.testing.assert_allclose(img, raw * 0.5 - 10)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inv = series_from_datasets([ds]).images[0]
    np.testing.assert_allclose(inv, img.max() + img.min() - img)


@pytest.mark.parametrize(
    "iop,transform",
    [
        ([0, -1, 0, 0, 0, 1], lambda a: a[::-1, ::-1]),  # anterior right, feet up
        ([0, 0, -1, 0, 1, 0], lambda a: a.T),  # rows and columns swapped
        ([0, 0, 1, 0, -1, 0], lambda a: a.T[::-1, ::-1]),
    ],
)
def test_canonical_view_undoes_other_sagittal_orientations(datasets, study, iop, transform):
    ds = copy.deepcopy(datasets[1])
    stored = np.ascontiguousarray(transform(pixels_of(ds)))
    ds.Rows, ds.Columns = stored.shape
    ds.PixelData = stored.tobytes()
    ds.ImageOrientationPatient = [str(v) for v in iop]
    series = series_from_datasets([ds])
    assert np.array_equal(series.images[0], pixels_of(datasets[1]).astype(np.float32))
    canonical_box = tuple(float(v) for v in study.boxes[1][0])
    source_box = series.to_source_box(0, canonical_box)
    # the box drawn on the stored pixels covers the same pixels as the canonical one
    mask = np.zeros((SIZE, SIZE), bool)
    x0, y0, x1, y1 = (int(round(v)) for v in canonical_box)
    mask[y0:y1, x0:x1] = True
    stored_mask = np.zeros(stored.shape, bool)
    sx0, sy0, sx1, sy1 = (int(round(v)) for v in source_box)
    stored_mask[sy0:sy1, sx0:sx1] = True
    assert np.array_equal(transform(mask), stored_mask)
    back = series.slices[0].view.from_source_box(source_box, stored.shape)
    np.testing.assert_allclose(back, canonical_box)


def test_canonical_false_keeps_stored_pixels(datasets):
    ds = copy.deepcopy(datasets[0])
    ds.ImageOrientationPatient = ["0", "-1", "0", "0", "0", "1"]
    img = series_from_datasets([ds], canonical=False).images[0]
    assert np.array_equal(img, pixels_of(ds).astype(np.float32))
    assert View().to_source_box((1, 2, 3, 4), (9, 9)) == (1, 2, 3, 4)


def enhanced_mr(datasets) -> Dataset:
    """A multi-frame (Enhanced MR style) dataset holding the slices in shuffled frame order."""
    order = [2, 0, 3, 1]
    first = datasets[0]
    ds = Dataset()
    for kw in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "Modality",
        "FrameOfReferenceUID",
    ):
        setattr(ds, kw, getattr(first, kw))
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = synth_uid("enhanced")
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = first.ImageOrientationPatient
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = "2"
    shared.PixelValueTransformationSequence[0].RescaleIntercept = "1"
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item = Dataset()
        item.PlanePositionSequence = Sequence([Dataset()])
        item.PlanePositionSequence[0].ImagePositionPatient = datasets[k].ImagePositionPatient
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([pixels_of(datasets[k]) for k in order]).tobytes()
    return ds, order


def test_enhanced_multiframe_is_split_ordered_and_rescaled(datasets, tmp_path):
    ds, order = enhanced_mr(datasets)
    from pydicom.dataset import FileMetaDataset

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    series = read_series(tmp_path / "enhanced.dcm")
    assert len(series.slices) == N and len(series.sources) == 1
    for k, s in enumerate(series.slices):
        np.testing.assert_allclose(s.image, pixels_of(datasets[k]).astype(np.float32) * 2 + 1)
        assert s.frame == order.index(k) + 1  # the 1-based frame it came from


def test_errors_name_what_is_missing(datasets, tmp_path):
    with pytest.raises(SeriesError, match="no DICOM files"):
        (tmp_path / "empty").mkdir()
        read_series(tmp_path / "empty")
    with pytest.raises(SeriesError, match="no such file"):
        read_series(tmp_path / "nowhere")
    broken = copy.deepcopy(datasets[0])
    del broken.PixelData
    with pytest.raises(SeriesError, match="no image instance.*PixelData"):
        series_from_datasets([broken])
    write([broken], tmp_path / "sr-only")
    with pytest.raises(SeriesError, match="no DICOM image found"):
        read_series(tmp_path / "sr-only")
    series = series_from_datasets([broken, datasets[1]])  # non-image objects beside are ignored
    assert [s.sop_instance_uid for s in series.slices] == [datasets[1].SOPInstanceUID]
    other = copy.deepcopy(datasets[1])
    other.SeriesInstanceUID = synth_uid("other")
    other.SeriesDescription = "AX T2"
    with pytest.raises(SeriesError, match="2 series.*AX T2"):
        series_from_datasets([datasets[0], other])
    assert len(series_from_datasets([datasets[0], other], series_uid=other.SeriesInstanceUID).slices) == 1
    with pytest.raises(SeriesError, match="not found"):
        series_from_datasets([datasets[0]], series_uid="1.2.3")
