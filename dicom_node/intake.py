"""C-STORE intake: a data set streamed to a temp file as it arrives, checked, then spooled.

Both receive paths end here. The fast lane (dicom_node/fastlane.py) opens a
:class:`DataSetSink` when a C-STORE-RQ command set is complete and writes each P-DATA
fragment to it as it arrives (PS3.7 9.3.1.1, PS3.8 9.3.5): no instance is ever held whole in
memory (issue 12 item 4). The pynetdicom handler (stock reactors) writes the data set it was
given into one. :meth:`Intake.finish` then answers as PS3.4 B.2.3 asks: the header is read
from the first bytes (dicom_node/header_scan.py, the full parse when in doubt), the temp file
is renamed into the spool or moved to quarantine, the event goes to the recorder (through the
group committer) and the C-STORE status comes back.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicom_node import statuses
from dicom_node.audit.models import utcnow
from dicom_node.config import Settings
from dicom_node.events import Event, InstanceQuarantined, InstanceStored
from dicom_node.header_scan import NEED_MORE, scan_header
from dicom_node.headers import InstanceHeader, Rejected, inspect_dataset
from dicom_node.logging import get_logger
from dicom_node.spool import Spool, SpoolError

log = get_logger(__name__)

#: Bytes of each data set kept in memory for the header scan (the rest only goes to disk).
HEAD_BYTES = 64 << 10

#: Data set bytes gathered before they are written (one ``writev``), and most pieces.
PENDING_BYTES = 256 << 10
PENDING_PIECES = 64
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)

#: How long a check of the spool disk's fill level (MEDDET_DISK_WATERMARK) is reused.
DISK_CHECK_S = 0.25

#: A C-STORE status and the Error Comment to send with it (or None).
Outcome = tuple[int, str | None]


class DataSetSink:
    """One data set on its way to the spool: file meta, then each fragment, to a temp file.

    Counts and keeps the first :data:`HEAD_BYTES` as it goes; it does not hash (the audit
    recorder computes the file's SHA-256 from the spooled file, off this thread). Fragments
    are gathered (by reference, not copied) and written with one
    ``writev`` per :data:`PENDING_BYTES`, at :meth:`flush` and at :meth:`close`: one system
    call for a typical instance instead of one per fragment plus the file meta. A fragment
    given to :meth:`write` must therefore stay unchanged until the next :meth:`flush` or
    :meth:`close` (the fast lane's PDU buffers are never reused). Past ``limit`` data set
    bytes it deletes the file and only counts. ``refused`` (a status): nothing is written at
    all, e.g. the disk is above its watermark.
    """

    def __init__(self, path: Path, file_meta: bytes, limit: int, refused: int | None = None) -> None:
        self.path = path
        self.meta_size = len(file_meta)
        self.limit = limit
        self.refused = refused
        self.received = 0  # data set bytes, kept or not
        self.head = bytearray()
        self.too_large = False
        self.error: OSError | None = None
        self._fd: int | None = None
        self._pending: list[bytes | bytearray | memoryview] = [file_meta]
        self._pending_bytes = len(file_meta)
        if refused is None:
            try:
                self._fd = os.open(path, _CREATE, 0o666)
            except OSError as exc:
                self._fail(exc)

    def write(self, fragment: bytes | bytearray | memoryview) -> None:
        size = len(fragment)
        self.received += size
        if self._fd is None:
            return
        if self.received > self.limit:
            self.too_large = True
            self.discard()
            return
        if len(self.head) < HEAD_BYTES:
            self.head += fragment[: HEAD_BYTES - len(self.head)]
        self._pending.append(fragment)
        self._pending_bytes += size
        if self._pending_bytes >= PENDING_BYTES or len(self._pending) >= PENDING_PIECES:
            self.flush()

    def flush(self) -> None:
        """Write the gathered fragments (after which the caller may reuse their buffers)."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if self._fd is None or not pending:
            return
        try:
            _write_all(self._fd, pending)
        except OSError as exc:
            self._fail(exc)

    def skip(self, size: int) -> None:
        """Count ``size`` bytes that were received but not kept (past the limit upstream)."""
        self.received += size
        if self.received > self.limit:
            self.too_large = True
            self.discard()

    def close(self) -> None:
        """Write what is gathered and close the file (complete: every fragment arrived)."""
        if self._fd is not None:
            self.flush()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                self._fail(exc)

    def discard(self) -> None:
        """Close and delete the temp file (refused, aborted, or over the limit)."""
        self._pending, self._pending_bytes = [], 0
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass
        self.path.unlink(missing_ok=True)

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self.discard()

    @property
    def size(self) -> int:
        return self.meta_size + self.received


def _write_all(fd: int, pieces: list[bytes | bytearray | memoryview]) -> None:
    """``writev`` all of ``pieces``, going on after a short write."""
    while pieces:
        written = os.writev(fd, pieces)
        if not written:
            raise OSError(errno.EIO, "writev wrote nothing")
        while pieces and written >= len(pieces[0]):
            written -= len(pieces[0])
            pieces = pieces[1:]
        if pieces and written:
            pieces = [memoryview(pieces[0])[written:], *pieces[1:]]


@dataclass
class Intake:
    """Opens sinks and decides each C-STORE (shared by the fast lane and the handler)."""

    settings: Settings
    spool: Spool
    record: Callable[[Event], None]

    _disk_checked: float = float("-inf")
    _disk_full: bool = False

    def open(self, file_meta: bytes) -> DataSetSink:
        """A sink for the next data set (refusing at once when the spool disk is too full)."""
        now = time.monotonic()
        if now - self._disk_checked >= DISK_CHECK_S:  # a statvfs per instance is measurable
            self._disk_full = self.spool.disk_used_percent() >= self.settings.disk_watermark
            self._disk_checked = now
        refused = statuses.OUT_OF_RESOURCES if self._disk_full else None
        return DataSetSink(self.spool.temp_path(), file_meta, self.settings.max_instance_bytes, refused)

    def finish(self, key: int, sink: DataSetSink, request_sop_uid: str, transfer_syntax: str) -> Outcome:
        """Decide a complete data set: spooled (success), quarantined or refused."""
        sop_uid = request_sop_uid or None
        sink.close()
        if sink.refused is not None:
            log.error("spool disk above watermark; refusing", sop_uid=sop_uid)
            return sink.refused, None
        if sink.too_large:
            reason = f"instance over MEDDET_MAX_INSTANCE_BYTES ({sink.limit} bytes)"
            log.warning("instance refused", sop_uid=sop_uid, reason=reason)
            return statuses.INSTANCE_TOO_LARGE, reason
        if sink.error is not None:
            log.error("spool write failed", sop_uid=sop_uid, error=str(sink.error))
            return statuses.OUT_OF_RESOURCES, None
        try:
            header = self._header(sink, sop_uid, transfer_syntax)
        except Rejected as rejected:
            return self._quarantine(key, sink, sop_uid, rejected)
        except OSError as exc:
            sink.discard()
            log.error("spool read failed", sop_uid=sop_uid, error=str(exc))
            return statuses.OUT_OF_RESOURCES, None
        try:
            stored = self.spool.place(sink.path, sink.size, header.study_uid, header.series_uid, header.sop_uid)
        except SpoolError as exc:
            log.error("spool write failed", sop_uid=sop_uid, error=str(exc))
            return statuses.OUT_OF_RESOURCES, None
        self.record(InstanceStored(key, header, stored, utcnow()))
        return statuses.SUCCESS, None

    def _header(self, sink: DataSetSink, sop_uid: str | None, transfer_syntax: str) -> InstanceHeader:
        """The header by the fast scan of the head; the full parse when the scan is unsure."""
        max_pixels = self.settings.max_pixels
        found = scan_header(sink.head, sink.received, transfer_syntax, sop_uid, max_pixels)
        if isinstance(found, InstanceHeader):
            return found
        if found is NEED_MORE:  # e.g. encapsulated pixel data: walk its items on the file
            with open(sink.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)[sink.meta_size :]
                try:
                    found = scan_header(view, len(view), transfer_syntax, sop_uid, max_pixels)
                finally:
                    view.release()
            if isinstance(found, InstanceHeader):
                return found
        # Not the plain case: the pydicom-based parse decides, with the reason for a refusal
        return inspect_dataset(
            _read_data_set(sink),
            transfer_syntax,
            sop_uid,
            max_pixels=max_pixels,
            max_bytes=self.settings.max_instance_bytes,
        )

    def _quarantine(self, key: int, sink: DataSetSink, sop_uid: str | None, rejected: Rejected) -> Outcome:
        try:
            path = self.spool.quarantine_file(sink.path, rejected.reason, sop_instance_uid=sop_uid)
        except SpoolError as exc:
            log.error("quarantine write failed", sop_uid=sop_uid, error=str(exc))
            return statuses.OUT_OF_RESOURCES, None
        self.record(InstanceQuarantined(key, sop_uid, path, rejected.reason, utcnow()))
        log.warning("instance quarantined", sop_uid=sop_uid, reason=rejected.reason, path=str(path))
        comment = rejected.reason if rejected.status == statuses.INSTANCE_TOO_LARGE else None
        return rejected.status, comment


def _read_data_set(sink: DataSetSink) -> bytes:
    with open(sink.path, "rb") as handle:
        handle.seek(sink.meta_size)
        return handle.read()
