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
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import TRANSIENT_DB_ERRORS, short_error, transaction
from dicom_node.audit.models import (
    Association,
    Instance,
    QuarantineRecord,
    Series,
    SeriesState,
    clip,
)
from dicom_node.headers import InstanceHeader
from dicom_node.logging import get_logger
from dicom_node.spool import StoredFile

log = get_logger(__name__)

#: How long the recorder gathers events into one transaction after the first arrives.
BATCH_WINDOW_S = 0.02
BATCH_MAX = 500
#: Events waiting for the DB (a few hundred bytes each); beyond this they are dropped.
MAX_PENDING = 20_000
#: Retry delays while the DB is unreachable: doubling from the first, capped.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 2.0


@dataclass(frozen=True)
class AssociationOpened:
    key: int
    calling_ae: str
    called_ae: str
    address: str
    port: int | None
    at: datetime


@dataclass(frozen=True)
class AssociationClosed:
    key: int
    outcome: str  # released / aborted
    n_stored: int
    n_failed: int
    at: datetime


@dataclass(frozen=True)
class AssociationRejected:
    calling_ae: str
    called_ae: str
    address: str
    port: int | None
    reason: str
    at: datetime


@dataclass(frozen=True)
class InstanceStored:
    key: int | None  # association key; None for files found by recovery
    header: InstanceHeader
    stored: StoredFile
    at: datetime


@dataclass(frozen=True)
class InstanceQuarantined:
    key: int | None
    sop_uid: str | None
    path: Path
    reason: str
    at: datetime


Event = (
    AssociationOpened | AssociationClosed | AssociationRejected | InstanceStored | InstanceQuarantined
)


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
        """Block until every queued event is written (tests, shutdown)."""
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
            batch = [self._queue.get()]
            # Gather what arrives in the next few ms too: one transaction for many events.
            deadline = time.monotonic() + BATCH_WINDOW_S
            while len(batch) < BATCH_MAX and None not in batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            if events:
                self._write_batch(events)
            if self._overflowed.is_set() and self._queue.empty():
                self._catch_up()
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return

    def _write_batch(self, events: list[Event]) -> None:
        """Write ``events`` in one transaction; if the DB refuses it, one by one."""
        pending = list(events)
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
                    return
                continue
            except Exception as exc:  # noqa: BLE001 - a refused row: isolated, then recorded
                if not one_by_one:
                    log.warning("audit batch refused; writing it event by event",
                                events=len(chunk), error=short_error(exc))
                    one_by_one = True
                    continue
                self._record_failure(chunk[0], exc)
            del pending[: len(chunk)]
            attempt = 0
        if ready and self._on_batch is not None:
            self._on_batch(ready)  # complete by count: no need to wait for the next poll

    def _commit(self, events: list[Event]) -> set[str]:
        """One transaction; returns the series brought to their expected count."""
        saved = dict(self._assoc_ids)  # ids handed out by a rolled-back transaction are void
        try:
            with transaction(self._factory) as session:
                touched = {s for e in events if (s := self.apply(session, e))}
                return {s.series_instance_uid for s in touched if has_all_expected(s)}
        except BaseException:
            self._assoc_ids = saved
            raise

    def _wait_for_db(self, exc: Exception, attempt: int, pending: int) -> bool:
        """Back off before the next try; False when stopping (the events are given up)."""
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1))
        if attempt == 1 or attempt % 30 == 0:
            log.warning("audit database unavailable; retrying", attempt=attempt, events=pending,
                        retry_in_s=delay, error=short_error(exc))
        if self._stopping.wait(delay):
            log.error("audit events not written at shutdown; recovery records the spool files "
                      "at the next start", events=pending)
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
                    session.add(QuarantineRecord(
                        sop_instance_uid=clip(QuarantineRecord.sop_instance_uid, sop_uid),
                        path=str(path), reason=reason, at=event.at,
                    ))
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
            if assoc_id is not None and (row := session.get(Association, assoc_id)):
                row.ended_at = event.at
                row.outcome = event.outcome
                row.n_stored = event.n_stored
                row.n_failed = event.n_failed
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


def has_all_expected(series: Series) -> bool:
    return bool(series.expected_instances) and series.n_instances >= series.expected_instances


def _modality(header: InstanceHeader) -> str | None:
    """Modality as stored: DICOM's CS allows 16 characters, and so does the column."""
    modality = clip(Series.modality, header.modality)
    if modality != header.modality:
        log.warning("over-long Modality cut to 16 characters", series_uid=header.series_uid,
                    length=len(header.modality or ""))
    return modality


def record_instance(
    session: Session,
    header: InstanceHeader,
    stored: StoredFile,
    at: datetime,
    association_id: int | None,
) -> Series | None:
    """Insert the instance and update (or reopen) its series. Duplicates change nothing.

    ``n_instances`` counts distinct SOP Instance UIDs: revision 0 is the first of each.
    """
    series = session.scalar(
        select(Series).where(Series.series_instance_uid == header.series_uid)
    )
    if series is None:
        series = Series(
            series_instance_uid=header.series_uid,
            study_instance_uid=header.study_uid,
            modality=_modality(header),
            spool_path=str(stored.path.parent),
            n_instances=0,
            first_received_at=at,
            last_received_at=at,
            expected_instances=header.expected_in_series,
        )
        session.add(series)
        session.flush()
    if stored.duplicate:
        log.info("duplicate instance ignored", sop_uid=header.sop_uid, series_uid=header.series_uid)
        return None
    session.add(
        Instance(
            series_id=series.id,
            association_id=association_id,
            sop_instance_uid=header.sop_uid,
            revision=stored.revision,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=header.transfer_syntax_uid,
            size_bytes=stored.size,
            sha256=stored.sha256,
            spool_path=str(stored.path),
            received_at=at,
        )
    )
    if stored.revision > 0:
        log.warning(
            "instance re-sent with different bytes; kept as a revision",
            sop_uid=header.sop_uid,
            revision=stored.revision,
        )
    if stored.revision == 0:
        series.n_instances += 1
    series.last_received_at = max(series.last_received_at, at)
    if header.expected_in_series and not series.expected_instances:
        series.expected_instances = header.expected_in_series
    if series.state != SeriesState.receiving:
        log.info("late instance reopens series", series_uid=header.series_uid, was=series.state.value)
        series.state = SeriesState.receiving
        series.completed_at = None
    return series

