"""The handler's fast path gives the same answers as the full pydicom parse it replaces."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, RLELossless
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import create_file_meta
from pynetdicom.dsutils import encode_file_meta as pynetdicom_encode_file_meta

from dicom_node import statuses
from dicom_node.headers import Rejected, encode_file_meta, inspect_dataset, inspect_instance
from tests.factories import make_mr_series


def dataset_bytes(ds: Dataset, implicit: bool = False) -> bytes:
    """The data set alone (no file meta), as a C-STORE carries it."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def as_file(ds: Dataset, syntax: str, implicit: bool = False) -> bytes:
    meta = encode_file_meta(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        syntax,
        PYNETDICOM_IMPLEMENTATION_UID,
        PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    return meta + dataset_bytes(ds, implicit)


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.840.10008.5.1.4.1.1.4.12"])  # odd, even
def test_file_meta_bytes_equal_pynetdicoms(sop_uid: str) -> None:
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        expected = (
            b"\x00" * 128
            + b"DICM"
            + pynetdicom_encode_file_meta(
                create_file_meta(sop_class_uid=MRImageStorage, sop_instance_uid=sop_uid, transfer_syntax=syntax)
            )
        )
        ours = encode_file_meta(
            MRImageStorage,
            sop_uid,
            syntax,
            PYNETDICOM_IMPLEMENTATION_UID,
            PYNETDICOM_IMPLEMENTATION_VERSION,
        )
        assert ours == expected


@pytest.mark.parametrize(("syntax", "implicit"), [(ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, True)])
def test_fast_header_equals_full_parse(syntax: str, implicit: bool) -> None:
    for ds in make_mr_series(3, 32, 48):
        fast = inspect_dataset(dataset_bytes(ds, implicit), syntax, str(ds.SOPInstanceUID))
        full = inspect_instance(as_file(ds, syntax, implicit), str(ds.SOPInstanceUID))
        assert fast == full
        assert fast.expected_in_series == 3 and fast.transfer_syntax_uid == syntax


def test_fast_header_of_a_file_written_by_our_encoder_reads_back() -> None:
    ds = make_mr_series(1)[0]
    header = inspect_instance(as_file(ds, ExplicitVRLittleEndian))
    assert header.sop_uid == ds.SOPInstanceUID


def test_truncated_pixel_data_is_refused() -> None:
    ds = make_mr_series(1, 64, 64)[0]
    data = dataset_bytes(ds)[:-1000]
    with pytest.raises(Rejected) as info:
        inspect_dataset(data, ExplicitVRLittleEndian, str(ds.SOPInstanceUID))
    assert info.value.status == statuses.CANNOT_UNDERSTAND
    assert "truncated" in info.value.reason


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda ds: delattr(ds, "SeriesInstanceUID"), "SeriesInstanceUID"),
        (lambda ds: setattr(ds, "Columns", 0), "Rows/Columns"),
        (lambda ds: delattr(ds, "PixelData"), "no pixel data"),
    ],
)
def test_unstorable_data_sets_get_the_same_refusal_as_the_full_parse(mutate, words) -> None:  # type: ignore[no-untyped-def]
    ds = make_mr_series(1)[0]
    mutate(ds)
    with pytest.raises(Rejected) as fast:
        inspect_dataset(dataset_bytes(ds), ExplicitVRLittleEndian)
    with pytest.raises(Rejected) as full:
        inspect_instance(as_file(ds, ExplicitVRLittleEndian))
    assert (fast.value.status, fast.value.reason) == (full.value.status, full.value.reason)
    assert words in fast.value.reason


def test_garbage_and_mismatched_uid_are_refused() -> None:
    garbage = b"\x08\x00\x16\x00UI\xff\xff" + b"x" * 10
    with pytest.raises(Rejected) as fast:
        inspect_dataset(garbage, ExplicitVRLittleEndian)
    meta = encode_file_meta("1.2", "1.2", ExplicitVRLittleEndian, "1.2", "")
    with pytest.raises(Rejected) as full:
        inspect_instance(meta + garbage)
    assert fast.value.status == full.value.status
    ds = make_mr_series(1)[0]
    with pytest.raises(Rejected) as mismatch:
        inspect_dataset(dataset_bytes(ds), ExplicitVRLittleEndian, "1.2.3.4")
    assert mismatch.value.status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_encapsulated_pixel_data_is_accepted() -> None:
    ds = make_mr_series(1, 32, 32)[0]
    ds.compress(RLELossless)
    header = inspect_dataset(dataset_bytes(ds), RLELossless, str(ds.SOPInstanceUID))
    assert header.transfer_syntax_uid == RLELossless


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.840.10008.5.1.4.1.1.4.12"])
@pytest.mark.parametrize("status", [statuses.SUCCESS, statuses.OUT_OF_RESOURCES, statuses.CANNOT_UNDERSTAND])
def test_store_response_bytes_equal_pynetdicoms(sop_uid: str, status: int) -> None:
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    from dicom_node.store_response import encode_store_response

    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = MRImageStorage
    primitive.AffectedSOPInstanceUID = sop_uid
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = message.encode_msg(1, 16384)
    ((context_id, pdv),) = pdata.presentation_data_value_list
    assert pdv == b"\x03" + encode_store_response(7, MRImageStorage, sop_uid, status)


@pytest.mark.parametrize("comment", ["instance over MEDDET_MAX_INSTANCE_BYTES (100000 bytes)", "odd length"])
def test_store_response_with_an_error_comment_equals_pynetdicoms(comment: str) -> None:
    """The fast lane answers refusals with an Error Comment (0000,0902) as pynetdicom does."""
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    from dicom_node.store_response import encode_store_response

    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = MRImageStorage
    primitive.AffectedSOPInstanceUID = "1.2.3.4"
    primitive.Status = statuses.INSTANCE_TOO_LARGE
    primitive.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = message.encode_msg(1, 16384)
    ((_, pdv),) = pdata.presentation_data_value_list
    assert pdv == b"\x03" + encode_store_response(3, MRImageStorage, "1.2.3.4", statuses.INSTANCE_TOO_LARGE, comment)
