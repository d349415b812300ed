"""Limits on what one peer can make the node hold, before and after it is authenticated.

Issue 12 items 3 and 4. :func:`start_server` starts the event-driven server of
``dicom_node/reactor.py`` with these guards on top:

* :class:`GuardedServer` only accepts on its accept thread. Everything else happens on the
  connection's own thread: the source address is checked first (a refused peer gets an
  A-ASSOCIATE-RJ and the connection is closed; its request is never parsed), then the TLS
  handshake runs with a deadline (``acse_timeout``), so a silent peer holds one thread for a
  while, never the accept loop. At most ``pending_connections`` connections may be at that
  stage; more are closed at once.
* :class:`GuardedDUL` reads each PDU with ``read_pdu`` of ``dicom_node/pdu_reader.py``: with
  a deadline (``network_timeout`` from its first byte, so a sender trickling bytes is cut),
  refusing a declared length over the limit before reading it (``max_pdu`` for P-DATA,
  ``CONTROL_PDU_LIMIT`` for the others). It ends the association after
  ``association_time_limit`` however busy it is.
* :class:`GuardedDIMSE` stops keeping a data set once it passes ``max_instance_bytes``: the
  rest is counted and dropped, and the C-STORE handler answers INSTANCE_TOO_LARGE. A command
  set over :data:`COMMAND_SET_LIMIT` aborts the association.

Sockets keep a ``network_timeout`` timeout, so a peer that stops reading cannot block a send.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pynetdicom import AE
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node import reactor
from dicom_node.config import Settings
from dicom_node.limits import (
    DEFAULT_ACSE_TIMEOUT,
    DEFAULT_ASSOCIATION_TIME_LIMIT,
    DEFAULT_MAX_INSTANCE_BYTES,
    DEFAULT_MAX_PDU,
    DEFAULT_NETWORK_TIMEOUT,
)
from dicom_node.logging import get_logger
from dicom_node.negotiation import SharedUIDContexts
from dicom_node.pdu_reader import InvalidPDU, PeerClosed, read_pdu
from dicom_node.reactor import EventDrivenAssociation, EventDrivenRequestHandler
from dicom_node.reactor_dul import EventDrivenDUL
from dicom_node.store_response import FastStoreResponses

log = get_logger(__name__)

#: Longest DIMSE command set (a C-STORE-RQ's is ~200 bytes); a longer one aborts.
COMMAND_SET_LIMIT = 64 << 10
#: How long a refused peer gets to read our A-ASSOCIATE-RJ before the socket closes.
REFUSAL_LINGER = 2.0
#: A-ASSOCIATE-RJ: rejected-permanent (1), service-user (1), no reason given (1).
_ASSOCIATE_RJ = struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 1, 1, 1)

#: Checks a new connection's (address, port); returns why it is refused (and records it), or None.
Screen = Callable[[str, int], str | None]


@dataclass(frozen=True)
class Limits:
    """The guards' settings (see the module docstring); defaults as in :class:`Settings`."""

    max_pdu: int = DEFAULT_MAX_PDU
    max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT
    acse_timeout: float = DEFAULT_ACSE_TIMEOUT
    association_time_limit: float = DEFAULT_ASSOCIATION_TIME_LIMIT
    pending_connections: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_pdu=settings.max_pdu,
            max_instance_bytes=settings.max_instance_bytes,
            network_timeout=settings.network_timeout,
            acse_timeout=settings.acse_timeout,
            association_time_limit=settings.association_time_limit,
            pending_connections=4 * settings.max_associations,
        )


