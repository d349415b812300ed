"""Parsing and checking received instances: pure functions over bytes and datasets.

The SCP calls :func:`inspect_dataset` on the encoded data set of each C-STORE (recovery calls
:func:`inspect_instance` on spooled files); the result says where the instance belongs or why
it cannot be accepted. No pixel decoding happens here. :func:`encode_file_meta` builds the
file meta header the spool writes in front of the received bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.tag import BaseTag, Tag

from dicom_node import statuses
from dicom_node.limits import DEFAULT_MAX_INSTANCE_BYTES, DEFAULT_MAX_PIXELS, positive_int, too_many_pixels
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


def _expected_pixel_bytes(ds: Dataset) -> int:
    frames = positive_int(ds.get("NumberOfFrames")) or 1
    samples = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    total_bits = int(ds.Rows) * int(ds.Columns) * samples * bits * frames
    return (total_bits + 7) // 8


def check_image(
    ds: Dataset,
    transfer_syntax: str,
    pixel_bytes: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Raise :class:`Rejected` unless ``ds`` is a storable image: UIDs, geometry, pixels.

    ``pixel_bytes``: how many Pixel Data bytes arrived, when ``ds`` holds them not (fast path).
    ``max_pixels``: most Rows x Columns x frames the header may declare (nothing is decoded).
    """
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = ds.get(keyword)
        if not is_valid_uid(str(value) if value is not None else None):
            raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"missing or invalid {keyword}")
    rows, columns = positive_int(ds.get("Rows")), positive_int(ds.get("Columns"))
    if rows is None or columns is None:
        raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "Rows/Columns missing or zero")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "no pixel data")
    if (too_large := too_many_pixels(ds, max_pixels)) is not None:
        raise Rejected(statuses.INSTANCE_TOO_LARGE, too_large)
    if transfer_syntax in _NATIVE_SYNTAXES and "PixelData" in ds:
        if "BitsAllocated" not in ds:
            raise Rejected(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "BitsAllocated missing")
        expected = _expected_pixel_bytes(ds)
        actual = len(ds.PixelData) if pixel_bytes is None else pixel_bytes
        if actual < expected:
            raise Rejected(
                statuses.CANNOT_UNDERSTAND,
                f"pixel data truncated: {actual} bytes, {expected} expected",
            )


#: The elements :func:`check_image` and :func:`_header` read; the fast path parses only these.
_NEEDED_TAGS = frozenset(
    Tag(keyword)
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "Modality",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "ImagesInAcquisition",
        "SamplesPerPixel",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "BitsAllocated",
        "FloatPixelData",
        "PixelData",
    )
)
_PIXEL_DATA = Tag("PixelData")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_IMPLICIT_VR_LE = "1.2.840.10008.1.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"


def inspect_dataset(
    dataset: bytes,
    transfer_syntax: str,
    sop_uid_from_request: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_INSTANCE_BYTES,
) -> InstanceHeader:
    """Like :func:`inspect_instance`, for a C-STORE's data set (no file meta), ~4x faster.

    Walks the raw elements once with pydicom's element generator and converts only the dozen
    the node needs; large values (pixel data) are skipped, their length checked against
    the bytes actually received. A deflated data set is inflated first, up to ``max_bytes``.
    """
    if transfer_syntax == _DEFLATED:
        dataset = inflate(dataset, max_bytes)
    return _checked(lambda: _read_needed(dataset, transfer_syntax), sop_uid_from_request, max_pixels)


