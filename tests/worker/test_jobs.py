"""Jobs: enqueue in the caller's transaction, idempotency per (series, model), transitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Instance, Job, JobEvent, JobState, Outbox, Series
from tests.factories import make_mr_series
from tests.worker.support import register_series
from worker.pipeline import latest_instance_files


def _series(sessions: sessionmaker[Session], tmp_path: Path, n: int = 3) -> int:
    job_id = register_series(sessions, make_mr_series(n, 16, 16), tmp_path / "spool", "v1")
    with sessions() as session:
        return session.get(Job, job_id).series_id


def test_enqueue_writes_job_event_and_outbox_in_one_transaction(sessions, tmp_path):
    job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.run, job.model_version) == (JobState.queued, 1, "v1")
        assert [e.state for e in job.events] == ["queued"]
        rows = session.scalars(select(Outbox)).all()
        assert [(r.job_id, r.task_name, r.published_at) for r in rows] == [(job_id, "meddet.analyze_series", None)]


def test_enqueue_rolls_back_with_the_callers_transaction(sessions, tmp_path):
    series_id = _series(sessions, tmp_path)
    with pytest.raises(RuntimeError):
        with transaction(sessions) as session:
            jobs.enqueue_series(session, session.get(Series, series_id), "v2")
            raise RuntimeError("node crashed before commit")
    with sessions() as session:
        assert session.scalars(select(Job).where(Job.model_version == "v2")).all() == []
        assert len(session.scalars(select(Outbox)).all()) == 1  # only v1's


def test_enqueue_is_idempotent_while_queued(sessions, tmp_path):
    series_id = _series(sessions, tmp_path)
    with transaction(sessions) as session:
        again = jobs.enqueue_series(session, session.get(Series, series_id), "v1")
    with sessions() as session:
        assert session.get(Job, again.id).run == 1
        assert len(session.scalars(select(Job)).all()) == 1
        assert len(session.scalars(select(Outbox)).all()) == 1


def test_reopened_series_after_a_run_bumps_run_and_requeues(sessions, tmp_path):
    series_id = _series(sessions, tmp_path)
    with transaction(sessions) as session:
        job = session.scalars(select(Job)).one()
        for state in (JobState.running, JobState.results_written, JobState.sent, JobState.done):
            jobs.transition(session, job, state)
    with transaction(sessions) as session:
        job = jobs.enqueue_series(session, session.get(Series, series_id), "v1")
    with sessions() as session:
        job = session.get(Job, job.id)
        assert (job.state, job.run) == (JobState.queued, 2)
        history = [e["state"] for e in jobs.job_history(session, job.id)]
        assert history == ["queued", "running", "results_written", "sent", "done", "queued"]
        assert len(jobs.pending_outbox(session)) == 2
    with transaction(sessions) as session:  # a different model version is a different job
        other = jobs.enqueue_series(session, session.get(Series, series_id), "v2")
    assert other.id != job.id


def test_transitions_are_validated_and_failures_keep_their_reason(sessions, tmp_path):
    _series(sessions, tmp_path)
    with transaction(sessions) as session:
        job = session.scalars(select(Job)).one()
        with pytest.raises(jobs.InvalidTransition, match="queued -> done"):
            jobs.transition(session, job, JobState.done)
        jobs.transition(session, job, JobState.running, {"pid": 1})
        jobs.transition(session, job, JobState.failed, "PACS down")
        assert job.reason == "PACS down"
        with pytest.raises(jobs.InvalidTransition):
            jobs.transition(session, job, JobState.running)
        jobs.requeue(session, job, "operator retry")
        assert (job.state, job.run, job.reason) == (JobState.queued, 2, None)
    with sessions() as session:
        events = session.scalars(select(JobEvent).order_by(JobEvent.id)).all()
        assert [e.state for e in events] == ["queued", "running", "failed", "queued"]
        assert events[1].detail == '{"pid": 1}'
        assert all(a.at <= b.at for a, b in zip(events, events[1:]))


def test_audit_queries(sessions, tmp_path):
    first = register_series(sessions, make_mr_series(1, 16, 16), tmp_path / "a", "v1")
    second = register_series(sessions, make_mr_series(1, 16, 16), tmp_path / "b", "v1")
    with transaction(sessions) as session:
        job = session.get(Job, second)
        jobs.transition(session, job, JobState.running)
        jobs.transition(session, job, JobState.failed, "bad")
    with sessions() as session:
        failed = jobs.list_jobs(session, status="failed")
        assert [(j.id, j.reason) for j in failed] == [(second, "bad")]
        assert [j.id for j in jobs.list_jobs(session)] == [second, first]
        assert jobs.list_jobs(session, status=["queued", "failed"], limit=1)[0].id == second
        assert failed[0].as_dict()["state"] == "failed"
        counts = jobs.count_by_state(session)
        assert counts["queued"] == 1 and counts["failed"] == 1 and counts["done"] == 0


def test_outbox_publish_bookkeeping(sessions, tmp_path):
    _series(sessions, tmp_path)
    with transaction(sessions) as session:
        row = jobs.pending_outbox(session)[0]
        jobs.mark_publish_failed(session, row.id, "ConnectionError: refused")
    with transaction(sessions) as session:
        row = jobs.pending_outbox(session)[0]
        assert (row.attempts, row.last_error) == (1, "ConnectionError: refused")
        jobs.mark_published(session, row.id)
    with sessions() as session:
        assert jobs.pending_outbox(session) == []


def test_latest_revision_of_each_instance_is_loaded(sessions, tmp_path):
    series_id = _series(sessions, tmp_path, n=2)
    with transaction(sessions) as session:
        first = session.scalars(select(Instance).order_by(Instance.id)).first()
        session.add(
            Instance(
                series_id=series_id,
                sop_instance_uid=first.sop_instance_uid,
                revision=1,
                sop_class_uid=first.sop_class_uid,
                transfer_syntax_uid=first.transfer_syntax_uid,
                size_bytes=1,
                sha256="0" * 64,
                spool_path=first.spool_path + ".r1",
            )
        )
    with sessions() as session:
        files = latest_instance_files(session, series_id)
    assert len(files) == 2
    assert sum(str(f).endswith(".r1") for f in files) == 1
