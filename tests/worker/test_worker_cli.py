"""`meddet worker` / `retry` / `resend` / `reanalyze` argument handling, and the model on CUDA when present."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Job, JobState
from dicom_node.cli import (
    app,
    ops,  # noqa: F401  (registers the commands)
)
from dicom_node.config import Settings
from tests.factories import make_mr_series
from tests.worker.support import migrated_sessions, register_series


def test_worker_needs_a_broker(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MEDDET_BROKER_URL", raising=False)
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "MEDDET_BROKER_URL" in result.output


def test_retry_requeues_only_failed_jobs_and_resend_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MEDDET_BROKER_URL", raising=False)
    sessions = migrated_sessions(Settings(data_dir=tmp_path).effective_database_url)
    job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
    runner = CliRunner()
    refused = runner.invoke(app, ["retry", str(job_id)])
    assert refused.exit_code == 1 and "only failed or quarantined" in refused.output
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        jobs.transition(session, job, JobState.running)
        jobs.transition(session, job, JobState.failed, "PACS down")
    resend = runner.invoke(app, ["resend", str(job_id), "--json"])
    assert resend.exit_code == 2  # refused: nothing to send
    assert "run 1 wrote no results" in json.loads(resend.output)["reason"]
    retried = runner.invoke(app, ["retry", str(job_id), "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output) == {"job": job_id, "state": "queued", "run": 2, "published": False}
    with sessions() as session:
        assert [r.job_id for r in jobs.pending_outbox(session)] == [job_id, job_id]  # run 1's row too
    assert runner.invoke(app, ["retry", "4242"]).exit_code == 1


@pytest.mark.gpu
def test_worker_loads_the_model_on_cuda_when_present(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    from tests.worker.support import checkpoint_for_tests
    from worker.context import build_context

    settings = Settings(data_dir=tmp_path, checkpoint=checkpoint_for_tests(tmp_path))
    context = build_context(settings)
    assert context.detector().device.type == "cuda"


def test_retry_publishes_only_its_own_job(tmp_path, monkeypatch, redis_url):
    """Issue 12 item 9: `meddet retry` published every pending row (other jobs' too)."""
    import base64

    import redis

    monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDDET_BROKER_URL", redis_url)
    sessions = migrated_sessions(Settings(data_dir=tmp_path).effective_database_url)
    failed = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "a", "v1")
    waiting = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "b", "v1")
    with transaction(sessions) as session:
        for row in jobs.pending_outbox(session):
            if row.job_id == failed:
                jobs.mark_published(session, row.id)
        job = session.get(Job, failed)
        jobs.transition(session, job, JobState.running)
        jobs.transition(session, job, JobState.failed, "model crashed")
    result = CliRunner().invoke(app, ["retry", str(failed), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["published"] is True
    client = redis.Redis.from_url(redis_url)
    bodies = [json.loads(base64.b64decode(json.loads(raw)["body"])) for raw in client.lrange("gpu", 0, -1)]
    client.close()
    assert [args for args, _kwargs, _ in bodies] == [[failed]]
    with sessions() as session:
        assert [r.job_id for r in jobs.pending_outbox(session)] == [waiting]  # left to the relay


def test_resend_after_a_failed_rerun_refuses_and_sends_nothing(tmp_path, monkeypatch):
    """Issue 12 item 10: run 1 wrote and sent results; run 2 failed before writing any.
    `meddet resend` sent run 1's objects and marked the job done; it must refuse (exit 2)."""
    from dicom_node.loopback import TestPACS
    from dicom_node.metrics import Metrics
    from tests.worker.fakes import FakeAnalyze, failing_analyze
    from worker import pipeline
    from worker.context import WorkerContext
    from worker.tasks import run_job

    scp = TestPACS().start()
    try:
        monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("MEDDET_DESTINATIONS", scp.destination)
        monkeypatch.delenv("MEDDET_BROKER_URL", raising=False)
        settings = Settings()
        sessions = migrated_sessions(settings.effective_database_url)
        ctx = WorkerContext(settings, sessions, Metrics())
        job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
        monkeypatch.setattr(pipeline, "analyze", FakeAnalyze())
        assert run_job(ctx, job_id) == "done" and len(scp.received()) == 1
        with transaction(sessions) as session:  # late instances: run 2
            jobs.requeue(session, session.get(Job, job_id), "series reopened; run 2")
        monkeypatch.setattr(pipeline, "analyze", failing_analyze("cannot decode series"))
        assert run_job(ctx, job_id) == "failed"
        result = CliRunner().invoke(app, ["resend", str(job_id), "--json"])
        assert result.exit_code == 2, result.output
        answer = json.loads(result.output.strip().splitlines()[-1])
        assert answer["outcome"] == "refused"
        assert "run 2 wrote no results" in answer["reason"] and "earlier run" in answer["reason"]
        assert len(scp.received()) == 1  # nothing sent again
        with sessions() as session:
            assert session.get(Job, job_id).state is JobState.failed
        plain = CliRunner().invoke(app, ["resend", str(job_id)])
        assert plain.exit_code == 2 and "meddet retry" in plain.output
    finally:
        scp.stop()


def test_reanalyze_moves_jobs_of_another_model_to_this_nodes_and_refuses_clearly(tmp_path, monkeypatch):
    import detector

    monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MEDDET_BROKER_URL", raising=False)
    monkeypatch.delenv("MEDDET_CHECKPOINT", raising=False)
    current = detector.model_version()
    sessions = migrated_sessions(Settings(data_dir=tmp_path).effective_database_url)
    waiting = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "a", "meddet-old+r0")
    failed = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "b", "meddet-old+r0")
    mine = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "c", current)
    gone = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "d", "meddet-old+r0")
    with transaction(sessions) as session:
        job = session.get(Job, failed)
        jobs.transition(session, job, JobState.running)
        jobs.transition(
            session, job, JobState.failed, f"this worker runs model {current}, the job is for meddet-old+r0"
        )
    for path in (tmp_path / "d").iterdir():
        path.unlink()
    runner = CliRunner()

    assert runner.invoke(app, ["reanalyze"]).exit_code == 2  # nothing named
    result = runner.invoke(app, ["reanalyze", "--queued", "--json"])
    assert result.exit_code == 2, result.output  # the gone series is refused, the waiting one moves
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["job"] for line in lines] == [waiting, gone]
    moved, refused = lines
    assert moved["model_version"] == current and moved["run"] == 1 and moved["published"] is False
    assert refused["outcome"] == "refused" and "re-send the series from the PACS" in refused["reason"]
    result = runner.invoke(app, ["reanalyze", str(failed)])
    assert result.exit_code == 0, result.output
    assert f"for {current}" in result.output

    with sessions() as session:
        old = session.get(Job, waiting)
        assert old.state == JobState.failed and "superseded" in old.reason and str(moved["new_job"]) in old.reason
        assert session.get(Job, failed).state == JobState.failed  # a finished job keeps its state
        assert session.get(Job, gone).state == JobState.queued  # refused: nothing changed
        assert session.get(Job, mine).state == JobState.queued
        new_jobs = session.scalars(select(Job).where(Job.model_version == current).order_by(Job.id)).all()
        assert [j.id for j in new_jobs][0] == mine and len(new_jobs) == 3
        assert all(j.state == JobState.queued for j in new_jobs)
        pending = {row.job_id for row in jobs.pending_outbox(session)}
        assert {j.id for j in new_jobs} <= pending

    for job_id, why in ((mine, "already for model"), (4242, "does not exist"), (gone, "spooled instances are gone")):
        refused = runner.invoke(app, ["reanalyze", str(job_id)])
        assert refused.exit_code == 2 and why in refused.output and refused.output.startswith("Error:")


