"""Leases, the sweeper and the redelivery limit (issue 12 items 6 and 9), without the model:
the pipeline's analysis is a stand-in (tests/worker/fakes.py); the rest is the real code."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs, leases
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Job, JobState, Outbox, utcnow
from dicom_node.config import Settings
from dicom_node.metrics import Metrics
from tests.factories import make_mr_series
from tests.worker.fakes import FakeAnalyze
from tests.worker.support import (
    fresh_postgres_database,
    migrated_sessions,
    register_series,
)
from worker import pipeline
from worker.context import RetryPolicy, WorkerContext
from worker.errors import StaleRunError
from worker.tasks import claim_job, run_job, schedule_retry


def _context(sessions, tmp_path: Path, **settings) -> WorkerContext:  # type: ignore[no-untyped-def]
    return WorkerContext(
        Settings(data_dir=tmp_path / "data", **settings),
        sessions,
        Metrics(),
        retry=RetryPolicy(max_retries=2, base_seconds=0.5),
    )


def _job(sessions, tmp_path: Path) -> int:  # type: ignore[no-untyped-def]
    job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
    with transaction(sessions) as session:  # the relay published it
        for row in jobs.pending_outbox(session):
            jobs.mark_published(session, row.id)
    return job_id


def _job_row(sessions, job_id: int) -> Job:  # type: ignore[no-untyped-def]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _events(sessions, job_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return [e["state"] for e in jobs.job_history(session, job_id)]


def _pending(sessions) -> list[int]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return [row.job_id for row in jobs.pending_outbox(session)]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_sessions(request, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        yield migrated_sessions(f"sqlite:///{tmp_path / 'audit.db'}")
        return
    with fresh_postgres_database() as url:
        sessions = migrated_sessions(url)
        yield sessions
        sessions.kw["bind"].dispose()


# ---- item 9: two deliveries of one job at once -------------------------------------------


def test_two_deliveries_of_one_job_at_once_run_it_once(any_sessions, tmp_path, scp, monkeypatch):
    sessions = any_sessions
    ctx = _context(sessions, tmp_path, destinations=scp.destination)
    job_id = _job(sessions, tmp_path)
    analyze = FakeAnalyze(seconds=1.0)
    monkeypatch.setattr(pipeline, "analyze", analyze)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver() -> None:
        start.wait()
        outcomes.append(run_job(ctx, job_id))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["done", "running elsewhere"]
    assert len(analyze.calls) == 1 and analyze.writes == 1  # run once, results written once
    assert _job_row(sessions, job_id).state is JobState.done
    assert scp.uids() == [str(analyze.objects[0][1].SOPInstanceUID)]  # sent once
    assert _events(sessions, job_id).count("running") == 1


def test_results_temp_files_are_unique_per_writer(tmp_path):
    """Two runs writing one results folder at once never share a temp file."""
    from dicom_node.atomic import write_atomic

    target = tmp_path / "findings.json"
    temps: list[Path] = []

    def inner(path: Path) -> None:
        temps.append(path)
        path.write_text("second")

    def outer(path: Path) -> None:
        temps.append(path)
        path.write_text("first")
        write_atomic(target, inner)  # another run, in the middle of this write

    write_atomic(target, outer)
    assert temps[0] != temps[1]
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.json"]  # no temp left


# ---- item 6: leases, the sweeper, the redelivery limit -----------------------------------


def test_an_expired_lease_is_requeued_through_the_outbox(sessions, tmp_path, monkeypatch):
    """The hard time limit killed the job and its message was acknowledged: only the lease
    says the job is not running any more."""
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    claim = claim_job(ctx, job_id)
    assert not isinstance(claim, str)  # ... and the worker is killed here, its message acked
    assert leases.sweep(sessions, 3).requeued == ()  # the lease still runs
    later = utcnow() + timedelta(seconds=ctx.settings.job_lease_seconds + 1)
    assert leases.sweep(sessions, 3, now=later).requeued == (job_id,)
    job = _job_row(sessions, job_id)
    assert (job.state, job.lost_deliveries, job.lease_token) == (JobState.running, 1, None)
    assert _pending(sessions) == [job_id]  # requeued through the outbox
    assert _events(sessions, job_id)[-1] == "lease_expired"
    monkeypatch.setattr(pipeline, "analyze", FakeAnalyze())
    assert run_job(ctx, job_id) == "done"
    assert leases.sweep(sessions, 3, now=later + timedelta(hours=1)).requeued == ()


def test_a_job_whose_worker_is_lost_every_time_is_failed_after_max_deliveries(sessions, tmp_path):
    ctx = _context(sessions, tmp_path, max_deliveries=3)
    job_id = _job(sessions, tmp_path)
    later = utcnow()
    for lost in (1, 2, 3):
        assert not isinstance(claim_job(ctx, job_id), str)
        later += timedelta(seconds=ctx.settings.job_lease_seconds + 1)
        report = leases.sweep(sessions, ctx.settings.max_deliveries, now=later)
        assert report == (leases.SweepReport(failed=(job_id,)) if lost == 3 else leases.SweepReport(requeued=(job_id,)))
    job = _job_row(sessions, job_id)
    assert job.state is JobState.failed and job.lease_token is None
    assert job.reason.startswith("worker lost on 3 deliveries")
    with sessions() as session:  # two requeues, no third: the last loss failed it
        assert len(session.scalars(select(Outbox).where(Outbox.job_id == job_id)).all()) == 3
    assert claim_job(ctx, job_id) == "already failed"


def test_a_running_job_renews_its_lease_and_is_never_swept(sessions, tmp_path, monkeypatch):
    ctx = _context(sessions, tmp_path, job_lease_seconds=0.6)
    job_id = _job(sessions, tmp_path)
    analyze = FakeAnalyze(seconds=2.5)  # four leases long
    monkeypatch.setattr(pipeline, "analyze", analyze)
    sweeper = leases.LeaseSweeper(sessions, 3, interval=0.05).start()
    try:
        assert run_job(ctx, job_id) == "done"
    finally:
        sweeper.stop()
    assert _job_row(sessions, job_id).lost_deliveries == 0
    assert "lease_expired" not in _events(sessions, job_id) and _pending(sessions) == []


def test_a_delivery_that_lost_its_lease_stops_at_its_next_step(sessions, tmp_path):
    from worker.lease import holding

    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    claim = claim_job(ctx, job_id)
    later = utcnow() + timedelta(minutes=5)  # a worker cut off from the database for 5 min
    assert leases.sweep(sessions, 3, now=later).requeued == (job_id,)
    with holding(sessions, job_id, claim.token, 60), pytest.raises(StaleRunError, match="lease"):
        pipeline.advance(ctx, job_id, claim.run, JobState.results_written)
    assert _job_row(sessions, job_id).state is JobState.running


def test_a_claim_takes_over_from_a_killed_process_and_counts_it(sessions, tmp_path):
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    host = leases.new_token().rsplit(":", 2)[0]
    assert not isinstance(claim_job(ctx, job_id, f"{host}:{dead.stdout.strip()}:gone"), str)
    assert not isinstance(claim_job(ctx, job_id, "other-host:1:alive"), str)  # lease not expired
    assert claim_job(ctx, job_id) == "running elsewhere"  # a live holder elsewhere
    assert _job_row(sessions, job_id).lost_deliveries == 1


def test_a_retry_keeps_the_lease_over_its_countdown(sessions, tmp_path, monkeypatch):
    from worker.errors import RetriableError

    ctx = _context(sessions, tmp_path, job_lease_seconds=1.0)
    job_id = _job(sessions, tmp_path)
    token = leases.new_token()
    claim = claim_job(ctx, job_id, token)
    assert not isinstance(claim, str)
    countdown = schedule_retry(ctx, job_id, RetriableError("PACS down"), 0, token)
    assert countdown == 0.5
    later = utcnow() + timedelta(seconds=1.2)  # past a lease, within countdown + lease
    assert leases.sweep(sessions, 3, now=later).requeued == ()
    assert claim_job(ctx, job_id) == "running elsewhere"  # a duplicate message waits
    monkeypatch.setattr(pipeline, "analyze", FakeAnalyze())
    assert run_job(ctx, job_id, token) == "done"  # the retry itself runs


# ---- item 6: the embedded node killed by its job -----------------------------------------

CRASHING_NODE = """
import sys
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.config import Settings
from dicom_node.metrics import Metrics
from tests.worker import fakes
from worker import pipeline
from worker.context import WorkerContext
from worker.dispatch import EmbeddedWorker

