import struct
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_node import statuses
from dicom_node.headers import Rejected, inspect_dataset, inspect_instance
from tests.factories import make_mr_series


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_valid_instance_header() -> None:
    ds = make_mr_series(3)[0]
    header = inspect_instance(encode(ds), str(ds.SOPInstanceUID))
    assert header.series_uid == ds.SeriesInstanceUID
    assert header.study_uid == ds.StudyInstanceUID
    assert header.modality == "MR"
    assert header.expected_in_series == 3
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1"


@pytest.mark.parametrize(
    ("mutate", "status", "words"),
    [
        (lambda ds: delattr(ds, "StudyInstanceUID"), statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "StudyInstanceUID"),
        (lambda ds: setattr(ds, "Rows", 0), statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "Rows"),
        (lambda ds: delattr(ds, "PixelData"), statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "pixel"),
    ],
)
def test_unstorable_instances_are_rejected_with_a_named_status(mutate, status, words) -> None:  # type: ignore[no-untyped-def]
    ds = make_mr_series(1)[0]
    mutate(ds)
    with pytest.raises(Rejected) as info:
        inspect_instance(encode(ds))
    assert info.value.status == status
    assert words.lower() in info.value.reason.lower()


def test_truncated_and_garbage_data_cannot_be_understood() -> None:
    data = encode(make_mr_series(1)[0])
    with pytest.raises(Rejected) as truncated:
        inspect_instance(data[: len(data) - 1000])
    assert truncated.value.status == statuses.CANNOT_UNDERSTAND
    with pytest.raises(Rejected) as garbage:
        inspect_instance(b"\x00\x01garbage" * 50)
    assert garbage.value.status in (statuses.CANNOT_UNDERSTAND, statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)


def test_sop_uid_must_match_the_request() -> None:
    ds = make_mr_series(1)[0]
    with pytest.raises(Rejected, match="Affected SOP Instance UID"):
        inspect_instance(encode(ds), "1.2.3.4")


def test_a_bad_character_set_does_not_stop_the_instance() -> None:
    ds = make_mr_series(1)[0]
    ds.SpecificCharacterSet = "ISO_IR 999"
    header = inspect_instance(encode(ds))
    assert header.sop_uid == ds.SOPInstanceUID


def _overrun_pixel_data(data: bytes, extra: int = 1000) -> bytes:
    """``data`` with Pixel Data declaring ``extra`` bytes more than the file holds (a cut file
    whose image happens to be whole: only the declared length tells)."""
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    (length,) = struct.unpack("<I", data[at + 8 : at + 12])
    assert at + 12 + length == len(data), "Pixel Data must be the last element"
    return data[: at + 8] + struct.pack("<I", length + extra) + data[at + 12 :]


def _data_set(encoded_file: bytes) -> bytes:
    """The data set of a file written by pydicom (after preamble, DICM and file meta)."""
    meta = encoded_file[132:]
    (group_length,) = struct.unpack("<I", meta[8:12])
    return meta[12 + group_length :]


def test_pixel_data_declared_past_the_end_is_refused_from_a_file() -> None:
    data = _overrun_pixel_data(encode(make_mr_series(1, 16, 16)[0]))
    with pytest.raises(Rejected) as info:
        inspect_instance(data)
    assert info.value.status == statuses.CANNOT_UNDERSTAND
    assert "PixelData" in info.value.reason and "truncated" in info.value.reason


def test_pixel_data_declared_past_the_end_is_refused_at_c_store() -> None:
    data = _overrun_pixel_data(encode(make_mr_series(1, 16, 16)[0]))
    with pytest.raises(Rejected) as info:
        inspect_dataset(_data_set(data), ExplicitVRLittleEndian)
    assert info.value.status == statuses.CANNOT_UNDERSTAND
    assert "PixelData" in info.value.reason and "truncated" in info.value.reason


def test_truncated_compressed_pixel_data_is_refused() -> None:
    ds = make_mr_series(1, 16, 16)[0]
    ds.compress(RLELossless)
    data = encode(ds)
    assert inspect_instance(data).transfer_syntax_uid == RLELossless
    for read in (
        lambda cut: inspect_instance(cut),
        lambda cut: inspect_dataset(_data_set(cut), RLELossless),
    ):
        with pytest.raises(Rejected) as info:
            read(data[:-20])
        assert info.value.status == statuses.CANNOT_UNDERSTAND


def test_whole_instances_pass_both_readers() -> None:
    data = encode(make_mr_series(1, 16, 16)[0])
    assert inspect_instance(data).sop_uid == inspect_dataset(_data_set(data), ExplicitVRLittleEndian).sop_uid


def test_a_sequence_of_undefined_length_passes_both_readers() -> None:
    """pydicom's element generator gives a parsed DataElement (no length) for such a sequence;
    it once made both readers refuse the instance as unparseable (found by mypy --strict)."""
    ds = make_mr_series(1, 16, 16)[0]
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = [item]
    ds["ReferencedImageSequence"].is_undefined_length = True
    data = encode(ds)
    assert b"\xfe\xff\xdd\xe0" in data  # the sequence delimitation item: undefined length indeed
    assert inspect_instance(data).sop_uid == ds.SOPInstanceUID
    assert inspect_dataset(_data_set(data), ExplicitVRLittleEndian).sop_uid == ds.SOPInstanceUID