def test_reanalyze_publishes_the_new_job_to_the_broker(tmp_path, monkeypatch, redis_url):
    import base64

    import redis

    monkeypatch.setenv("MEDDET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDDET_BROKER_URL", redis_url)
    monkeypatch.delenv("MEDDET_CHECKPOINT", raising=False)
    sessions = migrated_sessions(Settings(data_dir=tmp_path).effective_database_url)
    old = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "a", "meddet-old+r0")
    with transaction(sessions) as session:
        for row in jobs.pending_outbox(session):  # the old job's row went out before the upgrade
            jobs.mark_published(session, row.id)
    result = CliRunner().invoke(app, ["reanalyze", str(old), "--json"])
    assert result.exit_code == 0, result.output
    moved = json.loads(result.output.strip().splitlines()[-1])
    assert moved["published"] is True and moved["new_job"] != old
    client = redis.Redis.from_url(redis_url)
    bodies = [json.loads(base64.b64decode(json.loads(raw)["body"])) for raw in client.lrange("gpu", 0, -1)]
    client.close()
    assert [args for args, _kwargs, _ in bodies] == [[moved["new_job"]]]
    with sessions() as session:
        assert jobs.pending_outbox(session) == []


def test_serve_with_a_broker_only_tells_of_jobs_queued_for_another_model(tmp_path, capsys, redis_url):
    from dicom_node.cli.node import _move_stale_jobs

    settings = Settings(data_dir=tmp_path, broker_url=redis_url)
    sessions = migrated_sessions(settings.effective_database_url)
    old = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "a", "meddet-old+r0")
    _move_stale_jobs(settings, sessions, "meddet-new+r1")
    told = capsys.readouterr().err.replace("\n", " ")
    assert "1 queued job(s) are for another model version than meddet-new+r1" in told
    assert "meddet reanalyze --queued" in told
    with sessions() as session:  # workers of the old version may still be draining it: untouched
        assert session.get(Job, old).state == JobState.queued
        assert session.scalars(select(Job)).all() == [session.get(Job, old)]