def inflate(deflated: bytes, max_bytes: int) -> bytes:
    """A deflated data set, inflated; :class:`Rejected` beyond ``max_bytes`` or truncated."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(deflated, max_bytes + 1)
    except zlib.error as exc:
        raise Rejected(statuses.CANNOT_UNDERSTAND, f"deflated data set corrupt: {exc}") from exc
    if len(inflated) > max_bytes:
        raise Rejected(
            statuses.INSTANCE_TOO_LARGE,
            f"inflates past MEDDET_MAX_INSTANCE_BYTES ({max_bytes} bytes)",
        )
    if not inflater.eof:
        raise Rejected(statuses.CANNOT_UNDERSTAND, "deflated data set truncated")
    return inflated


def _read_needed(dataset: bytes, transfer_syntax: str) -> tuple[Dataset, str, int | None]:
    """The needed elements of a data set, and how many Pixel Data bytes arrived."""
    implicit = transfer_syntax == _IMPLICIT_VR_LE
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    pixel_bytes = None
    for element in data_element_generator(BytesIO(dataset), implicit, True, defer_size=1024):
        _check_extent(element, len(dataset))
        if element.tag not in _NEEDED_TAGS:
            continue
        if (
            isinstance(element, RawDataElement) and element.value is None
        ):  # skipped: count only the bytes that really arrived
            present = max(0, min(element.length, len(dataset) - element.value_tell))
            if element.tag == _PIXEL_DATA:
                pixel_bytes = present
            element = element._replace(value=b"", length=0)
        raw[element.tag] = element
    ds = Dataset(raw)
    ds.set_original_encoding(implicit, True)
    return ds, transfer_syntax, pixel_bytes


def _check_extent(element: RawDataElement | DataElement, dataset_length: int) -> None:
    """Raise :class:`Rejected` when ``element``'s declared length runs past the data set's end
    (a truncated file; pydicom would silently read the short value).

    pydicom's generator gives a :class:`DataElement` only for a sequence of undefined length,
    which it has already read to its delimiter (a missing one raises EOFError): nothing to check.
    """
    if isinstance(element, DataElement) or element.length == _UNDEFINED_LENGTH:
        return  # encapsulated: a missing delimiter makes the generator raise EOFError
    end = element.value_tell + element.length
    if end > dataset_length:
        raise Rejected(
            statuses.CANNOT_UNDERSTAND,
            f"{_keyword(element.tag)} truncated: declares {element.length} bytes, "
            f"{max(0, dataset_length - element.value_tell)} present",
        )


def _keyword(tag: Any) -> str:
    return keyword_for_tag(tag) or str(Tag(tag))


def _check_all_extents(dataset: bytes, transfer_syntax: str, max_bytes: int) -> None:
    """Walk every element of a data set (values skipped) and check none runs past its end."""
    if transfer_syntax == _DEFLATED:
        dataset = inflate(dataset, max_bytes)
    implicit = transfer_syntax == _IMPLICIT_VR_LE
    for element in data_element_generator(BytesIO(dataset), implicit, True, defer_size=64):
        _check_extent(element, len(dataset))


def _read_file(encoded: bytes, max_bytes: int) -> tuple[Dataset, str, int | None]:
    fp = BytesIO(encoded)
    read_preamble(fp, True)
    meta = _read_file_meta_info(fp)
    transfer_syntax = str(meta.get("TransferSyntaxUID", ""))
    if transfer_syntax:  # without file meta pydicom guesses the encoding; so do not we
        _check_all_extents(encoded[fp.tell() :], transfer_syntax, max_bytes)
    ds = dcmread(BytesIO(encoded), force=True)
    return ds, str(ds.file_meta.get("TransferSyntaxUID", "")), None


def _checked(
    read: Callable[[], tuple[Dataset, str, int | None]],
    sop_uid_from_request: str | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> InstanceHeader:
    """Read, check and summarise an instance; every failure becomes :class:`Rejected`.

    Anything pydicom cannot read maps to ``CANNOT_UNDERSTAND`` (pydicom raises many
    exception types on garbage; all mean the same).
    """
    try:
        ds, transfer_syntax, pixel_bytes = read()
        check_image(ds, transfer_syntax, pixel_bytes, max_pixels)
        header = _header(ds, transfer_syntax)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a DIMSE status, never swallowed
        raise Rejected(statuses.CANNOT_UNDERSTAND, f"unparseable data set: {type(exc).__name__}: {exc}") from exc
    if sop_uid_from_request and sop_uid_from_request != header.sop_uid:
        raise Rejected(
            statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "SOPInstanceUID differs from the C-STORE request's Affected SOP Instance UID",
        )
    return header


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian file meta element (OB with the long length form)."""
    group, element = divmod(group_element, 0x10000)
    if vr == b"OB":
        return struct.pack("<HH2s2xI", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    value = text.encode("ascii")
    return value + pad if len(value) % 2 else value


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_class_uid: str,
    implementation_version: str,
    source_ae_title: str | None = None,
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1), as bytes.

    The same bytes pynetdicom's ``Event.encoded_dataset(include_meta=True)`` puts in front
    of the data set, without building and validating a pydicom dataset for every instance.
    """
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _padded(sop_class_uid, b"\x00")),
            _element(0x00020003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _element(0x00020010, b"UI", _padded(transfer_syntax, b"\x00")),
            _element(0x00020012, b"UI", _padded(implementation_class_uid, b"\x00")),
            _element(0x00020013, b"SH", _padded(implementation_version, b" ")) if implementation_version else b"",
            _element(0x00020016, b"AE", _padded(source_ae_title, b" ")) if source_ae_title else b"",
        )
    )
    return b"\x00" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def inspect_instance(
    encoded: bytes,
    sop_uid_from_request: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_INSTANCE_BYTES,
) -> InstanceHeader:
    """Parse a DICOM file's bytes (with file meta) and check it is a storable image.

    Raises :class:`Rejected` with the status to return (see :func:`_checked`).
    """
    return _checked(lambda: _read_file(encoded, max_bytes), sop_uid_from_request, max_pixels)


def _header(ds: Dataset, transfer_syntax: str) -> InstanceHeader:
    frames = positive_int(ds.get("NumberOfFrames"))
    expected = 1 if frames and frames > 1 else positive_int(ds.get("ImagesInAcquisition"))
    return InstanceHeader(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=transfer_syntax,
        modality=str(ds.get("Modality", "")) or None,
        expected_in_series=expected,
    )
