"""The strict header scan (dicom_node/header_scan.py) agrees with the pydicom-based parse, or
declines (None) and leaves the case to it; it never answers differently."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from dicom_node.header_scan import NEED_MORE, scan_header
from dicom_node.headers import Rejected, inspect_dataset
from tests.dicom_node.test_ingest_fast_path import dataset_bytes
from tests.factories import make_mr_series


def with_sequences(ds: Dataset) -> Dataset:
    """Nested sequences before and after the needed elements (undefined lengths, as pydicom
    writes them), and a private element."""
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "T2", "99LOCAL"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.3", "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.ProcedureCodeSequence = Sequence([inner])
    ds.add_new(0x00191010, "LO", "private")
    return ds


def compressed(ds: Dataset, syntax: str) -> Dataset:
    ds.compress(syntax)
    return ds


CASES = {
    "explicit": (lambda: make_mr_series(1)[0], ExplicitVRLittleEndian, False),
    "implicit": (lambda: make_mr_series(1)[0], ImplicitVRLittleEndian, True),
    "sequences explicit": (lambda: with_sequences(make_mr_series(1)[0]), ExplicitVRLittleEndian, False),
    "sequences implicit": (lambda: with_sequences(make_mr_series(1)[0]), ImplicitVRLittleEndian, True),
    "no ImagesInAcquisition": (
        lambda: make_mr_series(1, images_in_acquisition=False)[0],
        ExplicitVRLittleEndian,
        False,
    ),
    "RLE": (lambda: compressed(make_mr_series(1)[0], RLELossless), RLELossless, False),
    "JPEG-LS": (lambda: compressed(make_mr_series(1)[0], JPEGLSLossless), JPEGLSLossless, False),
}


@pytest.mark.parametrize("case", CASES)
def test_scan_equals_the_full_parse(case: str) -> None:
    make, syntax, implicit = CASES[case]
    ds = make()
    data = dataset_bytes(ds, implicit)
    expected = inspect_dataset(data, syntax, str(ds.SOPInstanceUID))
    assert scan_header(data, len(data), syntax, str(ds.SOPInstanceUID)) == expected
    # From the first bytes only, as the fast lane calls it (encapsulated pixel data: the
    # scan has to walk its fragments to the end, so it asks for the rest)
    from_head = scan_header(data[:4096], len(data), syntax, str(ds.SOPInstanceUID))
    assert from_head == (NEED_MORE if syntax in (RLELossless, JPEGLSLossless) else expected)


def test_multiframe_expects_one_instance() -> None:
    ds = make_mr_series(1)[0]
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    data = dataset_bytes(ds)
    header = scan_header(data, len(data), ExplicitVRLittleEndian)
    assert header == inspect_dataset(data, ExplicitVRLittleEndian) and header.expected_in_series == 1  # type: ignore[union-attr]


def test_a_head_too_short_asks_for_more() -> None:
    data = dataset_bytes(make_mr_series(1)[0])
    assert scan_header(data[:100], len(data), ExplicitVRLittleEndian) is NEED_MORE


def _mutations() -> dict[str, tuple[Dataset, str]]:
    cases: dict[str, tuple[Dataset, str]] = {}
    for name, change in {
        "no series UID": lambda d: delattr(d, "SeriesInstanceUID"),
        "bad SOP UID": lambda d: setattr(d, "SOPInstanceUID", "1.2.abc"),
        "zero rows": lambda d: setattr(d, "Rows", 0),
        "no pixel data": lambda d: delattr(d, "PixelData"),
        "short pixel data": lambda d: setattr(d, "PixelData", d.PixelData[:-100]),
        "huge image": lambda d: setattr(d, "NumberOfFrames", 100_000),
        "two modalities": lambda d: setattr(d, "Modality", ["MR", "CT"]),
        "odd frames value": lambda d: setattr(d, "NumberOfFrames", "1.5"),
    }.items():
        ds = make_mr_series(1)[0]
        change(ds)
        cases[name] = (ds, ExplicitVRLittleEndian)
    return cases


@pytest.mark.parametrize("name", list(_mutations()))
def test_anything_unusual_is_left_to_the_full_parse(name: str) -> None:
    ds, syntax = _mutations()[name]
    data = dataset_bytes(ds)
    assert scan_header(data, len(data), syntax) is None
    try:  # and the full parse, which then decides, refuses or accepts it on its own
        inspect_dataset(data, syntax)
    except Rejected:
        pass


def test_a_mismatched_request_uid_or_a_truncated_set_is_left_to_the_full_parse() -> None:
    data = dataset_bytes(make_mr_series(1)[0])
    assert scan_header(data, len(data), ExplicitVRLittleEndian, "1.2.3.999") is None
    assert scan_header(data[:-10], len(data) - 10, ExplicitVRLittleEndian) is None
    assert scan_header(data, len(data), "1.2.840.10008.1.2.1.99") is None  # deflated
