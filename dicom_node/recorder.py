"""The audit recorder: DB writes for received instances, off the association threads.

Event handlers put small immutable events on a queue; one thread writes them in batches, one
transaction per batch. A crash between "file on disk" and "row in the DB" loses nothing: at
start-up :func:`dicom_node.recovery.reconcile` records spool files the DB does not know.
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

from dicom_node.audit.db import transaction
from dicom_node.audit.models import (
    Association,
    Instance,
    QuarantineRecord,
    Series,
    SeriesState,
)
from dicom_node.headers import InstanceHeader
from dicom_node.logging import get_logger
from dicom_node.spool import StoredFile

log = get_logger(__name__)

#: How long the recorder gathers events into one transaction after the first arrives.
BATCH_WINDOW_S = 0.02


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
    ) -> None:
        self._factory = session_factory
        self._on_batch = on_batch  # told which series a batch brought to their expected count
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._assoc_ids: dict[int, int] = {}  # association key -> DB id
        self._thread = threading.Thread(target=self._run, name="audit-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def flush(self) -> None:
        """Block until every queued event is written (tests, shutdown)."""
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Gather what arrives in the next few ms too: one transaction for many events.
            deadline = time.monotonic() + BATCH_WINDOW_S
            while len(batch) < 500 and None not in batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            if events:
                self._write_batch(events)
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return

    def _write_batch(self, events: list[Event]) -> None:
        ready: set[str] = set()
        for attempt in range(5):
            try:
                with transaction(self._factory) as session:
                    touched = {s for e in events if (s := self.apply(session, e))}
                    ready = {s.series_instance_uid for s in touched if has_all_expected(s)}
                break
            except Exception:  # a DB hiccup must not lose events: retry, then log loudly
                log.exception("audit batch failed", attempt=attempt + 1, events=len(events))
                threading.Event().wait(0.2 * 2**attempt)
        else:
            log.error("audit batch dropped; recovery at next start records the files")
            return
        if ready and self._on_batch is not None:
            self._on_batch(ready)  # complete by count: no need to wait for the next poll

    def apply(self, session: Session, event: Event) -> Series | None:
        """Write one event; returns the series it added an instance to, if any."""
        if isinstance(event, AssociationOpened):
            row = Association(
                calling_ae=event.calling_ae,
                called_ae=event.called_ae,
                address=event.address,
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
                    calling_ae=event.calling_ae,
                    called_ae=event.called_ae,
                    address=event.address,
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
                    sop_instance_uid=event.sop_uid,
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


def has_all_expected(series: Series) -> bool:
    return bool(series.expected_instances) and series.n_instances >= series.expected_instances


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
            modality=header.modality,
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

