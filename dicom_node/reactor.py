"""Event-driven reactors for pynetdicom associations: wake on input instead of sleeping.

Why: stock pynetdicom runs two polling loops per association. The DUL thread sleeps
``_run_loop_delay`` (1 ms) whenever its queues and socket are empty (dul.py ``run_reactor``);
the association thread sleeps 1 ms on every loop before looking for a decoded DIMSE message
(association.py ``_run_reactor``). Each C-STORE waits on both, so a sender that waits for
every response (dcmtk storescu does) sees a node that idles most of the time (pynetdicom
issue 650, pull request 651; DESIGN.md section 6).

What: the same loops, step for step, except that where they slept they now *block*:

* :class:`EventDrivenDUL` waits in ``select()`` on the peer socket and on a wake-up socket
  pair that is written whenever something is put on its ``to_provider_queue`` or
  ``event_queue`` or the thread is told to stop;
* :class:`EventDrivenAssociation` waits on a :class:`threading.Event` set whenever a DIMSE
  message or an ACSE primitive is queued for it.

Both waits have a 0.1 s ceiling, so timers (ARTIM, network idle) and a dead peer are still
noticed as before, and an idle association costs ~20 wake-ups a second, not a busy loop.

How it is installed: :func:`start_server` starts pynetdicom's threaded server with
:class:`EventDrivenRequestHandler`, which converts each new acceptor association with
:func:`accelerate` before it starts. Checked against pynetdicom 3.0.x (pyproject pins
``<3.1``). If the internals it relies on are missing (:func:`supported`), :func:`start_server`
logs a warning and falls back to stock ``AE.start_server``.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.logging import get_logger

log = get_logger(__name__)

#: Longest a reactor blocks before re-checking its timers and kill flags (seconds).
MAX_WAIT = 0.1
TESTED_VERSIONS = ("3.0.",)

# Private pynetdicom attributes this module reads or replaces.
_DUL_INTERNALS = (
    "_process_recv_primitive", "_is_transport_event", "state_machine", "artim_timer",
    "_idle_timer", "_kill_thread", "event_queue", "to_provider_queue", "to_user_queue",
)
_ASSOC_INTERNALS = (
    "_run_reactor", "_serve_request", "_reactor_checkpoint", "_is_paused", "_kill", "dimse",
)


def supported() -> bool:
    """True when this pynetdicom has the internals the event-driven reactors override."""
    probe = Association(AE(), "acceptor")
    return (
        pynetdicom.__version__.startswith(TESTED_VERSIONS)
        and all(hasattr(probe.dul, name) for name in _DUL_INTERNALS)
        and all(hasattr(probe, name) for name in _ASSOC_INTERNALS)
        and isinstance(getattr(probe.dimse, "msg_queue", None), queue.Queue)
        and hasattr(RequestHandler, "_create_association")
    )


class NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """A :class:`queue.Queue` that calls ``notify()`` after every put (under its lock)."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._notify()


