"""Event-driven reactors for pynetdicom associations: wake on input instead of sleeping.

Why: stock pynetdicom runs two polling loops per association. The DUL thread sleeps
``_run_loop_delay`` (1 ms) whenever its queues and socket are empty (dul.py ``run_reactor``);
the association thread sleeps 1 ms on every loop before looking for a decoded DIMSE message
(association.py ``_run_reactor``). Each C-STORE waits on both, so a sender that waits for
every response (dcmtk storescu does) sees a node that idles most of the time (pynetdicom
issue 650, pull request 651; DESIGN.md section 6).

What: the same loops, step for step, except that where they slept they now *block*, and
that one thread does the work of both while the association is established:

* :class:`EventDrivenDUL` waits in ``select()`` on the peer socket and on a wake-up socket
  pair that is written whenever something is put on its ``to_provider_queue`` or
  ``event_queue`` or the thread is told to stop. Its steps run under a lock, ``driver``.
* :class:`EventDrivenAssociation`, once established, takes ``driver`` and runs the DUL's
  steps itself: read the request PDUs, run the handler, send the response, all on one
  thread, like storescp; the DUL thread stays parked on the lock. (On a loaded machine every
  thread hand-off waits for a CPU; stock pynetdicom makes four per C-STORE.) It gives the
  DUL back to its thread for release, abort, pauses and requests other than C-STORE/C-ECHO,
  and otherwise waits on a :class:`threading.Event` set when a message is queued for it.

Every wait has a 0.1 s ceiling, so timers (ARTIM, network idle), kill flags and a dead peer
are still noticed as before, and an idle association costs ~20 wake-ups a second (measured
~1 ms CPU per idle second on an idle machine, up to ~8 ms on a loaded one, against ~30 ms for
the stock polls), not a busy loop. Both loops count their wake-ups (``wakeups``), so tests
check that behaviour directly instead of timing it.

How it is installed: :func:`start_server` starts pynetdicom's threaded server with
:class:`EventDrivenRequestHandler`, which converts each new acceptor association with
:func:`accelerate` before it starts. Checked against pynetdicom 3.0.x (pyproject pins
``<3.1``). If the internals it relies on are missing (:func:`supported`), :func:`start_server`
logs a warning and falls back to stock associations. dicom_node/guards.py adds limits on top.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import AE, _handlers, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.logging import get_logger
from dicom_node.store_response import FastStoreResponses

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
        #: Held by whichever thread runs the DUL's steps (see EventDrivenAssociation).
        self.driver = threading.Lock()
        #: Times this thread's loop came back from a wait (input, wake-up or MAX_WAIT).
        self.wakeups = 0

    # Stock code sets ``_kill_thread`` from other threads (kill_dul, stop_dul): wake on it.
    @property  # type: ignore[override]
    def _kill_thread(self) -> bool:
        return self.__dict__.get("_kill_flag", False)

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self.__dict__["_kill_flag"] = value
        if value:
            self.wake()

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """Stock, except that a wait also ends (None) once this DUL has stopped: a peer that
        closed before its A-ASSOCIATE-RQ would otherwise hold an association slot until the
        ACSE timeout (found by the fault suite's PDU fuzz)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_WAIT if end is None else min(MAX_WAIT, end - time.monotonic())
            item = super().receive_pdu(wait=wait and left > 0, timeout=max(left, 0.0) if wait else None)
            if item is not None or not wait or left <= 0 or not self.is_alive():
                return item

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
                self.wakeups += 1
            if self._kill_thread:
                break
            # While the association thread drives the DUL itself, this thread stays parked.
            if not self.driver.acquire(timeout=MAX_WAIT):
                self.wakeups += 1
                idle = False
                continue
            try:
                idle = not self.step()
            except Exception as exc:  # noqa: BLE001 - as stock: abort the association
                self.fail(exc)
                return
            finally:
                self.driver.release()

    def step(self) -> bool:
        """One reactor iteration: send one queued primitive or read one PDU, then run one
        state machine event. Returns False when there was nothing to do. Needs ``driver``."""
        if self.artim_timer.expired:
            self.event_queue.put("Evt18")
        if self._process_recv_primitive():
            pass
        elif self._is_transport_event():
            self._idle_timer.restart()
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            return False
        self.state_machine.do_action(event)
        return True

    def fail(self, exc: Exception) -> None:
        """As stock after an exception in the reactor: send A-ABORT, bypassing the FSM."""
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


class EventDrivenAssociation(Association):
    """An :class:`Association` whose acceptor loop drives its DUL itself while established.

    Stock pynetdicom hands every PDU from the DUL thread to the association thread and every
    response back, each hop after a 1 ms sleep. Here, while the association is established,
    the association thread holds ``dul.driver`` and runs the DUL's steps itself (the DUL
    thread stays parked on that lock): one thread reads the request, runs the handler and
    sends the response, like storescp. It hands the DUL back before anything that needs the
    DUL thread to run on its own: release, abort, pause (``send_*()`` from a handler), and
    any request other than C-STORE / C-ECHO (whose handler might wait on the DUL).

    Made by :func:`accelerate` from a fresh association (pynetdicom builds the instance).
    """

    _inbox: threading.Event
    _driving: bool = False
    #: Times the reactor loop came back from a wait (set per instance by :func:`accelerate`).
    wakeups: int

    def kill(self) -> None:
        self._inbox.set()
        if threading.current_thread() is self:
            self._stop_driving()
        super().kill()

    def _drive(self) -> bool:
        """Take the DUL from its thread (waits at most MAX_WAIT); True when held."""
        if not self._driving:
            self._driving = self.dul.driver.acquire(timeout=MAX_WAIT)
        return self._driving

    def _stop_driving(self) -> None:
        if self._driving:
            self._driving = False
            self.dul.driver.release()

    def _wait_for_input(self) -> None:
        """Nothing for us yet: step the DUL ourselves, or wait for its thread to deliver."""
        if not self._reactor_checkpoint.is_set() or not self._drive():
            self._inbox.wait(MAX_WAIT)
            return
        dul: EventDrivenDUL = self.dul  # type: ignore[assignment]
        try:
            if not dul.step():
                dul._wait_for_input()
        except Exception as exc:  # noqa: BLE001 - as stock: abort the association
            dul.fail(exc)

    def _run_reactor(self) -> None:
        """pynetdicom 3.0 ``Association._run_reactor``; where it slept, we drive or wait."""
        try:
            self._reactor_loop()
        finally:
            self._stop_driving()

    def _reactor_loop(self) -> None:
        self._is_paused = False
        idle = False
        while not self._kill:
            if idle:
                self._wait_for_input()
                self.wakeups += 1
            self._inbox.clear()  # cleared before looking: a later put sets it again
            # Paused while a send_*() on this association (any thread) waits for its own
            # responses: never wait holding the DUL, or its thread cannot send or read them
            self._is_paused = True
            while not self._reactor_checkpoint.wait(0 if self._driving else MAX_WAIT):
                self._stop_driving()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            idle = msg is None
            if msg is not None:
                if type(msg).__name__ not in _INLINE_REQUESTS:
                    self._stop_driving()
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self._stop_driving()
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self._stop_driving()
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires, as stock
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                self._stop_driving()
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


#: Requests whose handlers never wait on the DUL, so they may run while we drive it.
_INLINE_REQUESTS = frozenset({"C_STORE", "C_ECHO"})


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
    fast.wakeups = 0
    fast.dimse.msg_queue = NotifyingQueue(fast._inbox.set)
    dul.to_user_queue = NotifyingQueue(fast._inbox.set)
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        # pynetdicom's default handlers format a debug summary of every PDU and DIMSE
        # message whether or not anyone logs it (~10% of an instance's CPU)
        for event, handler in _STANDARD_LOG_HANDLERS:
            fast.unbind(event, handler)
    fast.dimse.__class__ = FastStoreResponses  # a subclass that adds no state
    return fast


_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
)


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
    server_class: type[ThreadedAssociationServer] = ThreadedAssociationServer,
    request_handler: type[RequestHandler] = EventDrivenRequestHandler,
    **server_options: Any,
) -> ThreadedAssociationServer:
    """Like ``ae.start_server(address, block=False, ...)``, with event-driven associations.

    Falls back to stock associations (and says so) when ``event_driven`` is off or this
    pynetdicom's internals differ from the versions this module was checked against.
    ``server_class``, ``request_handler`` and ``server_options``: subclasses and the server's
    keyword arguments (dicom_node/guards.py).
    """
    if event_driven and not supported():
        log.warning(
            "pynetdicom internals differ from the tested versions; using stock polling reactors"
            " (and no PDU, instance size or association time limits)",
            pynetdicom=pynetdicom.__version__,
            tested=TESTED_VERSIONS,
        )
        event_driven = False
    server = ae.make_server(
        address,
        evt_handlers=evt_handlers,
        ssl_context=ssl_context,
        server_class=server_class,
        request_handler=request_handler if event_driven else RequestHandler,
        **server_options,
    )
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    ae._servers.append(server)  # so ae.shutdown() stops it, as with ae.start_server
    return server
