"""The audit recorder and crash recovery never let one instance block the audit trail
(issue 12, item 2), on real SQLite and real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, event, pool, select, text
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Instance, QuarantineRecord, Series
from dicom_node.headers import InstanceHeader, inspect_instance
from dicom_node.recorder import AuditRecorder, InstanceStored
from dicom_node.recovery import reconcile
from dicom_node.spool import Spool, StoredFile
from migrations import upgrade
from tests.factories import make_mr_series
from tests.worker.support import POSTGRES_ADMIN_URL


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    url = str(request.getfixturevalue("postgres_url"))
    upgrade(url)
    return url


@pytest.fixture
def sessions(db_url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(db_url))


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "tmp", tmp_path / "quarantine", durable=False)


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def spooled(spool: Spool, ds: Dataset) -> tuple[InstanceHeader, StoredFile]:
    data = encode(ds)
    header = inspect_instance(data)
    return header, spool.store(data, header.study_uid, header.series_uid, header.sop_uid)


def stored_event(spool: Spool, ds: Dataset) -> InstanceStored:
    header, stored = spooled(spool, ds)
    return InstanceStored(None, header, stored, datetime.now(UTC))


def same_sop_in_a_second_series(ds: Dataset) -> Dataset:
    """The same SOP Instance UID sent again inside another series (a re-export, a merge)."""
    other = make_mr_series(1, 16, 16, study_uid=str(ds.StudyInstanceUID), seed=3)[0]
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return other


def run_recorder(sessions: sessionmaker[Session], events: list[InstanceStored], **kwargs) -> AuditRecorder:  # type: ignore[no-untyped-def]
    """Queue every event before the thread starts, so they form one batch; wait until written."""
    recorder = AuditRecorder(sessions, **kwargs)
    for stored in events:
        recorder.put(stored)
    recorder.start()
    recorder.flush()
    recorder.stop()
    return recorder


def recorded(sessions: sessionmaker[Session]) -> list[tuple[str, str, int]]:
    with sessions() as session:
        rows = session.execute(
            select(Series.series_instance_uid, Instance.sop_instance_uid, Instance.revision).join(Series)
        )
        return sorted((a, b, c) for a, b, c in rows)


def failures(sessions: sessionmaker[Session]) -> list[QuarantineRecord]:
    with sessions() as session:
        return list(session.scalars(select(QuarantineRecord)))


def test_same_sop_uid_in_two_series_is_recorded_in_both(sessions: sessionmaker[Session], spool: Spool) -> None:
    first = make_mr_series(3, 16, 16)
    second = [same_sop_in_a_second_series(first[0]), *make_mr_series(2, 16, 16, seed=4)]
    run_recorder(sessions, [stored_event(spool, ds) for ds in first + second])
    rows = recorded(sessions)
    assert len(rows) == 6
    assert [row for row in rows if row[1] == first[0].SOPInstanceUID] == sorted(
        [
            (first[0].SeriesInstanceUID, first[0].SOPInstanceUID, 0),
            (second[0].SeriesInstanceUID, first[0].SOPInstanceUID, 0),
        ]
    )
    with sessions() as session:
        counts = {s.series_instance_uid: s.n_instances for s in session.scalars(select(Series))}
    assert counts[first[0].SeriesInstanceUID] == 3 and counts[second[0].SeriesInstanceUID] == 1


def test_an_over_long_modality_does_not_drop_its_neighbours(sessions: sessionmaker[Session], spool: Spool) -> None:
    series = make_mr_series(3, 16, 16)
    odd = make_mr_series(1, 16, 16, seed=1)[0]
    odd.Modality = "MRSPECTROSCOPYXYZ123"  # 20 characters; the column (and DICOM's CS) allows 16
    run_recorder(sessions, [stored_event(spool, ds) for ds in (series[0], odd, *series[1:])])
    assert len(recorded(sessions)) == 4
    with sessions() as session:
        modality = session.scalar(select(Series.modality).where(Series.series_instance_uid == odd.SeriesInstanceUID))
    assert modality == "MRSPECTROSCOPYXY"


def test_a_row_the_db_refuses_is_recorded_as_a_failure_and_the_batch_kept(
    sessions: sessionmaker[Session], spool: Spool
) -> None:
    series = make_mr_series(3, 16, 16)
    events = [stored_event(spool, ds) for ds in series]
    # The same (series, SOP, revision) claimed by a second file: the DB must refuse one of them.
    clash = InstanceStored(
        None,
        events[1].header,
        StoredFile(events[1].stored.path.with_name("copy.dcm"), 0, "0" * 64, 1, False),
        events[1].at,
    )
    run_recorder(sessions, [events[0], events[1], clash, events[2]])
    assert len(recorded(sessions)) == 3
    (failure,) = failures(sessions)
    assert failure.sop_instance_uid == series[1].SOPInstanceUID
    assert "not recorded" in failure.reason and "copy.dcm" in failure.path
    with sessions() as session:
        assert session.scalar(select(Series.n_instances)) == 3


def _outage_sqlite(db_url: str) -> tuple[sessionmaker[Session], Callable[[], None], Callable[[], None]]:
    """New connections fail while the database's folder is moved away (every session connects)."""
    path = Path(db_url.split("///", 1)[1]).parent / "outage" / "audit.db"
    db_url = f"sqlite:///{path}"
    upgrade(db_url)
    engine = create_engine(db_url, poolclass=pool.NullPool, connect_args={"timeout": 1})
    away = path.parent.with_name(path.parent.name + "-away")
    return (
        make_session_factory(engine),
        lambda: path.parent.rename(away),
        lambda: away.rename(path.parent),
    )


