"""The fast lane: C-STOREs streamed from P-DATA straight to the spool, on the reading thread.

pynetdicom keeps the association: negotiation, the state machine, release, abort, timers, and
every DIMSE message other than a plain C-STORE-RQ. While the association is established
(state Sta6) each P-DATA-TF PDU (PS3.8 9.3.5) read by the guarded DUL comes here instead of
to pynetdicom's decoder. In Sta6 a P-DATA-TF PDU only ever causes DT-2 ("issue a P-DATA
indication", state unchanged, PS3.8 9.2.3), so the lane may look at it first:

* a complete C-STORE-RQ command set (PS3.7 9.3.1.1) with a data set, on an accepted image
  storage context whose abstract syntax is the Affected SOP Class: the lane opens a temp file
  (dicom_node/intake.py) and writes every following data set fragment to it as it arrives,
  hashing as it goes; after the last fragment the intake decides, and the lane sends the
  C-STORE-RSP (dicom_node/store_response.py, byte-equal to pynetdicom's) on the socket;
* anything else (C-ECHO, N-ACTION, a command split over several PDUs, other contexts): its
  presentation data values go, unchanged and in order, to pynetdicom's DIMSE provider, as
  DT-2 would have delivered them.

So per instance there is no PDU object, no pydicom command dataset, no primitive, no queue,
no handler dispatch and no copy of the data set in memory. Installed only where nothing is
bound to the per-PDU and per-message events it skips (pynetdicom's debug logging binds
them), and only on guarded, event-driven associations (dicom_node/guards.py).
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from dicom_node.guards import GuardedDUL, GuardedRequestHandler, GuardedServer
from dicom_node.headers import encode_file_meta
from dicom_node.intake import DataSetSink, Outcome
from dicom_node.logging import get_logger
from dicom_node.spool import is_valid_uid
from dicom_node.store_response import encode_store_response

log = get_logger(__name__)

#: Events the lane does not fire; with any handler bound to one, the lane stays off.
SKIPPED_EVENTS = (
    evt.EVT_DATA_RECV,
    evt.EVT_PDU_RECV,
    evt.EVT_DIMSE_RECV,
    evt.EVT_DATA_SENT,
    evt.EVT_PDU_SENT,
    evt.EVT_DIMSE_SENT,
    evt.EVT_FSM_TRANSITION,
)
_C_STORE_RQ, _NO_DATA_SET = 0x0001, 0x0101
_COMMAND_LIMIT = 64 << 10
#: Most further PDUs of one data set read in the same reactor step (timers are checked between).
PDUS_PER_STEP = 64


class StoreTarget(Protocol):
    """Where streamed C-STOREs go (dicom_node/scp.py ``StoreHandlers``)."""

    def open_sink(self, file_meta: bytes) -> DataSetSink: ...

    def finish_store(self, key: int, sink: DataSetSink, sop_uid: str, transfer_syntax: str) -> Outcome: ...


class LaneError(Exception):
    """The peer broke the DIMSE message structure (PS3.7 6.3.1): the association is aborted."""


def decode_command(data: bytes | bytearray) -> dict[int, bytes] | None:
    """The elements of a command set (Implicit VR Little Endian, group 0000), or None if odd."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHL", data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            return None
        elements[element] = bytes(data[pos : pos + length])
        pos += length
    return elements