class EventDrivenDUL(DULServiceProvider):
    """A DUL service provider whose thread blocks on its inputs instead of sleeping 1 ms."""

    def __init__(self, assoc: Association) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(assoc)
        self.event_queue = NotifyingQueue(self.wake)
        self.to_provider_queue = NotifyingQueue(self.wake)

    # Stock code sets ``_kill_thread`` from other threads (kill_dul, stop_dul): wake on it.
    @property  # type: ignore[override]
    def _kill_thread(self) -> bool:
        return self.__dict__.get("_kill_flag", False)

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self.__dict__["_kill_flag"] = value
        if value:
            self.wake()

    def wake(self) -> None:
        """Make a blocked :meth:`_wait_for_input` return (cheap; safe from any thread)."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # buffer full: a wake-up is already pending; closed: the thread is gone

    def _wait_for_input(self) -> None:
        """Block until the peer sends data, a queue gets an item, or MAX_WAIT passes."""
        readable: list[Any] = [self._wake_r]
        transport = self.socket
        sock = transport.socket if transport is not None else None
        if sock is not None and getattr(transport, "_is_connected", False) and sock.fileno() >= 0:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already buffered: select() would not see them
            readable.append(sock)
        try:
            ready, _, _ = select.select(readable, [], [], MAX_WAIT)
        except (OSError, ValueError):
            return  # socket closed under us; the stock checks turn that into Evt17
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def run_reactor(self) -> None:
        """pynetdicom 3.0 ``DULServiceProvider.run_reactor`` with the sleep made a wait."""
        try:
            self._run()
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _run(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait_for_input()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Either encode and send one primitive or receive and decode one PDU
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # as stock: abort without the state machine
                log.error("DUL reactor failed; aborting association", error=repr(exc))
                abort = A_ABORT_RQ()
                abort.source = 0x02
                abort.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False


class EventDrivenAssociation(Association):
    """An :class:`Association` whose acceptor loop waits on an event, not a 1 ms sleep.

    Made by :func:`accelerate` from a fresh association (pynetdicom builds the instance).
    """

    _inbox: threading.Event

    def kill(self) -> None:
        self._inbox.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0 ``Association._run_reactor`` with the sleep made a wait."""
        self._is_paused = False
        idle = False
        while not self._kill:
            if idle:
                self._inbox.wait(MAX_WAIT)
            self._inbox.clear()  # cleared before looking: a later put sets it again
            # Paused while a send_*() on this association waits for its own responses
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            idle = msg is None
            if msg is not None:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                pynetdicom.evt.trigger(self, pynetdicom.evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires, as stock
                self.is_aborted = True
                self.is_established = False
                pynetdicom.evt.trigger(self, pynetdicom.evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.error("network timeout reached", calling_ae=self.requestor.ae_title)
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def accelerate(assoc: Association) -> EventDrivenAssociation:
    """Give a new, not yet started association the event-driven DUL and reactor loop."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise ValueError("accelerate() needs an association that has not started")
    stock = assoc.dul
    dul = EventDrivenDUL(assoc)
    dul.socket = stock.socket
    dul._idle_timer.timeout = stock._idle_timer.timeout
    dul.artim_timer.timeout = stock.artim_timer.timeout
    for name in ("event_queue", "to_provider_queue"):  # e.g. Evt5, queued by the socket
        while not getattr(stock, name).empty():
            getattr(dul, name).put(getattr(stock, name).get())
    assoc.dul = dul
    assoc.__class__ = EventDrivenAssociation  # same layout: a subclass with new methods only
    fast: EventDrivenAssociation = assoc  # type: ignore[assignment]
    fast._inbox = threading.Event()
    fast.dimse.msg_queue = NotifyingQueue(fast._inbox.set)
    dul.to_user_queue = NotifyingQueue(fast._inbox.set)
    return fast


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's connection handler, making event-driven acceptor associations."""

    def _create_association(self) -> Association:
        return accelerate(super()._create_association())


def start_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    ssl_context: ssl.SSLContext | None = None,
    event_driven: bool = True,
) -> ThreadedAssociationServer:
    """Like ``ae.start_server(address, block=False, ...)``, with event-driven associations.

    Falls back to the stock server (and says so) when ``event_driven`` is off or this
    pynetdicom's internals differ from the versions this module was checked against.
    """
    if event_driven and not supported():
        log.warning(
            "pynetdicom internals differ from the tested versions; using stock polling reactors",
            pynetdicom=pynetdicom.__version__,
            tested=TESTED_VERSIONS,
        )
        event_driven = False
    if not event_driven:
        return ae.start_server(
            address, block=False, evt_handlers=evt_handlers, ssl_context=ssl_context
        )
    server = ae.make_server(
        address,
        evt_handlers=evt_handlers,
        ssl_context=ssl_context,
        server_class=ThreadedAssociationServer,
        request_handler=EventDrivenRequestHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    ae._servers.append(server)  # so ae.shutdown() stops it, as with ae.start_server
    return server