# --- the guarded layers ----------------------------------------------------------------------
class GuardedDUL(EventDrivenDUL):
    """An event-driven DUL that reads PDUs through ``pdu_reader.read_pdu`` and has a time limit.

    Made by :func:`guard` (``__class__`` assignment: it adds no state of its own beyond the
    attributes set there).
    """

    limits: Limits
    deadline: float  # time.monotonic() after which the association is ended
    time_up: bool

    def _read_pdu_data(self) -> None:
        """pynetdicom's ``_read_pdu_data`` with a length limit and a deadline.

        A PDU not read whole leaves the stream unusable: the node sends A-ABORT (for an
        invalid PDU), closes the connection and goes on as if the peer had closed it (Evt17).
        """
        transport = self.socket
        sock = transport.socket if transport is not None else None
        if sock is None:
            self.event_queue.put("Evt17")
            return
        try:
            data = read_pdu(sock, self.limits.max_pdu, self.limits.network_timeout)
        except InvalidPDU as exc:
            log.warning("invalid PDU; aborting association", reason=str(exc))
            self._hang_up(sock, struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 2, exc.diagnostic))
            return
        except PeerClosed:
            self._hang_up(sock)  # between PDUs: the ordinary way a connection ends
            return
        except (OSError, ValueError) as exc:  # TimeoutError and ConnectionError are OSErrors
            log.warning("connection lost or too slow mid-PDU; closing", reason=str(exc))
            self._hang_up(sock)
            return
        self._take_pdu(data)

    def _take_pdu(self, data: bytearray) -> None:
        """Decode a PDU and queue its event, as stock (dicom_node/fastlane.py overrides this)."""
        try:
            pdu, event = self._decode_pdu(data)
        except Exception as exc:  # noqa: BLE001 - as stock: any decoding failure is Evt19
            log.warning("undecodable PDU; aborting association", error=repr(exc))
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _hang_up(self, sock: socket.socket, last_words: bytes = b"") -> None:
        """Close the connection and tell the state machine so (Evt17); read nothing more."""
        hang_up(sock, last_words)
        if self.socket is not None:
            self.socket._is_connected = False  # ``ready`` is now False; select() skips it
        self.event_queue.put("Evt17")

    def idle_timer_expired(self) -> bool:
        """True when idle for ``network_timeout`` or past ``association_time_limit``."""
        if time.monotonic() >= self.deadline:
            if not self.time_up:
                self.time_up = True
                log.warning(
                    "association time limit reached; aborting",
                    limit_s=self.limits.association_time_limit,
                    calling_ae=self.assoc.requestor.ae_title,
                )
            return True
        return bool(super().idle_timer_expired())


# --- keeping instances --------------------------------------------------------------------
class DiscardedDataSet(BytesIO):
    """Stands in for a data set that passed the limit: counts what arrives, keeps nothing."""

    def __init__(self, received: int) -> None:
        super().__init__()
        self.received = received

    def write(self, data: Any) -> int:
        size = len(data)
        self.received += size
        return size


class GuardedDIMSE(FastStoreResponses):
    """A DIMSE provider that drops a data set's bytes beyond ``max_instance_bytes``."""

    max_instance_bytes: int

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self.message is None:
            self.message = DIMSEMessage()
        message = self.message
        command = _fragment_bytes(primitive, command=True)
        if message.encoded_command_set.tell() + command > COMMAND_SET_LIMIT:
            log.warning("DIMSE command set too long; aborting association", limit=COMMAND_SET_LIMIT)
            self.dul.event_queue.put("Evt19")  # as pynetdicom does for an invalid message
            return
        kept = message.data_set
        if isinstance(kept, BytesIO) and not isinstance(kept, DiscardedDataSet):
            if kept.tell() + _fragment_bytes(primitive, command=False) > self.max_instance_bytes:
                message.data_set = DiscardedDataSet(kept.tell())
        super().receive_primitive(primitive)


def _fragment_bytes(primitive: P_DATA, command: bool) -> int:
    """Bytes of command (or data set) fragments in a P-DATA primitive."""
    return sum(
        len(data) - 1
        for _, data in primitive.presentation_data_value_list
        if data and bool(data[0] & 1) == command  # message control header: bit 0 = command
    )


