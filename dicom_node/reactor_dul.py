"""The DUL half of the event-driven reactors (see dicom_node/reactor.py for the whole design).

:class:`EventDrivenDUL` is pynetdicom's DUL service provider with its 1 ms sleep made a wait:
its thread blocks in ``select()`` on the peer socket and on a wake-up socket pair, written
whenever something is put on its queues (:class:`NotifyingQueue`) or the thread is told to
stop. Its steps run under a lock, ``driver``, which an established
:class:`dicom_node.reactor.EventDrivenAssociation` takes to run them on its own thread.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from dicom_node.logging import get_logger

log = get_logger(__name__)

#: Longest a reactor blocks before re-checking its timers and kill flags (seconds).
MAX_WAIT = 0.1


class NotifyingQueue(queue.Queue[Any]):
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
    @property
    def _kill_thread(self) -> bool:
        flag: bool = self.__dict__.get("_kill_flag", False)
        return flag

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
