from io import BytesIO

import pytest
from pydicom.dataset import Dataset

from dicom_node import statuses
from dicom_node.headers import Rejected, inspect_instance
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
