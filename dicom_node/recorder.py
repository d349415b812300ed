"""The audit recorder: DB writes for received instances, off the association threads.

Event handlers put small immutable events on a bounded queue; one thread writes them in
batches, one transaction per batch. Nothing one event does can take the others down:

- a batch the DB refuses (IntegrityError, DataError, ...) is written again event by event; an
  event refused on its own is recorded as a failure with its reason, the others are kept;
- while the DB is unreachable the recorder retries with backoff (up to ``RETRY_MAX_S``) for
  as long as it takes; when the queue is full, new events are dropped (the files are on disk)
  and ``on_overflow`` records the spool files the DB misses once it is back.

A crash between "file on disk" and "row in the DB" loses nothing either: at start-up
:func:`dicom_node.recovery.reconcile` records spool files the DB does not know.

The receive path does not hash: this thread computes each received file's SHA-256 (the audit
row's ``sha256``) from the spooled file, before the batch's transaction. Its events come from
the group committer after the flush (``per-instance``: after the fsync), so every file it
reads is durable; the read hits the page cache, and hashlib releases the GIL while it hashes,
beside the association threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import TRANSIENT_DB_ERRORS, short_error, transaction
from dicom_node.audit.models import (
    Association,
    Instance,
    QuarantineRecord,
    Series,
    clip,
)
from dicom_node.events import (  # noqa: F401 - re-exported: the events' old home
    AssociationClosed,
    AssociationOpened,
    AssociationRejected,
    Barrier,
    Event,
    InstanceQuarantined,
    InstanceStored,
)
from dicom_node.logging import get_logger
from dicom_node.recording import (  # noqa: F401 - record_instance: recovery's import
    has_all_expected,
    record_instance,
    record_instances,
)
from dicom_node.spool import with_sha256

log = get_logger(__name__)

#: The recorder gathers events into one transaction while they keep coming (each within
#: BATCH_GAP_S of the last), for at most BATCH_WINDOW_S; a barrier or stop ends it at once.
#: Each transaction costs ~3 ms of CPU on the node's GIL whatever its size: with the group
#: committer passing a group every ~20 ms, a 20 ms window made batches of ~8 instances.
BATCH_GAP_S = 0.05
BATCH_WINDOW_S = 0.25
BATCH_MAX = 500
#: Events waiting for the DB (a few hundred bytes each); beyond this they are dropped.
MAX_PENDING = 20_000
#: Retry delays while the DB is unreachable: doubling from the first, capped.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 2.0


class AuditRecorder:
    """Writes node events to the audit DB in batches on its own thread."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        on_batch: Callable[[set[str]], None] | None = None,
        on_overflow: Callable[[], object] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._factory = session_factory
        self._on_batch = on_batch  # told which series a batch brought to their expected count
        self._on_overflow = on_overflow  # records what dropped events missed (spool files)
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=max_pending)
        self._assoc_ids: dict[int, int] = {}  # association key -> DB id
        self._thread = threading.Thread(target=self._run, name="audit-recorder", daemon=True)
        self._stopping = threading.Event()
        self._overflowed = threading.Event()
        self._dropped_lock = threading.Lock()
        self.dropped = 0
        self.before_flush: Callable[[], object] | None = None

    def start(self) -> None:
        self._thread.start()

    def put(self, event: Event) -> None:
        """Queue an event; never blocks. A full queue (DB down for long) drops it, loudly."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._dropped_lock:
                self.dropped += 1
                dropped = self.dropped
            self._overflowed.set()
            if dropped == 1 or dropped % 1000 == 0:
                log.error("audit queue full; event dropped, spool files are recorded later", dropped=dropped)

    def flush(self) -> None:
        """Block until every queued event is written (tests, shutdown), including those the
        group committer still holds (``before_flush``, set by the node)."""
        if self.before_flush is not None:
            self.before_flush()
        self._queue.join()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued and end; after ``timeout`` s of a DB still down, give up (the
        spool files are recorded by recovery at the next start)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        if not self._thread.is_alive():
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stopping.set()  # retries give up; a healthy DB still gets what is queued
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = self._gather()
            events: list[Event] = [e for e in batch if e is not None and not isinstance(e, Barrier)]
            written = self._write_batch(events) if events else True
            if written:  # barriers pass once everything queued before them is committed
                for barrier in batch:
                    if isinstance(barrier, Barrier):
                        barrier.done.set()
            if self._overflowed.is_set() and self._queue.empty():
                self._catch_up()
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return

    def _gather(self) -> list[Event | None]:
        """The next batch: events while they keep coming (see :data:`BATCH_GAP_S`), up to a
        barrier or the stop marker, which are written at once."""
        batch = [self._queue.get()]
        deadline = time.monotonic() + BATCH_WINDOW_S
        while len(batch) < BATCH_MAX and not isinstance(batch[-1], (Barrier, type(None))):
            now = time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(0.0, min(BATCH_GAP_S, deadline - now))))
            except queue.Empty:
                break
        return batch

    def _write_batch(self, events: list[Event]) -> bool:
        """Write ``events`` in one transaction; if the DB refuses it, one by one. False when
        given up at shutdown with the DB unreachable."""
        pending = self._hashed(events)
        one_by_one = len(pending) == 1
        ready: set[str] = set()
        attempt = 0
        while pending:
            chunk = pending[:1] if one_by_one else pending
            try:
                ready |= self._commit(chunk)
            except TRANSIENT_DB_ERRORS as exc:
                attempt += 1
                if not self._wait_for_db(exc, attempt, len(pending)):
                    return False
                continue
            except Exception as exc:  # noqa: BLE001 - a refused row: isolated, then recorded
                if not one_by_one:
                    log.warning(
                        "audit batch refused; writing it event by event", events=len(chunk), error=short_error(exc)
                    )
                    one_by_one = True
                    continue
                self._record_failure(chunk[0], exc)
            del pending[: len(chunk)]
            attempt = 0
        if ready and self._on_batch is not None:
            self._on_batch(ready)  # complete by count: no need to wait for the next poll
        return True

    def _hashed(self, events: list[Event]) -> list[Event]:
        """``events`` with the SHA-256 of each new spooled file filled in (once, outside the
        transaction); a file that cannot be read is reported as a failure and its event left out."""
        done: list[Event] = []
        for event in events:
            if isinstance(event, InstanceStored) and event.stored.sha256 is None and not event.stored.duplicate:
                try:
                    event = replace(event, stored=with_sha256(event.stored))
                except OSError as exc:
                    self._record_failure(event, exc)
                    continue
            done.append(event)
        return done

    def _commit(self, events: list[Event]) -> set[str]:
        """One transaction; returns the series brought to their expected count."""
        saved = dict(self._assoc_ids)  # ids handed out by a rolled-back transaction are void
        try:
            with transaction(self._factory) as session:
                touched: set[Series] = set()
                stores: list[InstanceStored] = []
                for event in [*events, None]:  # runs of InstanceStored are written as batches
                    if isinstance(event, InstanceStored):
                        stores.append(event)
                        continue
                    if stores:
                        touched |= record_instances(
                            session,
                            [
                                (e.header, e.stored, e.at, self._assoc_ids.get(e.key) if e.key is not None else None)
                                for e in stores
                            ],
                        )
                        stores = []
                    if event is not None and (series := self.apply(session, event)):
                        touched.add(series)
                return {s.series_instance_uid for s in touched if has_all_expected(s)}
        except BaseException:
            self._assoc_ids = saved
            raise

    def _wait_for_db(self, exc: Exception, attempt: int, pending: int) -> bool:
        """Back off before the next try; False when stopping (the events are given up)."""
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1))
        if attempt == 1 or attempt % 30 == 0:
            log.warning(
                "audit database unavailable; retrying",
                attempt=attempt,
                events=pending,
                retry_in_s=delay,
                error=short_error(exc),
            )
        if self._stopping.wait(delay):
            log.error(
                "audit events not written at shutdown; recovery records the spool files at the next start",
                events=pending,
            )
            return False
        return True

    def _record_failure(self, event: Event, exc: Exception) -> None:
        """Keep a trace of an event the DB refused on its own: a log line and a failure row."""
        path, sop_uid = _subject(event)
        reason = f"not recorded in the audit DB: {short_error(exc)}"
        try:
            with transaction(self._factory) as session:
                if path and session.scalar(select(Instance.id).where(Instance.spool_path == str(path))):
                    return  # recorded meanwhile (recovery caught up with it): nothing is missing
                log.error("audit event refused", kind=type(event).__name__, sop_uid=sop_uid, reason=reason)
                if path is not None:
                    session.add(
                        QuarantineRecord(
                            sop_instance_uid=clip(QuarantineRecord.sop_instance_uid, sop_uid),
                            path=str(path),
                            reason=reason,
                            at=event.at,
                        )
                    )
        except Exception:  # noqa: BLE001 - the log line above is the record then
            log.exception("could not record an audit failure", sop_uid=sop_uid)

    def _catch_up(self) -> None:
        """After dropped events: let ``on_overflow`` record what they missed."""
        self._overflowed.clear()
        if self._on_overflow is None:
            return
        try:
            self._on_overflow()
        except Exception:  # noqa: BLE001 - tried again after the next batch, and at start-up
            self._overflowed.set()
            log.exception("recording spool files after a queue overflow failed")

    def apply(self, session: Session, event: Event) -> Series | None:
        """Write one event; returns the series it added an instance to, if any."""
        if isinstance(event, AssociationOpened):
            row = Association(
                calling_ae=clip(Association.calling_ae, event.calling_ae),
                called_ae=clip(Association.called_ae, event.called_ae),
                address=clip(Association.address, event.address),
                port=event.port,
                started_at=event.at,
            )
            session.add(row)
            session.flush()
            self._assoc_ids[event.key] = row.id
        elif isinstance(event, AssociationClosed):
            assoc_id = self._assoc_ids.pop(event.key, None)
            if assoc_id is not None and (ended := session.get(Association, assoc_id)):
                ended.ended_at = event.at
                ended.outcome = event.outcome
                ended.n_stored = event.n_stored
                ended.n_failed = event.n_failed
        elif isinstance(event, AssociationRejected):
            session.add(
                Association(
                    calling_ae=clip(Association.calling_ae, event.calling_ae),
                    called_ae=clip(Association.called_ae, event.called_ae),
                    address=clip(Association.address, event.address),
                    port=event.port,
                    started_at=event.at,
                    ended_at=event.at,
                    outcome="rejected",
                    reason=event.reason,
                )
            )
        elif isinstance(event, InstanceQuarantined):
            session.add(
                QuarantineRecord(
                    association_id=self._assoc_ids.get(event.key) if event.key else None,
                    sop_instance_uid=clip(QuarantineRecord.sop_instance_uid, event.sop_uid),
                    path=str(event.path),
                    reason=event.reason,
                    at=event.at,
                )
            )
        elif isinstance(event, InstanceStored):
            return record_instance(
                session,
                event.header,
                event.stored,
                event.at,
                self._assoc_ids.get(event.key) if event.key is not None else None,
            )
        return None


def _subject(event: Event) -> tuple[Path | None, str | None]:
    """The file and SOP Instance UID an event is about, if any."""
    if isinstance(event, InstanceStored):
        return event.stored.path, event.header.sop_uid
    if isinstance(event, InstanceQuarantined):
        return event.path, event.sop_uid
    return None, None