def _outage_postgresql(db_url: str) -> tuple[sessionmaker[Session], Callable[[], None], Callable[[], None]]:
    """The database refuses connections (ALLOW_CONNECTIONS false) and its sessions are killed."""
    name = db_url.rsplit("/", 1)[1]
    admin = make_engine(POSTGRES_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")

    def run(sql: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(sql))

    def down() -> None:
        run(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        run(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

    return (
        make_session_factory(make_engine(db_url)),
        down,
        lambda: run(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'),
    )


def test_a_database_outage_longer_than_the_retries_loses_nothing(db_url: str, spool: Spool) -> None:
    """The recorder used to give up after five tries (~6 s) and drop the batch: the database
    stays down here until it has been tried 8 times."""
    outage = _outage_sqlite if db_url.startswith("sqlite") else _outage_postgresql
    sessions, down, up = outage(db_url)
    attempts: list[float] = []  # one entry per connection attempt
    event.listen(sessions.kw["bind"], "do_connect", lambda *args: attempts.append(time.monotonic()))
    events = [stored_event(spool, ds) for ds in make_mr_series(4, 16, 16)]
    recorder = AuditRecorder(sessions)
    recorder.start()
    try:
        down()
        tried_before = len(attempts)
        for item in events:
            recorder.put(item)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(attempts) < tried_before + 8:
            time.sleep(0.1)
    finally:
        up()
    done = threading.Thread(target=recorder.flush, daemon=True)
    done.start()
    done.join(timeout=30)
    assert not done.is_alive(), "queued events were not written after the database returned"
    recorder.stop()
    assert len(recorded(sessions)) == 4


def test_reconcile_records_files_one_by_one_and_reports_the_bad_one(
    sessions: sessionmaker[Session], spool: Spool
) -> None:
    first = make_mr_series(3, 16, 16)
    second = same_sop_in_a_second_series(first[0])
    for ds in [*first, second]:
        spooled(spool, ds)
    # A spool entry that cannot be read at all (here: a folder where a file should be).
    bad = spool.series_dir(str(first[0].StudyInstanceUID), str(first[0].SeriesInstanceUID)) / "1.2.3.4.dcm"
    bad.mkdir()
    assert reconcile(spool, sessions) == 4
    assert len(recorded(sessions)) == 4
    (failure,) = failures(sessions)
    assert failure.path == str(bad) and "recovery" in failure.reason
    assert bad.exists()  # left in place: reported, and tried again at the next start
    assert reconcile(spool, sessions) == 0  # nothing new; the bad entry is reported once per start
    assert len(failures(sessions)) == 2


def test_the_node_starts_with_a_bad_spool_file(tmp_path: Path, sqlite_url: str) -> None:
    from dicom_node.config import Settings
    from dicom_node.node import Node

    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, port=0, broker_url="redis://127.0.0.1:1/0")
    spool = Spool(settings.spool_dir, settings.incoming_tmp_dir, settings.quarantine_dir)
    first = make_mr_series(2, 16, 16)
    for ds in [*first, same_sop_in_a_second_series(first[0])]:
        spooled(spool, ds)
    sessions = make_session_factory(make_engine(sqlite_url))
    node = Node(settings, sessions, on_selected=lambda session, series: None).start()
    node.stop(timeout=1)
    assert len(recorded(sessions)) == 3


def test_a_full_queue_drops_without_blocking_and_recovery_catches_up(
    sessions: sessionmaker[Session], spool: Spool
) -> None:
    """Bounded memory: past ``max_pending`` events are dropped at once (the C-STORE is not held
    up); once the queue drains, the spool files they missed are recorded."""
    from dicom_node.recovery import record_missing

    events = [stored_event(spool, ds) for ds in make_mr_series(10, 16, 16)]
    recorder = AuditRecorder(sessions, on_overflow=lambda: record_missing(spool, sessions), max_pending=3)
    started = time.monotonic()
    for item in events:  # not started yet: nothing drains the queue
        recorder.put(item)
    assert time.monotonic() - started < 1.0 and recorder.dropped == 7
    recorder.start()
    recorder.flush()
    recorder.stop()
    assert len(recorded(sessions)) == 10 and failures(sessions) == []
    with sessions() as session:
        assert session.scalar(select(Series.n_instances)) == 10
