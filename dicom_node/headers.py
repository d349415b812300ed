"""Parsing and checking received instances: pure functions over bytes and datasets.

The SCP calls :func:`inspect_instance` on the encoded bytes of each C-STORE; the result says
where the instance belongs or why it cannot be accepted. No pixel decoding happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node import statuses
from dicom_node.spool import is_valid_uid


@dataclass(frozen=True)
class InstanceHeader:
    """What the node needs to know about one instance to spool and group it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    expected_in_series: int | None  # ImagesInAcquisition, or 1 for a multi-frame instance


class Rejected(Exception):
    """The instance cannot be accepted; ``status`` is the DIMSE status to return."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _expected_pixel_bytes(ds: Dataset) -> int:
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    samples = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    total_bits = int(ds.Rows) * int(ds.Columns) * samples * bits * frames
    return (total_bits + 7) // 8


def check_image(ds: Dataset, transfer_syntax: str) -> None:
    """Raise :class:`Rejected` unless ``ds`` is a storable image: UIDs, geometry, pixels."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = ds.get(keyword)
        if not is_valid_uid(str(value) if value is not None else None):
            raise Rejected(
                statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"missing or invalid {keyword}"
            )
    rows, columns = _int_or_none(ds.get("Rows")), _int_or_none(ds.get("Columns"))
    if rows is None or columns is None:
        raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "Rows/Columns missing or zero")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "no pixel data")
    if transfer_syntax in _NATIVE_SYNTAXES and "PixelData" in ds:
        if "BitsAllocated" not in ds:
            raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "BitsAllocated missing")
        expected = _expected_pixel_bytes(ds)
        actual = len(ds.PixelData)
        if actual < expected:
            raise Rejected(
                statuses.CANNOT_UNDERSTAND,
                f"pixel data truncated: {actual} bytes, {expected} expected",
            )


def inspect_instance(encoded: bytes, sop_uid_from_request: str | None = None) -> InstanceHeader:
    """Parse a DICOM file's bytes (with file meta) and check it is a storable image.

    Raises :class:`Rejected` with the status to return; anything pydicom cannot read maps to
    ``CANNOT_UNDERSTAND`` (pydicom raises many exception types on garbage; all mean the same).
    """
    try:
        ds = dcmread(BytesIO(encoded), force=True)
        transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        check_image(ds, transfer_syntax)
        header = _header(ds, transfer_syntax)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a DIMSE status, never swallowed
        raise Rejected(
            statuses.CANNOT_UNDERSTAND, f"unparseable data set: {type(exc).__name__}: {exc}"
        ) from exc
    if sop_uid_from_request and sop_uid_from_request != header.sop_uid:
        raise Rejected(
            statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "SOPInstanceUID differs from the C-STORE request's Affected SOP Instance UID",
        )
    return header


def _header(ds: Dataset, transfer_syntax: str) -> InstanceHeader:
    frames = _int_or_none(ds.get("NumberOfFrames"))
    expected = 1 if frames and frames > 1 else _int_or_none(ds.get("ImagesInAcquisition"))
    return InstanceHeader(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=transfer_syntax,
        modality=str(ds.get("Modality", "")) or None,
        expected_in_series=expected,
    )
