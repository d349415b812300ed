"""The task's decisions: already finished, resume, permanent failures, retries, resend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Instance, Job, JobState
from dicom_node.config import Settings
from dicom_node.metrics import Metrics
from tests.factories import make_mr_series
from tests.worker.support import job_state, register_series
from worker.context import RetryPolicy, WorkerContext
from worker.errors import PermanentError, RetriableError
from worker.tasks import resend_job, run_job, schedule_retry


def _context(sessions, tmp_path: Path, max_retries: int = 2) -> WorkerContext:
    settings = Settings(data_dir=tmp_path)
    return WorkerContext(settings, sessions, Metrics(), retry=RetryPolicy(max_retries=max_retries, base_seconds=0.5))


def _job(sessions, tmp_path: Path) -> int:
    return register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")


def _history(sessions, job_id: int) -> list[str]:
    with sessions() as session:
        return [e["state"] for e in jobs.job_history(session, job_id)]


def _move(sessions, job_id: int, *states: JobState) -> None:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        for state in states:
            jobs.transition(session, job, state)


def test_a_finished_job_returns_at_once(sessions, tmp_path):
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    S = JobState
    _move(sessions, job_id, S.running, S.results_written, S.sent, S.done)
    before = _history(sessions, job_id)
    assert run_job(ctx, job_id) == "already done"
    assert _history(sessions, job_id) == before
    assert run_job(ctx, 999_999) == "missing"


def test_a_job_sent_before_its_worker_died_is_completed_without_work(sessions, tmp_path):
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    _move(sessions, job_id, JobState.running, JobState.results_written, JobState.sent)
    assert run_job(ctx, job_id) == "done"
    assert _history(sessions, job_id)[-2:] == ["sent", "done"]


def test_missing_spool_files_fail_the_job_once_with_the_reason(sessions, tmp_path):
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    with sessions() as session:
        Path(session.scalars(select(Instance)).first().spool_path).unlink()
    assert run_job(ctx, job_id) == "failed"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.state is JobState.failed
        assert "spool file(s) missing" in job.reason
        history = jobs.job_history(session, job_id)
    assert [e["state"] for e in history] == ["queued", "running", "failed"]
    assert json.loads(history[1]["detail"])["run"] == 1
    assert ctx.metrics.registry.get_sample_value("meddet_jobs_finished_total", {"outcome": "failed"}) == 1.0


def test_a_series_without_instances_is_quarantined(sessions, tmp_path):
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    with transaction(sessions) as session:
        for row in session.scalars(select(Instance)):
            session.delete(row)
    assert run_job(ctx, job_id) == "quarantined"
    assert job_state(sessions, job_id) == "quarantined"


def test_retries_back_off_then_the_job_fails_with_its_reason(sessions, tmp_path):
    ctx = _context(sessions, tmp_path, max_retries=2)
    job_id = _job(sessions, tmp_path)
    _move(sessions, job_id, JobState.running, JobState.results_written)
    error = RetriableError("PACS@127.0.0.1:1: destination unreachable")
    assert schedule_retry(ctx, job_id, error, 0) == 0.5
    assert schedule_retry(ctx, job_id, error, 1) == 1.0
    assert schedule_retry(ctx, job_id, error, 2) is None
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.retries) == (JobState.failed, 2)
        assert job.reason.startswith("gave up after 2 retries: RetriableError: PACS@")
        assert [j.id for j in jobs.list_jobs(session, status="failed")] == [job_id]
    assert _history(sessions, job_id)[-3:] == ["retry", "retry", "failed"]


def test_resend_needs_stored_results_and_a_finished_job(sessions, tmp_path):
    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    with pytest.raises(PermanentError, match="is queued: resend needs a finished job"):
        resend_job(ctx, job_id)
    _move(sessions, job_id, JobState.running, JobState.failed)
    with pytest.raises(PermanentError, match="run 1 wrote no results"):
        resend_job(ctx, job_id)
    assert job_state(sessions, job_id) == "failed"


def test_a_run_superseded_by_late_instances_stops_at_its_next_step(sessions, tmp_path):
    from dicom_node.audit.models import Series
    from worker import pipeline
    from worker.errors import StaleRunError
    from worker.tasks import claim_job, finish

    ctx = _context(sessions, tmp_path)
    job_id = _job(sessions, tmp_path)
    claim = claim_job(ctx, job_id)
    assert claim.run == 1 and not claim.resume
    with transaction(sessions) as session:  # late instances: the node re-enqueues the series
        job = session.get(Job, job_id)
        jobs.enqueue_series(session, session.get(Series, job.series_id), "v1")
    with pytest.raises(StaleRunError, match="run 1 superseded by run 2"):
        pipeline.advance(ctx, job_id, claim.run, JobState.results_written)
    finish(ctx, job_id, JobState.failed, "run 1 crashed late", run=claim.run)  # no effect
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.run) == (JobState.queued, 2)
        assert len(jobs.pending_outbox(session)) == 2
