"""The audit recorder's batches (issue 14): events that keep coming share one transaction (its
fixed cost is the recorder's CPU on the node's GIL), and a barrier or stop ends a batch at once
(Storage Commitment does not wait for the batch window)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import recorder as recorder_module
from dicom_node.events import AssociationOpened, Barrier, Event
from dicom_node.recorder import AuditRecorder
from dicom_node.spool import Spool
from tests.dicom_node.test_audit_recorder import recorded, stored_event
from tests.factories import make_mr_series


def opened(key: int) -> AssociationOpened:
    return AssociationOpened(key, "SCU", "MEDDET", "127.0.0.1", 104, datetime.now(UTC))


def test_a_barrier_or_the_stop_marker_ends_a_batch(session_factory: sessionmaker[Session]) -> None:
    recorder = AuditRecorder(session_factory)  # not started: batches are taken by hand
    barrier = Barrier()
    first: list[Event | None] = [opened(1), opened(2), barrier]
    for event in [*first, opened(3), None, opened(4)]:
        recorder.put(event)  # type: ignore[arg-type]
    assert recorder._gather() == first
    started = time.monotonic()
    second = recorder._gather()
    assert [type(e) for e in second] == [AssociationOpened, type(None)]
    assert time.monotonic() - started < recorder_module.BATCH_GAP_S  # no wait after the stop marker


def test_events_that_keep_coming_share_a_transaction(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "tmp", tmp_path / "quarantine", durable=False)
    events = [stored_event(spool, ds) for ds in make_mr_series(12, 16, 16)]
    recorder = AuditRecorder(session_factory)
    batches: list[int] = []
    commit = recorder._commit

    def counting(chunk: list[Event]) -> set[str]:
        batches.append(len(chunk))
        return commit(chunk)

    recorder._commit = counting  # type: ignore[method-assign, assignment]
    recorder.start()
    try:
        for event in events:  # one every 10 ms, as the group committer passes them on
            recorder.put(event)
            time.sleep(0.01)
        recorder.flush()
    finally:
        recorder.stop()
    assert sum(batches) == len(events) and len(recorded(session_factory)) == len(events)
    assert len(batches) <= 3, batches  # a 20 ms window made ~6 transactions of 2
