"""Event-driven reactors for pynetdicom associations: wake on input instead of sleeping.

Why: stock pynetdicom runs two polling loops per association. The DUL thread sleeps
``_run_loop_delay`` (1 ms) whenever its queues and socket are empty (dul.py ``run_reactor``);
the association thread sleeps 1 ms on every loop before looking for a decoded DIMSE message
(association.py ``_run_reactor``). Each C-STORE waits on both, so a sender that waits for
every response (dcmtk storescu does) sees a node that idles most of the time (pynetdicom
issue 650, pull request 651; DESIGN.md section 6).

What: the same loops, step for step, except that where they slept they now *block*, and
that one thread does the work of both while the association is established:

* :class:`EventDrivenDUL` (dicom_node/reactor_dul.py) waits in ``select()`` on the peer
  socket and on a wake-up socket pair that is written whenever something is put on its
  ``to_provider_queue`` or ``event_queue`` or the thread is told to stop. Its steps run under
  a lock, ``driver``.
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
import ssl
import threading
from typing import Any

import pynetdicom
from pynetdicom import AE, _handlers, evt
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.logging import get_logger
from dicom_node.reactor_dul import MAX_WAIT, EventDrivenDUL, NotifyingQueue
from dicom_node.store_response import FastStoreResponses

log = get_logger(__name__)

TESTED_VERSIONS = ("3.0.",)

# Private pynetdicom attributes this module reads or replaces.
_DUL_INTERNALS = (
    "_process_recv_primitive",
    "_is_transport_event",
    "state_machine",
    "artim_timer",
    "_idle_timer",
    "_kill_thread",
    "event_queue",
    "to_provider_queue",
    "to_user_queue",
)
_ASSOC_INTERNALS = (
    "_run_reactor",
    "_serve_request",
    "_reactor_checkpoint",
    "_is_paused",
    "_kill",
    "dimse",
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

    dul: EventDrivenDUL  # set by accelerate(); a DULServiceProvider in the base class
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
        dul = self.dul
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