def _uid(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    text = raw.rstrip(b"\0 ").decode("ascii", "replace")
    return text if is_valid_uid(text) else None


def _us(raw: bytes | None) -> int | None:
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


class StoreLane:
    """One association's fast lane (see the module docstring)."""

    def __init__(self, dul: LaneDUL, target: StoreTarget, storage_classes: frozenset[str]) -> None:
        self.dul = dul
        self.assoc: Association = dul.assoc
        self.target = target
        self._storage = storage_classes
        self._contexts: dict[int, tuple[str, str]] | None = None
        self._passing = False  # within a message that pynetdicom is given
        self._command = bytearray()
        self._pending: list[list[Any]] = []  # command PDVs not yet decided on
        self._store: tuple[DataSetSink, int, int, str, str, str] | None = None
        #: C-STOREs this lane answered (tests check the lane really ran).
        self.stored = 0

    @property
    def busy(self) -> bool:
        """A C-STORE data set is arriving."""
        return self._store is not None

    def close(self) -> None:
        """The association ended: drop a data set still arriving."""
        if self._store is not None:
            self._store[0].discard()
            self._store = None

    def feed(self, pdu: bytes | bytearray) -> None:
        """Take one P-DATA-TF PDU (header included); raises LaneError on a broken stream."""
        view, end, pos = memoryview(pdu), len(pdu), 6
        to_pynetdicom: list[list[Any]] = []
        while pos < end:
            if pos + 6 > end:
                raise LaneError("truncated presentation data value item")
            (length,) = struct.unpack_from(">L", pdu, pos)
            if length < 2 or pos + 4 + length > end:
                raise LaneError("presentation data value item length out of range")
            context_id, control = pdu[pos + 4], pdu[pos + 5]
            value = view[pos + 5 : pos + 4 + length]  # message control header + fragment
            pos += 4 + length
            if self._store is not None:
                self._data(control, value[1:])
            elif self._passing:  # a message pynetdicom has: all of it goes there
                to_pynetdicom.append([context_id, bytes(value)])
                self._passing = control & 3 != 2  # its last data set fragment ends it
            elif control & 1:
                self._pending.append([context_id, bytes(value)])
                self._command += value[1:]
                if len(self._command) > _COMMAND_LIMIT:
                    raise LaneError("command set too long")
                if control & 2:
                    decided = self._decide(context_id)
                    if self._store is not None and to_pynetdicom:
                        self._deliver(to_pynetdicom)
                        to_pynetdicom = []
                    to_pynetdicom += decided
            elif self._pending:
                raise LaneError("data set fragment before its command set is complete")
            else:  # a data set with no command: pynetdicom's to judge
                to_pynetdicom.append([context_id, bytes(value)])
        if to_pynetdicom:
            self._deliver(to_pynetdicom)

    def _decide(self, context_id: int) -> list[list[Any]]:
        """A command set is complete: stream its data set here (C-STORE), or return its
        presentation data values for pynetdicom."""
        pending, command = self._pending, bytes(self._command)
        self._pending, self._command = [], bytearray()
        elements = decode_command(command)
        if elements is not None and self._start_store(context_id, elements):
            return []
        self._passing = elements is None or _us(elements.get(0x0800)) != _NO_DATA_SET
        return pending

    def _start_store(self, context_id: int, elements: dict[int, bytes]) -> bool:
        if _us(elements.get(0x0100)) != _C_STORE_RQ or _us(elements.get(0x0800)) in (None, _NO_DATA_SET):
            return False
        message_id = _us(elements.get(0x0110))
        sop_class, sop_instance = _uid(elements.get(0x0002)), _uid(elements.get(0x1000))
        context = self._context(context_id)
        if message_id is None or sop_class is None or sop_instance is None or context is None:
            return False
        abstract, transfer_syntax = context
        if sop_class != abstract or abstract not in self._storage:
            return False
        meta = encode_file_meta(
            sop_class,
            sop_instance,
            transfer_syntax,
            PYNETDICOM_IMPLEMENTATION_UID,
            PYNETDICOM_IMPLEMENTATION_VERSION,
        )
        sink = self.target.open_sink(meta)
        self._store = (sink, context_id, message_id, sop_class, sop_instance, transfer_syntax)
        return True

    def _context(self, context_id: int) -> tuple[str, str] | None:
        if self._contexts is None:
            self._contexts = {
                int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in self.assoc.accepted_contexts
                if cx.context_id is not None and cx.transfer_syntax
            }
        return self._contexts.get(context_id)

    def _data(self, control: int, fragment: memoryview) -> None:
        assert self._store is not None
        if control & 1:
            self.close()
            raise LaneError("command fragment inside a C-STORE data set")
        sink = self._store[0]
        sink.write(fragment)
        if control & 2:
            store, self._store = self._store, None
            _, cx_id, message_id, sop_class, sop_instance, transfer_syntax = store
            status, comment = self.target.finish_store(id(self.assoc), sink, sop_instance, transfer_syntax)
            self.stored += 1
            self._respond(cx_id, message_id, sop_class, sop_instance, status, comment)

    def _respond(
        self, context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int, comment: str | None
    ) -> None:
        """Send the C-STORE-RSP: straight to the socket, or through pynetdicom if it must wait."""
        command = encode_store_response(message_id, sop_class, sop_instance, status, comment)
        dul = self.dul
        limit = self.assoc.dimse.maximum_pdu_size  # the peer's
        if dul.to_provider_queue.empty() and dul.socket is not None and (not limit or len(command) + 6 <= limit):
            item = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
            dul.socket.send(struct.pack(">BBL", 0x04, 0, len(item)) + item)
            return
        response: Any = C_STORE()
        response.MessageIDBeingRespondedTo = message_id
        response.AffectedSOPClassUID = sop_class
        response.AffectedSOPInstanceUID = sop_instance
        response.Status = status
        if comment is not None:
            response.ErrorComment = comment[:64]
        self.assoc.dimse.send_msg(response, context_id)

    def _deliver(self, values: list[list[Any]]) -> None:
        """Give presentation data values to pynetdicom, as DT-2 would (PS3.8 9.2.3)."""
        primitive = P_DATA()
        primitive.presentation_data_value_list = values  # type: ignore[assignment]
        self.assoc.dimse.receive_primitive(primitive)


class LaneDUL(GuardedDUL):
    """A guarded DUL whose P-DATA-TF PDUs, once established, go through a :class:`StoreLane`.

    While a data set is arriving and its next PDU is already readable, the same step reads it
    too (up to :data:`PDUS_PER_STEP`): one reactor iteration per instance, not one per PDU.
    """

    lane: StoreLane

    def _read_pdu_data(self) -> None:
        super()._read_pdu_data()
        for _ in range(PDUS_PER_STEP):
            if not (self.lane.busy and self.event_queue.empty() and self.socket is not None and self.socket.ready):
                return
            super()._read_pdu_data()

    def _take_pdu(self, data: bytearray) -> None:
        if data[0] != 0x04 or self.state_machine.current_state != "Sta6":
            super()._take_pdu(data)
            return
        try:
            self.lane.feed(data)
        except LaneError as exc:
            log.warning("broken DIMSE message; aborting association", reason=str(exc))
            self.lane.close()
            self.event_queue.put("Evt19")  # as for an undecodable PDU


def attach(assoc: Association, target: StoreTarget, storage_classes: frozenset[str]) -> bool:
    """Put a fast lane on a guarded, not yet started association; False when it cannot have one."""
    if not isinstance(assoc.dul, GuardedDUL) or any(assoc.get_handlers(e) for e in SKIPPED_EVENTS):
        return False
    dul: LaneDUL = assoc.dul  # type: ignore[assignment]
    dul.__class__ = LaneDUL
    dul.lane = StoreLane(dul, target, storage_classes)
    assoc.bind(evt.EVT_CONN_CLOSE, lambda event: dul.lane.close())
    return True


class LaneServer(GuardedServer):
    """The guarded server, knowing where fast-lane C-STOREs go."""

    def __init__(self, *args: Any, lane_target: StoreTarget, lane_classes: frozenset[str], **kwargs: Any) -> None:
        self.lane_target = lane_target
        self.lane_classes = lane_classes  # the storage SOP classes the lane takes
        super().__init__(*args, **kwargs)


class LaneRequestHandler(GuardedRequestHandler):
    """Makes guarded, event-driven acceptor associations with a fast lane (when allowed)."""

    server: LaneServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        attach(assoc, self.server.lane_target, self.server.lane_classes)
        return assoc
