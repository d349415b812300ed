"""Group commit: answer C-STORE after the atomic write, make it durable a few ms later, in groups.

``MEDDET_DURABILITY=group`` (default): the receive path writes each instance to a temp file
and renames it into the spool, without fsync, then answers C-STORE success (PS3.4 B.2.3; the
same moment dcmtk ``storescp`` and most archives answer). A process crash cannot lose or
truncate such a file (the kernel holds it); only a power cut or kernel crash can, and only
until the next flush. :class:`GroupCommitter` puts every event of the receive path on one
ordered list; its thread makes all files written so far durable with one flush of the spool's
file system, at most every :data:`WINDOW_S`, and only then hands the events, in order, to the
audit recorder. So the audit trail, series completion and Storage Commitment (PS3.4 Annex J,
dicom_node/commitment.py) never see an instance that is not flushed; what the flusher has not
reached yet after a crash is found by recovery at the next start, as an unrecorded spool file.

The flush is ``syncfs(2)`` on Linux: file data, inodes and folder entries of the whole file
system, one device cache flush (measured: 30 files, ~7 ms; 30 ``fsync`` calls plus one of the
folder, ~90 ms). Elsewhere every file and its folder is fsynced.

``MEDDET_DURABILITY=per-instance``: the spool fsyncs file and folder before the handler
answers (one durable write per instance, see docs/performance.md); events pass straight on.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dicom_node.events import Event, InstanceQuarantined, InstanceStored
from dicom_node.logging import get_logger

log = get_logger(__name__)

#: At most one flush per this many seconds while instances keep arriving (a lone instance
#: is flushed at once): the longest an acknowledged instance waits to be durable, plus the
#: flush itself.
WINDOW_S = 0.02
#: Delays between attempts when a flush fails (EIO, ENOSPC): events are held, never passed on.
RETRY_S = (0.05, 0.2, 1.0)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


_SYNCFS = _load_syncfs()


def flush_files(folder: Path, paths: Iterable[Path]) -> None:
    """Make ``paths`` (files under ``folder``'s file system) and their folder entries durable.

    One ``syncfs`` of ``folder``'s file system where the OS has it, else ``fsync`` of every
    file and every distinct parent folder. Raises OSError when the flush fails.
    """
    if _SYNCFS is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs: {os.strerror(error)}")
        finally:
            os.close(fd)
        return
    parents: set[Path] = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        parents.add(path.parent)
    for parent in parents:
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def written_files(event: Event) -> list[Path]:
    """The files an event says were written (they must be flushed before it is passed on)."""
    if isinstance(event, InstanceStored):
        return [event.stored.path]
    if isinstance(event, InstanceQuarantined):
        return [event.path, event.path.with_suffix(".json")]
    return []


class GroupCommitter:
    """Holds the receive path's events until their files are flushed, then passes them on.

    ``put`` never blocks and never touches the disk; one thread flushes and forwards.
    """

    def __init__(
        self,
        folder: Path,
        forward: Callable[[Event], None],
        window: float = WINDOW_S,
        flush: Callable[[Path, list[Path]], None] = flush_files,
    ) -> None:
        self.folder = folder
        self.window = window
        #: ``flush(folder, paths)``; replaceable (benchmarks measure the node without it).
        self.flush = flush
        self._forward = forward
        self._pending: list[Event] = []
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        #: Groups flushed, files in them, and the slowest flush (seconds): for metrics and tests.
        self.groups = 0
        self.files = 0
        self.slowest_flush_s = 0.0

    def start(self) -> GroupCommitter:
        self._thread.start()
        return self

    def put(self, event: Event) -> None:
        """Queue an event; it reaches the recorder after the next flush (in order)."""
        with self._cond:
            self._pending.append(event)
            if self._waiting:
                self._waiting = False
                self._cond.notify()

    def drain(self, timeout: float = 30.0) -> bool:
        """Block until every event put before this call is flushed and passed on."""
        if not self._thread.is_alive():
            return True  # stopped (everything was passed on) or never started
        marker = threading.Event()
        self.put(marker)  # type: ignore[arg-type]
        return marker.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Flush and pass on what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        last_flush = float("-inf")
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._waiting = True
                    self._cond.wait()
                stopping = self._stopping
            # Let the group fill: no more than one flush per window while instances arrive.
            delay = last_flush + self.window - time.monotonic()
            if delay > 0 and not stopping:
                time.sleep(delay)
            with self._cond:
                events, self._pending = self._pending, []
            if not events:
                return  # stopping, nothing left
            last_flush = time.monotonic()
            if not self._flush(events):
                log.error(
                    "events not passed on at shutdown: flush failed; recovery records the "
                    "spool files at the next start",
                    events=len(events),
                )
                return
            for event in events:
                if isinstance(event, threading.Event):
                    event.set()  # a drain() marker
                else:
                    self._forward(event)

    def _flush(self, events: list[Event]) -> bool:
        """Flush the files of ``events``; retried while it fails. False: given up (stopping)."""
        paths = [path for event in events for path in written_files(event)]
        if not paths:
            return True
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                self.flush(self.folder, paths)
            except OSError as exc:
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                log.error(
                    "spool flush failed; events held until it succeeds",
                    error=str(exc),
                    files=len(paths),
                    attempt=attempt,
                )
                if self._stopping and attempt >= len(RETRY_S):
                    return False
                time.sleep(delay)
                continue
            took = time.monotonic() - started
            self.groups += 1
            self.files += len(paths)
            self.slowest_flush_s = max(self.slowest_flush_s, took)
            return True
