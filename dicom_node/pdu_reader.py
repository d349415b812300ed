"""Reading one whole DICOM Upper Layer PDU from a socket, with a deadline and a size cap.

:func:`read_pdu` reads the 6-byte header, refuses an unknown PDU type or a declared length
over the limit (``max_pdu`` for P-DATA-TF, :data:`CONTROL_PDU_LIMIT` for the others) before
reading the body, and must have the whole PDU within ``network_timeout`` of its first byte, so
a sender trickling bytes is cut. ``dicom_node/guards.py`` (``GuardedDUL``) reads PDUs with it.
"""

from __future__ import annotations

import socket
import struct
import time

#: Longest PDU other than P-DATA-TF (an association request with 128 contexts fits).
CONTROL_PDU_LIMIT = 256 << 10
_P_DATA_TF = 0x04
_PDU_TYPES = frozenset(range(0x01, 0x08))


class InvalidPDU(Exception):
    """A PDU the node will not read: unknown type, or longer than allowed."""

    def __init__(self, reason: str, diagnostic: int) -> None:
        super().__init__(reason)
        self.diagnostic = diagnostic  # A-ABORT reason (PS3.8 9.3.8): 1 unrecognised, 6 invalid


class PeerClosed(ConnectionError):
    """The peer closed the connection before the first byte of a PDU."""


def read_pdu(sock: socket.socket, max_pdu: int, network_timeout: float) -> bytearray:
    """One whole PDU (header and body), read within ``network_timeout`` of its first byte.

    Raises :class:`InvalidPDU` before reading the body of a PDU of unknown type or declared
    longer than allowed (``max_pdu`` for P-DATA-TF); ``TimeoutError`` or ``ConnectionError``
    when the peer is too slow or goes away part way. The socket is left with a
    ``network_timeout`` timeout.
    """
    deadline = time.monotonic() + network_timeout
    try:
        header = bytearray(6)
        _read_exactly(sock, memoryview(header), deadline, first=True)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in _PDU_TYPES:
            raise InvalidPDU(f"unknown PDU type 0x{pdu_type:02X}", diagnostic=1)
        limit = max_pdu if pdu_type == _P_DATA_TF else CONTROL_PDU_LIMIT
        if length > limit:
            raise InvalidPDU(f"PDU type 0x{pdu_type:02X} declares {length} bytes, limit {limit}", diagnostic=6)
        data = bytearray(6 + length)
        data[:6] = header
        _read_exactly(sock, memoryview(data)[6:], deadline)
        return data
    finally:
        try:
            sock.settimeout(network_timeout)  # for sends, and stock reads
        except OSError:
            pass  # closed under us


def _read_exactly(sock: socket.socket, into: memoryview, deadline: float, first: bool = False) -> None:
    """Fill ``into``; ``first``: these bytes start a PDU (a close before them is :class:`PeerClosed`)."""
    size, got = len(into), 0
    while got < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"PDU incomplete after network_timeout ({got} of {size} bytes)")
        sock.settimeout(left)
        count = sock.recv_into(into[got:], min(size - got, 1 << 20))
        if not count:
            if not got and first:
                raise PeerClosed("connection closed")
            raise ConnectionError(f"connection closed part way through a PDU ({got} of {size} bytes)")
        got += count
