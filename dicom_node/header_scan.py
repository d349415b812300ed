"""A strict, fast scan of the header elements the node needs, straight from data set bytes.

The receive path calls :func:`scan_header` on the first bytes of each C-STORE data set (the
fast lane keeps them while it streams the rest to disk). It reads top-level elements of an
Explicit or Implicit VR Little Endian data set (PS3.5 7.1), skips every value it does not
need (sequences and encapsulated pixel data of undefined length included, PS3.5 7.5 and
A.4), and checks what :func:`dicom_node.headers.check_image` checks.

It only ever answers for the plain, valid case. Anything else (a refusal, an odd encoding,
a value it would have to interpret) returns None, and the caller runs the pydicom-based
:func:`dicom_node.headers.inspect_dataset`, which gives the same header or the refusal with
its reason. So this module can make the node faster, never different (tests compare both).
"""

from __future__ import annotations

import re
import struct

from dicom_node.headers import InstanceHeader
from dicom_node.limits import DEFAULT_MAX_PIXELS
from dicom_node.spool import is_valid_uid

#: Returned when the bytes given end before the scan does: call again with the whole data set.
NEED_MORE = object()

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA, _FLOAT_PIXEL_DATA = 0x7FE00010, 0x7FE00008
#: tag -> (keyword, VR): the elements the node reads (headers._NEEDED_TAGS, pixel data apart).
_NEEDED = {
    0x00080016: ("SOPClassUID", b"UI"),
    0x00080018: ("SOPInstanceUID", b"UI"),
    0x00080060: ("Modality", b"CS"),
    0x0020000D: ("StudyInstanceUID", b"UI"),
    0x0020000E: ("SeriesInstanceUID", b"UI"),
    0x00201002: ("ImagesInAcquisition", b"IS"),
    0x00280002: ("SamplesPerPixel", b"US"),
    0x00280008: ("NumberOfFrames", b"IS"),
    0x00280010: ("Rows", b"US"),
    0x00280011: ("Columns", b"US"),
    0x00280100: ("BitsAllocated", b"US"),
}
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_IMPLICIT = "1.2.840.10008.1.2"
_INTEGER = re.compile(rb"^ *[+-]?[0-9]{1,12} *$")
_CS = re.compile(rb"^[A-Z0-9_][A-Z0-9_ ]{0,15}$")
_MAX_DEPTH = 8


class _Odd(Exception):
    """Not the plain case: leave it to the full parse."""


class _Short(Exception):
    """The bytes given end before the scan does."""


