"""A real ``meddet worker`` whose job kills its pool process (issue 12 items 5 and 6).

The analysis is a stand-in patched into the worker (no model needed): it dies mid-job (out of
memory: the message is redelivered at once) or hangs past Celery's hard time limit (the
message is acknowledged and nothing redelivers it). Either way the job must end ``failed``
with the reason after ``max_deliveries``, through the lease claim and the worker's own
sweeper, and never stay ``running`` or run forever.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.models import Job
from dicom_node.config import Settings
from dicom_node.loopback import MeddetProcess, wait_for
from dicom_node.metrics import Metrics
from tests.factories import make_mr_series
from tests.worker.support import job_state, migrated_sessions, register_series
from worker.dispatch import make_dispatcher

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]

# Runs `meddet worker` with the analysis replaced; the pool processes inherit it (fork).
WORKER = """
import signal, sys, time
from tests.worker import fakes
from worker import app, context, pipeline

mode = sys.argv.pop(1)
context.WorkerContext.warm_up = lambda self: None  # no model
if mode == "oom":
    pipeline.analyze = fakes.killed_analyze
elif mode == "retry_once":
    pipeline.analyze = fakes.retry_once_analyze
elif mode == "slow_warm_up":  # the model takes longer to load than Celery's 4 s default allows
    context.WorkerContext.warm_up = lambda self: time.sleep(6)
    pipeline.analyze = fakes.killed_once_analyze
else:  # stuck where the soft time limit cannot stop it (native code): killed at the hard one
    def stuck(ctx, job_id, run):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # Celery's soft limit
        time.sleep(600)

    pipeline.analyze = stuck
    config = app.celery_config
    app.celery_config = lambda *a: {**config(*a), "task_soft_time_limit": 1, "task_time_limit": 2}
from dicom_node.cli import main
main()
"""


@dataclass
class Faulty:
    """A relay in this process and the patched ``meddet worker`` subprocess, sharing a SQLite audit DB."""

    sessions: sessionmaker[Session]
    log: Path
    job_id: int = 0


@contextmanager
def faulty_worker(mode: str, tmp_path: Path, redis_url: str) -> Iterator[Faulty]:
    """Run one job (a series registered as the node records it) with the worker in ``mode``."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    env = {
        **os.environ,
        "MEDDET_DATA_DIR": str(tmp_path / "data"),
        "MEDDET_DATABASE_URL": url,
        "MEDDET_BROKER_URL": redis_url,
        "MEDDET_JOB_LEASE_SECONDS": "3",
        "OMP_NUM_THREADS": "1",
    }
    sessions = migrated_sessions(url)
    settings = Settings(data_dir=tmp_path / "data", database_url=url, broker_url=redis_url)
    relay = make_dispatcher(settings, sessions, Metrics(), poll_interval=0.2)
    run = Faulty(sessions, tmp_path / "worker.log")
    args = ["worker", "--concurrency", "1", "--retry-backoff", "0.5", "--visibility-timeout", "30"]
    worker = MeddetProcess(args, env, run.log, command=[sys.executable, "-c", WORKER, mode], cwd=ROOT)
    relay.start()
    try:
        run.job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
        relay.notify()
        yield run
    finally:
        relay.stop()
        worker.stop(30)


def _history(run: Faulty) -> tuple[Job, list[str]]:
    with run.sessions() as session:
        job = session.get(Job, run.job_id)
        assert job is not None
        return job, [e["state"] for e in jobs.job_history(session, run.job_id)]


@pytest.mark.parametrize("mode", ["oom", "hard_time_limit"])
def test_a_job_that_kills_its_worker_fails_after_max_deliveries(mode, tmp_path, redis_url):
    with faulty_worker(mode, tmp_path, redis_url) as run:
        wait_for(
            lambda: job_state(run.sessions, run.job_id) == "failed",
            150,
            f"the job to fail ({mode}); log: {run.log}",
            interval=0.2,
        )
    job, history = _history(run)
    assert "worker lost on 3 deliveries" in job.reason, job.reason
    assert history.count("running") == 3, history


def test_a_celery_retry_keeps_its_lease_and_runs(tmp_path, redis_url):
    """The retry message carries the delivery's lease token: it runs the job, no loss counted."""
    with faulty_worker("retry_once", tmp_path, redis_url) as run:
        wait_for(lambda: job_state(run.sessions, run.job_id) in ("done", "failed"), 90, "the job", interval=0.2)
    job, history = _history(run)
    assert (job.state.value, job.lost_deliveries, job.retries) == ("done", 0, 1), history
    assert history == ["queued", "running", "retry", "running", "results_written", "sent", "done"]


def test_a_pool_process_that_loads_its_model_slowly_replaces_a_killed_one(tmp_path, redis_url):
    """Issue 12 fault suite: after its pool process was killed, the worker forks a new one that
    loads the model again; Celery killed any that took over 4 s to start (a loaded host), again
    and again, so the worker never ran another job."""
    with faulty_worker("slow_warm_up", tmp_path, redis_url) as run:
        wait_for(
            lambda: job_state(run.sessions, run.job_id) in ("done", "failed"),
            90,
            f"the job; log: {run.log}",
            interval=0.2,
        )
    job, history = _history(run)
    assert job.state.value == "done", (job.reason, history)
    assert history.count("running") == 2, history
    assert "Timed out waiting for UP message" not in run.log.read_text()