def guard(assoc: EventDrivenAssociation, limits: Limits) -> EventDrivenAssociation:
    """Put the guarded DUL and DIMSE provider on a new event-driven association."""
    dul: GuardedDUL = assoc.dul  # type: ignore[assignment]
    dul.__class__ = GuardedDUL
    dul.limits = limits
    dul.deadline = time.monotonic() + limits.association_time_limit
    dul.time_up = False
    dimse: GuardedDIMSE = assoc.dimse  # type: ignore[assignment]
    dimse.__class__ = GuardedDIMSE
    dimse.max_instance_bytes = limits.max_instance_bytes
    return assoc


class GuardedRequestHandler(EventDrivenRequestHandler):
    """Makes guarded, event-driven acceptor associations."""

    server: GuardedServer

    def _create_association(self) -> EventDrivenAssociation:
        return guard(super()._create_association(), self.server.limits)  # type: ignore[arg-type]


# --- accepting connections ----------------------------------------------------------------
class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the checks and the TLS handshake off the accept thread."""

    def __init__(self, *args: Any, limits: Limits, screen: Screen, **kwargs: Any) -> None:
        self.limits = limits
        self.screen = screen
        self._pending = threading.BoundedSemaphore(limits.pending_connections)
        super().__init__(*args, **kwargs)
        self.contexts = SharedUIDContexts(self.contexts)  # cheap per-association copies

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only; TLS is set up on the connection's thread (:meth:`_admit`)."""
        assert self.socket is not None
        return self.socket.accept()

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept thread: start the connection's thread, unless too many are pending."""
        if not self._pending.acquire(blocking=False):
            log.warning("too many connections being set up; closing one", address=client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._pending.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """On the connection's thread: admit it, then make the association as stock."""
        try:
            admitted = self._admit(request, client_address)
        except Exception as exc:  # noqa: BLE001 - one connection's failure must not leak it
            log.error("connection setup failed; closed", error=repr(exc))
            close(request)
            admitted = None
        finally:
            self._pending.release()
        if admitted is not None:
            super().process_request_thread(admitted, client_address)

    def _admit(self, sock: socket.socket, client_address: Any) -> socket.socket | None:
        """The socket to make an association on (TLS-wrapped when on), or None: closed."""
        address, port = str(client_address[0]), int(client_address[1])
        if self.screen(address, port) is not None:
            refuse(sock, plain=self.ssl_context is None)
            return None
        sock.settimeout(self.limits.acse_timeout)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
                log.warning("TLS handshake failed; connection closed", address=address, error=str(exc))
                close(sock)
                return None
        sock.settimeout(self.limits.network_timeout)
        return sock


def refuse(sock: socket.socket, plain: bool) -> None:
    """Answer a connection with A-ASSOCIATE-RJ (plain TCP only) and close it.

    The peer's request is read and dropped in small pieces for at most REFUSAL_LINGER
    seconds, so that closing does not reset the connection before the peer reads the answer.
    """
    try:
        if plain:
            sock.settimeout(REFUSAL_LINGER)
            sock.sendall(_ASSOCIATE_RJ)
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + REFUSAL_LINGER
            while time.monotonic() < deadline and sock.recv(4096):
                pass
    except OSError:
        pass
    finally:
        close(sock)


def hang_up(sock: socket.socket, last_words: bytes = b"") -> None:
    """Send ``last_words`` if the peer takes them at once, then shut the connection down both
    ways (the socket itself is closed by pynetdicom when the association ends)."""
    try:
        if last_words:
            sock.settimeout(0.5)
            sock.sendall(last_words)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def close(sock: socket.socket) -> None:
    hang_up(sock)
    sock.close()


def start_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    ssl_context: Any,
    limits: Limits,
    screen: Screen,
    server_class: type[GuardedServer] = GuardedServer,
    request_handler: type[GuardedRequestHandler] = GuardedRequestHandler,
    **server_options: Any,
) -> GuardedServer:
    """``reactor.start_server`` with the guards of this module (see the module docstring)."""
    server = reactor.start_server(
        ae,
        address,
        evt_handlers,
        ssl_context=ssl_context,
        server_class=server_class,
        request_handler=request_handler,
        limits=limits,
        screen=screen,
        **server_options,
    )
    return server  # type: ignore[return-value]
