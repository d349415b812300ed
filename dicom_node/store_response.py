"""C-STORE responses without pynetdicom's per-response pydicom dataset.

pynetdicom builds, validates and encodes a pydicom dataset for every C-STORE-RSP command
set, about 30% of the association thread's CPU per received instance. A plain response
(a status, nothing else) is seven fixed elements; :func:`encode_store_response` writes them
directly (byte-equal to pynetdicom's, tested), and :class:`FastStoreResponses` sends them,
leaving everything else to pynetdicom. Installed by :func:`dicom_node.reactor.accelerate`.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA


def encode_store_response(
    message_id: int, sop_class: str, sop_instance: str, status: int, error_comment: str | None = None
) -> bytes:
    """A C-STORE-RSP command set (implicit VR little endian, PS3.7 9.3.1.2), as pynetdicom
    encodes it but without building and validating a pydicom dataset per response.
    ``error_comment``: Error Comment (0000,0902), LO, at most 64 characters."""

    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0x0000, tag, len(value)) + value

    def uid(value: str) -> bytes:
        raw = value.encode("ascii")
        return raw + b"\0" if len(raw) % 2 else raw

    def text(value: str) -> bytes:
        raw = value.encode("ascii", "replace")
        return raw + b" " if len(raw) % 2 else raw

    body = b"".join(
        (
            element(0x0002, uid(sop_class)),
            element(0x0100, struct.pack("<H", 0x8001)),  # C-STORE-RSP
            element(0x0120, struct.pack("<H", message_id)),
            element(0x0800, struct.pack("<H", 0x0101)),  # no data set
            element(0x0900, struct.pack("<H", status)),
            element(0x0902, text(error_comment[:64])) if error_comment is not None else b"",
            element(0x1000, uid(sop_instance)),
        )
    )
    return element(0x0000, struct.pack("<I", len(body))) + body


class FastStoreResponses(DIMSEServiceProvider):
    """DIMSE provider that sends plain C-STORE responses from :func:`encode_store_response`.

    Plain: a status with no Error Comment / Offending Element, no ``EVT_DIMSE_SENT``
    handler bound, one PDV. Anything else goes through pynetdicom's ``send_msg``.
    """

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if (
            type(primitive) is C_STORE
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status is not None
            and primitive.AffectedSOPClassUID
            and primitive.AffectedSOPInstanceUID
            and primitive.ErrorComment is None
            and primitive.OffendingElement is None
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            command = encode_store_response(
                primitive.MessageIDBeingRespondedTo,
                primitive.AffectedSOPClassUID,
                primitive.AffectedSOPInstanceUID,
                primitive.Status,
            )
            if self.maximum_pdu_size == 0 or len(command) + 6 <= self.maximum_pdu_size:
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)