pipeline.analyze = fakes.killed_analyze
settings = Settings(data_dir=sys.argv[2])  # max_deliveries: 3 by default
sessions = make_session_factory(make_engine(sys.argv[1]))
EmbeddedWorker(WorkerContext(settings, sessions, Metrics())).tick()
print("node still up")
"""


def test_a_job_that_kills_the_embedded_node_is_failed_not_rerun_forever(tmp_path):
    """Embedded mode: the node dies with its job (out of memory) and systemd restarts it; the
    restarted node runs the job's outbox row again. After max_deliveries it stops."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    sessions = migrated_sessions(url)
    job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
    codes = []
    for _ in range(5):  # restarts
        node = subprocess.run(
            [sys.executable, "-c", CRASHING_NODE, url, str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )
        codes.append(node.returncode)
        if node.returncode == 0:
            break
    assert codes == [137, 137, 137, 0], codes
    job = _job_row(sessions, job_id)
    assert job.state is JobState.failed and "worker lost on 3 deliveries" in job.reason
    history = _events(sessions, job_id)
    assert history.count("running") == 3 and history.count("lease_expired") == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0003_hands_jobs_stuck_before_it_to_the_sweeper(backend, tmp_path):
    """A job left ``running`` by the old code (hard time limit, message acked) gets an expired
    lease from the migration; the first sweep requeues it."""
    from sqlalchemy import text

    from dicom_node.audit.db import make_engine, make_session_factory
    from migrations import upgrade

    def check(url: str) -> None:
        upgrade(url, "0002")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO series (id, series_instance_uid, study_instance_uid, state, n_instances,"
                    " first_received_at, last_received_at, spool_path)"
                    " VALUES (1, '1.2.3', '1.2', 'selected', 2, :t, :t, '/x')"
                ),
                {"t": utcnow()},
            )
            for job_id, state in ((1, "running"), (2, "done")):
                conn.execute(
                    text(
                        "INSERT INTO jobs (id, series_id, series_instance_uid, model_version, state,"
                        " retries, run, created_at, updated_at)"
                        " VALUES (:id, 1, '1.2.3', :v, :s, 0, 1, :t, :t)"
                    ),
                    {"id": job_id, "v": f"v{job_id}", "s": state, "t": utcnow()},
                )
        upgrade(url)
        sessions = make_session_factory(engine)
        assert leases.sweep(sessions, 3).requeued == (1,)
        assert _pending(sessions) == [1]
        assert _job_row(sessions, 2).lease_token is None
        engine.dispose()

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'audit.db'}")
    else:
        with fresh_postgres_database() as url:
            check(url)


def test_a_queued_job_whose_message_the_broker_lost_is_published_again(sessions, tmp_path):
    """Found by the fault suite: Redis restarted without persistence drops its queue; the job
    stays queued, unclaimed, its outbox row marked published, and nothing looked at it again."""
    lost = _job(sessions, tmp_path)  # published; the broker loses the message here
    ctx = _context(sessions, tmp_path)
    claimed = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool2", "v1")
    with transaction(sessions) as session:
        for row in jobs.pending_outbox(session):
            jobs.mark_published(session, row.id)
    assert not isinstance(claim_job(ctx, claimed), str)  # a worker holds this one
    assert leases.republish_unclaimed(sessions, 600) == ()  # too early to say it is lost
    later = utcnow() + timedelta(seconds=601)
    assert leases.republish_unclaimed(sessions, 600, now=later) == (lost,)
    assert _pending(sessions) == [lost]  # the relay publishes it again
    assert _events(sessions, lost)[-1] == "republished"
    assert _job_row(sessions, lost).state == JobState.queued
    assert leases.republish_unclaimed(sessions, 600, now=later) == ()  # once per message