def scan_header(
    head: bytes | bytearray | memoryview,
    total: int,
    transfer_syntax: str,
    sop_uid_from_request: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> InstanceHeader | None | object:
    """The header of a storable image, None (ask the full parse), or :data:`NEED_MORE`.

    ``head``: the data set's first bytes (all of it when ``len(head) == total``); ``total``:
    the data set's length as received.
    """
    if (
        transfer_syntax not in _NATIVE
        and not transfer_syntax.startswith("1.2.840.10008.1.2.4.")
        and transfer_syntax != "1.2.840.10008.1.2.5"
    ):
        return None  # deflated or big endian: the full parse inflates / decides
    view = memoryview(head)
    try:
        values, pixel_bytes = _walk(view, total, transfer_syntax == _IMPLICIT)
    except _Short:
        return NEED_MORE if len(view) < total else None
    except (_Odd, struct.error, UnicodeDecodeError):
        return None
    return _check(values, pixel_bytes, transfer_syntax, sop_uid_from_request, max_pixels)


_EXPLICIT_SHORT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_TAG_LENGTH = struct.Struct("<HHL")  # group, element, 32-bit length (also items, delimiters)
_LONG_LENGTH = struct.Struct("<L")


def _walk(view: memoryview, total: int, implicit: bool) -> tuple[dict[str, object], int | None]:
    values: dict[str, object] = {}
    pixel_bytes: int | None = None
    pos, previous = 0, -1
    have = len(view)
    while pos < total:
        if pos + 12 <= have and not implicit:  # the common case, inline
            group, element, vr, length = _EXPLICIT_SHORT.unpack_from(view, pos)
            tag = group << 16 | element
            if vr in _LONG_VRS:
                (length,) = _LONG_LENGTH.unpack_from(view, pos + 8)
                start = pos + 12
            elif group == 0xFFFE or not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise _Odd
            else:
                start = pos + 8
        else:
            tag, vr, length, start = _element_header(view, pos, have, implicit)
        if tag <= previous or tag >> 16 == 0xFFFE or tag >> 16 < 0x0008:
            raise _Odd  # out of order, a stray item, or a command / file meta element
        previous = tag
        if length == _UNDEFINED:
            if tag == _FLOAT_PIXEL_DATA or (tag == _PIXEL_DATA and implicit):
                raise _Odd
            pos = _skip_undefined(view, start, have, implicit or vr == b"UN", depth=0)
            if tag == _PIXEL_DATA:
                pixel_bytes = -1  # encapsulated: present, length not checked here
            continue
        end = start + length
        if end > total:
            raise _Odd  # runs past the data set: the full parse refuses it with the reason
        if tag in _NEEDED:
            keyword, expected_vr = _NEEDED[tag]
            if not implicit and vr != expected_vr:
                raise _Odd
            if end > have:
                raise _Short
            values[keyword] = _value(bytes(view[start:end]), expected_vr)
        elif tag == _PIXEL_DATA:
            pixel_bytes = length
        elif tag == _FLOAT_PIXEL_DATA:
            values["FloatPixelData"] = True
        pos = end
    return values, pixel_bytes


def _element_header(view: memoryview, pos: int, have: int, implicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR or b"", value length, value offset) of the element at ``pos``."""
    if pos + 8 > have:
        raise _Short
    group, element, length = _TAG_LENGTH.unpack_from(view, pos)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        return tag, b"", length, pos + 8
    vr = bytes(view[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        if pos + 12 > have:
            raise _Short
        (length,) = struct.unpack_from("<L", view, pos + 8)
        return tag, vr, length, pos + 12
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _Odd
    (length,) = struct.unpack_from("<H", view, pos + 6)
    return tag, vr, length, pos + 8


def _skip_undefined(view: memoryview, pos: int, have: int, implicit: bool, depth: int) -> int:
    """Skip the items of a sequence (or encapsulated pixel data) of undefined length, up to and
    including its delimiter; returns the offset after it."""
    if depth > _MAX_DEPTH:
        raise _Odd
    while True:
        tag, _, length, start = _element_header(view, pos, have, True)
        if tag == _SEQUENCE_END:
            return start
        if tag != _ITEM:
            raise _Odd
        pos = start + length if length != _UNDEFINED else _skip_item(view, start, have, implicit, depth + 1)


def _skip_item(view: memoryview, pos: int, have: int, implicit: bool, depth: int) -> int:
    """Skip a data set item of undefined length, up to and including its delimiter."""
    while True:
        tag, vr, length, start = _element_header(view, pos, have, implicit)
        if tag == _ITEM_END:
            return start
        if length == _UNDEFINED:
            pos = _skip_undefined(view, start, have, implicit or vr == b"UN", depth)
        else:
            pos = start + length


def _value(raw: bytes, vr: bytes) -> object:
    if vr == b"US":
        if len(raw) != 2:
            raise _Odd
        return struct.unpack("<H", raw)[0]
    if b"\\" in raw:
        raise _Odd  # several values: leave the interpretation to pydicom
    if vr == b"UI":
        text = raw.rstrip(b"\0 ").decode("ascii")
        if not is_valid_uid(text):
            raise _Odd
        return text
    stripped = raw.rstrip(b" ")
    if vr == b"IS":
        if not stripped.strip():
            return None
        if not _INTEGER.match(stripped):
            raise _Odd
        return int(stripped)
    if not stripped:  # CS (Modality)
        return None
    if not _CS.match(stripped):
        raise _Odd
    return stripped.decode("ascii")


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _check(
    values: dict[str, object],
    pixel_bytes: int | None,
    transfer_syntax: str,
    sop_uid_from_request: str | None,
    max_pixels: int,
) -> InstanceHeader | None:
    """headers.check_image and headers._header on the scanned values; None: not plain."""
    uids = [values.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")]
    study, series, sop, sop_class = (uid if isinstance(uid, str) else "" for uid in uids)
    if not (study and series and sop and sop_class):
        return None
    rows, columns = _positive(values.get("Rows")), _positive(values.get("Columns"))
    if rows is None or columns is None or not (pixel_bytes is not None or "FloatPixelData" in values):
        return None
    frames = _positive(values.get("NumberOfFrames"))
    if rows * columns * (frames or 1) > max_pixels:
        return None
    if transfer_syntax in _NATIVE and pixel_bytes is not None:
        bits, samples = values.get("BitsAllocated"), values.get("SamplesPerPixel", 1)
        if not isinstance(bits, int) or not isinstance(samples, int) or pixel_bytes < 0:
            return None
        if pixel_bytes < (rows * columns * samples * bits * (frames or 1) + 7) // 8:
            return None
    if sop_uid_from_request and sop_uid_from_request != sop:
        return None
    expected = 1 if frames and frames > 1 else _positive(values.get("ImagesInAcquisition"))
    modality = values.get("Modality")
    return InstanceHeader(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        modality=modality if isinstance(modality, str) else None,
        expected_in_series=expected,
    )
