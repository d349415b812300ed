"""A job from the outbox to results at a destination SCP, with a real ``celery worker``.

Distributed mode: the relay publishes to the real Redis (a database claimed for this test) and a
``meddet worker`` subprocess runs the task. Faults: the process running a job is SIGKILLed (the
job is redelivered and its results are sent once), and a destination that is down (retries,
then ``failed``, then ``meddet resend`` once it is up). Embedded mode runs the same loop on the
in-process worker thread. One run uses PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.models import Job
from dicom_node.config import Settings
from dicom_node.loopback import MeddetProcess, TestPACS, free_port, wait_for
from dicom_node.metrics import Metrics
from dicom_node.outbox import Dispatcher
from tests.worker.support import (
    checkpoint_for_tests,
    job_state,
    migrated_sessions,
    register_series,
    start_worker,
)
from worker.dispatch import make_dispatcher

pytestmark = pytest.mark.integration

EVERY_STATE = ["queued", "running", "results_written", "sent", "done"]


def series_datasets(n: int, seed: int = 0) -> list[Dataset]:
    """A synthetic sagittal cervical T2 series (``meddet synth``'s phantom), read back."""
    from dicom_node.synth import write_studies

    with tempfile.TemporaryDirectory() as tmp:
        (study,) = write_studies(Path(tmp), 1, seed, n_slices=n, size=256)
        return [dcmread(p) for p in sorted(study.dicom_dir.glob("*.dcm"))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return checkpoint_for_tests(tmp_path_factory.mktemp("checkpoint"))


def _env(tmp_path: Path, database_url: str, broker_url: str, destination: str, checkpoint: Path):
    return {
        **os.environ,
        "MEDDET_DATA_DIR": str(tmp_path / "data"),
        "MEDDET_DATABASE_URL": database_url,
        "MEDDET_BROKER_URL": broker_url,
        "MEDDET_DESTINATIONS": destination,
        "MEDDET_CHECKPOINT": str(checkpoint),
        "MEDDET_SEND_RETRIES": "2",
        "MEDDET_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }


def _settings(env: dict[str, str], **overrides) -> Settings:
    keys = {k[len("MEDDET_") :].lower(): v for k, v in env.items() if k.startswith("MEDDET_") and k != "MEDDET_CONFIG"}
    return Settings(**{**keys, **overrides})


def _meddet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a ``meddet`` command; it must succeed."""
    cli = subprocess.run(
        [sys.executable, "-c", "from dicom_node.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    return cli


def _history(sessions: sessionmaker[Session], job_id: int) -> list[dict]:
    with sessions() as session:
        return jobs.job_history(session, job_id)


def _states(history: list[dict]) -> list[str]:
    return [e["state"] for e in history if not e["state"].startswith("step:") and e["state"] != "retry"]


def _model_version(checkpoint: Path) -> str:
    import detector

    return detector.model_version(checkpoint)


def _assert_results_once(scp: TestPACS, settings: Settings, job_id: int) -> None:
    manifest = json.loads((settings.results_dir / str(job_id) / "objects.json").read_text())
    expected = sorted(item["sop_instance_uid"] for item in manifest)
    assert expected, "the job wrote no result objects"
    assert sorted(scp.uids()) == expected  # every object exactly once
    findings = json.loads((settings.results_dir / str(job_id) / "findings.json").read_text())
    assert findings["model"]["name"] == "meddet"


@dataclass
class Loop:
    """A relay in this process and a ``meddet worker`` subprocess sharing one audit DB."""

    env: dict[str, str]
    settings: Settings
    sessions: sessionmaker[Session]
    relay: Dispatcher
    worker: MeddetProcess

    def submit(self, n_slices: int, spool: Path) -> int:
        """Register a series as the node does (job + outbox row) and wake the relay."""
        job_id = register_series(
            self.sessions, series_datasets(n_slices), spool, _model_version(Path(self.env["MEDDET_CHECKPOINT"]))
        )
        self.relay.notify()
        return job_id

    def wait_finished(self, job_id: int) -> str:
        finished = ("done", "failed", "quarantined")
        return wait_for(
            lambda: (s := job_state(self.sessions, job_id)) in finished and s,
            120,
            f"job {job_id} to finish",
            interval=0.2,
        )


@contextmanager
def distributed(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    destination: str,
    checkpoint: Path,
    *worker_args: str,
    **worker_env: str,
) -> Iterator[Loop]:
    env = _env(tmp_path, database_url, redis_url, destination, checkpoint)
    settings = _settings(env)
    sessions = migrated_sessions(database_url)
    worker = start_worker({**env, **worker_env}, tmp_path / "worker.log", *worker_args)
    relay = make_dispatcher(settings, sessions, Metrics(), poll_interval=0.2)
    relay.start()
    try:
        yield Loop(env, settings, sessions, relay, worker)
    finally:
        relay.stop()
        worker.stop()


def _run_distributed_loop(tmp_path, database_url, redis_url, scp, checkpoint) -> None:
    metrics_port = free_port()
    with distributed(
        tmp_path, database_url, redis_url, scp.destination, checkpoint, MEDDET_METRICS_PORT=str(metrics_port)
    ) as loop:
        job_id = loop.submit(8, tmp_path / "spool")
        loop.wait_finished(job_id)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        scraped = urllib.request.urlopen(url, timeout=10).read().decode()
    history = _history(loop.sessions, job_id)
    assert _states(history) == EVERY_STATE, (history, (tmp_path / "worker.log").read_text()[-3000:])
    assert all(e["at"] for e in history)
    steps = {e["state"] for e in history if e["state"].startswith("step:")}
    assert {"step:decode", "step:detect", "step:levels", "step:results", "step:send"} <= steps
    _assert_results_once(scp, loop.settings, job_id)
    # the worker's endpoint sums its pool processes (prometheus multiprocess mode)
    assert "meddet_job_run_seconds_count 1.0" in scraped
    assert "meddet_detector_seconds_per_slice_count 1.0" in scraped


def test_distributed_loop_with_a_celery_worker(tmp_path, redis_url, scp, checkpoint):
    _run_distributed_loop(tmp_path, f"sqlite:///{tmp_path / 'audit.db'}", redis_url, scp, checkpoint)


def test_distributed_loop_on_postgresql(tmp_path, redis_url, scp, checkpoint, postgres_url):
    _run_distributed_loop(tmp_path, postgres_url, redis_url, scp, checkpoint)


def _running_pids(loop: Loop, job_id: int) -> list[int]:
    return [int(json.loads(e["detail"])["pid"]) for e in _history(loop.sessions, job_id) if e["state"] == "running"]


@pytest.mark.slow
def test_sigkill_mid_job_redelivers_and_sends_once(tmp_path, redis_url, scp, checkpoint):
    with distributed(tmp_path, f"sqlite:///{tmp_path / 'audit.db'}", redis_url, scp.destination, checkpoint) as loop:
        job_id = loop.submit(20, tmp_path / "spool")
        (pid,) = wait_for(lambda: _running_pids(loop, job_id), 60, "the job to start running", interval=0.02)
        os.kill(pid, signal.SIGKILL)  # the pool process running the job dies mid-job
        loop.wait_finished(job_id)
    history = _history(loop.sessions, job_id)
    states = _states(history)
    assert states[0] == "queued" and states[-1] == "done", history
    running = [json.loads(e["detail"]) for e in history if e["state"] == "running"]
    assert len(running) == 2 and running[1].get("redelivered_from") == "running", history
    assert running[1]["pid"] != pid
    _assert_results_once(scp, loop.settings, job_id)


@pytest.mark.slow
def test_whole_worker_killed_its_job_goes_to_the_next_worker(tmp_path, redis_url, scp, checkpoint):
    """The worker's main process dies too (OOM, host crash): the unacked message comes back
    after the visibility timeout to whichever worker runs then."""
    with distributed(
        tmp_path,
        f"sqlite:///{tmp_path / 'audit.db'}",
        redis_url,
        scp.destination,
        checkpoint,
        "--visibility-timeout",
        "6",
    ) as loop:
        job_id = loop.submit(20, tmp_path / "spool")
        wait_for(lambda: _running_pids(loop, job_id), 60, "the job to start running", interval=0.02)
        loop.worker.kill()
        assert job_state(loop.sessions, job_id) == "running"
        second = start_worker(loop.env, tmp_path / "worker2.log", "--visibility-timeout", "6")
        try:
            assert loop.wait_finished(job_id) == "done"
        finally:
            second.stop()
    assert len(_running_pids(loop, job_id)) == 2
    assert _states(_history(loop.sessions, job_id))[-4:] == EVERY_STATE[1:]
    _assert_results_once(scp, loop.settings, job_id)


@pytest.mark.slow
def test_destination_down_retries_fails_then_resend_succeeds(tmp_path, redis_url, checkpoint):
    scp = TestPACS(ae_title="DEST")  # not started: the destination is down
    with distributed(tmp_path, f"sqlite:///{tmp_path / 'audit.db'}", redis_url, scp.destination, checkpoint) as loop:
        job_id = loop.submit(6, tmp_path / "spool")
        assert loop.wait_finished(job_id) == "failed"
    sessions, settings, env = loop.sessions, loop.settings, loop.env
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.state.value == "failed" and job.retries == 2
        assert "gave up after 2 retries" in job.reason and scp.destination in job.reason
    history = _history(sessions, job_id)
    assert [e["state"] for e in history].count("retry") == 2
    audit = json.loads(_meddet(env, "audit", "jobs", "--status", "failed", "--json").stdout)
    assert [(row["job_id"], row["retries"]) for row in audit] == [(job_id, 2)]
    assert "gave up after 2 retries" in audit[0]["reason"]
    scp.start()
    try:
        cli = _meddet(env, "resend", str(job_id), "--json")
        assert json.loads(cli.stdout.strip().splitlines()[-1]) == {"job": job_id, "outcome": "done"}
        _assert_results_once(scp, settings, job_id)
    finally:
        scp.stop()
    assert _states(_history(sessions, job_id))[-4:] == ["failed", "resend", "sent", "done"]


def test_embedded_loop_runs_in_process(tmp_path, scp, checkpoint):
    settings = Settings(
        data_dir=tmp_path / "data",
        destinations=scp.destination,
        checkpoint=checkpoint,
        device="cpu",
        send_retries=1,
    )
    sessions = migrated_sessions(settings.effective_database_url)
    metrics = Metrics()
    dispatcher = make_dispatcher(settings, sessions, metrics, poll_interval=0.2, retry_backoff=0.2)
    dispatcher.start()
    try:
        job_id = register_series(sessions, series_datasets(6), tmp_path / "spool", _model_version(checkpoint))
        dispatcher.notify()
        wait_for(
            lambda: job_state(sessions, job_id) in ("done", "failed", "quarantined"), 120, "job to finish", interval=0.2
        )
    finally:
        dispatcher.stop(timeout=60)
    assert _states(_history(sessions, job_id)) == EVERY_STATE, _history(sessions, job_id)
    _assert_results_once(scp, settings, job_id)
    assert metrics.registry.get_sample_value("meddet_job_run_seconds_count") == 1.0
    assert metrics.registry.get_sample_value("meddet_queue_wait_seconds_count") == 1.0
    with sessions() as session:
        assert jobs.pending_outbox(session) == []


def test_embedded_a_job_for_another_model_fails_then_meddet_reanalyze_runs_its_series(tmp_path, checkpoint):
    """A job queued before an upgrade (another model version) fails on this node's worker;
    `meddet reanalyze` queues its series from the spool for this node's model, which runs it."""
    scp = TestPACS(ae_title="DEST").start()
    settings = Settings(data_dir=tmp_path / "data", destinations=scp.destination, checkpoint=checkpoint, device="cpu")
    sessions = migrated_sessions(settings.effective_database_url)
    dispatcher = make_dispatcher(settings, sessions, Metrics(), poll_interval=0.2, retry_backoff=0.2)
    dispatcher.start()
    env = {**os.environ, "MEDDET_DATA_DIR": str(settings.data_dir), "MEDDET_CHECKPOINT": str(checkpoint)}
    try:
        old = register_series(sessions, series_datasets(6), tmp_path / "spool", "meddet-student-000000000000+r0")
        dispatcher.notify()
        wait_for(lambda: job_state(sessions, old) == "failed", 120, "the old model's job to fail", interval=0.2)
        cli = _meddet(env, "reanalyze", str(old), "--json")
        moved = json.loads(cli.stdout.strip().splitlines()[-1])
        assert moved["job"] == old and moved["model_version"] == _model_version(checkpoint)
        dispatcher.notify()
        wait_for(lambda: job_state(sessions, moved["new_job"]) == "done", 120, "the re-analysis", interval=0.2)
        again = subprocess.run(
            [sys.executable, "-c", "from dicom_node.cli import main; main()", "reanalyze", str(old)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 2 and f"already has job {moved['new_job']}" in again.stderr
    finally:
        dispatcher.stop(timeout=60)
        scp.stop()
    with sessions() as session:
        reason = session.get(Job, old).reason
        assert "this worker runs model" in reason and f"meddet reanalyze {old}" in reason
    assert _states(_history(sessions, moved["new_job"])) == EVERY_STATE
    _assert_results_once(scp, settings, moved["new_job"])


def test_embedded_destination_down_fails_then_meddet_retry_runs_it_again(tmp_path, checkpoint):
    scp = TestPACS(ae_title="DEST")  # down for the first run
    settings = Settings(
        data_dir=tmp_path / "data",
        destinations=scp.destination,
        checkpoint=checkpoint,
        device="cpu",
        send_retries=1,
    )
    sessions = migrated_sessions(settings.effective_database_url)
    dispatcher = make_dispatcher(settings, sessions, Metrics(), poll_interval=0.2, retry_backoff=0.2)
    dispatcher.start()
    try:
        job_id = register_series(sessions, series_datasets(6), tmp_path / "spool", _model_version(checkpoint))
        dispatcher.notify()
        wait_for(lambda: job_state(sessions, job_id) == "failed", 120, "job to fail", interval=0.2)
        scp.start()
        cli = _meddet({**os.environ, "MEDDET_DATA_DIR": str(settings.data_dir)}, "retry", str(job_id), "--json")
        assert json.loads(cli.stdout.strip().splitlines()[-1])["run"] == 2
        dispatcher.notify()
        wait_for(lambda: job_state(sessions, job_id) == "done", 120, "the retried job", interval=0.2)
    finally:
        dispatcher.stop(timeout=60)
        scp.stop()
    states = _states(_history(sessions, job_id))
    assert states == ["queued", "running", "results_written", "failed", *EVERY_STATE], states
    _assert_results_once(scp, settings, job_id)
