"""`meddet worker` / `retry` / `resend` argument handling, and the model on CUDA when present."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dicom_node.audit.db import transaction
from dicom_node.audit.models import Job, JobState
from dicom_node.cli import app
from dicom_node.cli import ops  # noqa: F401  (registers the commands)
from dicom_node.config import Settings
from dicom_node import jobs
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
    assert resend.exit_code == 1
    assert "no stored results" in json.loads(resend.output)["reason"]
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
