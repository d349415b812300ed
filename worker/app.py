"""The Celery app (distributed mode): Redis broker and result backend from ``MEDDET_BROKER_URL``.

The node publishes by task name only (``dicom_node.outbox``: no task code, no torch); workers
consume queue ``gpu`` with late acks, one message at a time, and load the model once per
process, on CUDA when the host has it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from dicom_node.config import Settings
from dicom_node.leases import LeaseSweeper
from dicom_node.logging import get_logger
from dicom_node.outbox import QUEUE, broker_config
from worker.context import RetryPolicy, WorkerContext, build_context
from worker.tasks import register_tasks

log = get_logger(__name__)
POOL_START_SECONDS = 300.0  # for a pool process to load the model and report up


@dataclass(frozen=True)
class WorkerOptions:
    """Knobs of the Celery app that are not node settings (``meddet worker`` options)."""

    soft_time_limit: float = 600.0  # seconds per delivery, then SoftTimeLimitExceeded
    time_limit: float = 660.0  # hard kill of the process running the task
    # Unacked messages of a worker that vanished are redelivered after this many seconds;
    # it must exceed time_limit plus the longest retry countdown.
    visibility_timeout: float = 3600.0
    retry_backoff: float = 5.0  # first retry after this, doubling


def celery_config(settings: Settings, options: WorkerOptions) -> dict[str, Any]:
    """The Celery configuration as plain data (testable without a broker): the broker part the
    node's relay shares (:func:`dicom_node.outbox.broker_config`), then the workers' own."""
    if not settings.broker_url:
        raise ValueError("broker_url: distributed mode needs MEDDET_BROKER_URL (a Redis URL)")
    shared = broker_config(settings.broker_url, options.visibility_timeout)
    return {
        **shared,
        "result_backend": settings.broker_url,
        "result_backend_transport_options": shared["broker_transport_options"],
        "task_acks_late": True,
        # Broker connection lost: stop the running job (its message will be redelivered)
        # rather than finish it and run it again.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A new pool process loads the model before it reports up (worker_process_init); Celery
        # kills one silent for 4 s, then forks the next one, forever, on a host slow enough.
        "worker_proc_alive_timeout": POOL_START_SECONDS,
        "result_serializer": "json",
        "task_soft_time_limit": options.soft_time_limit,
        "task_time_limit": options.time_limit,
        "result_expires": 24 * 3600,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
    }


def make_celery(
    settings: Settings,
    options: WorkerOptions | None = None,
    context: Callable[[], WorkerContext] | None = None,
) -> Celery:
    """The app with ``meddet.analyze_series`` registered.

    ``context`` returns this process's WorkerContext; by default one is built lazily per process
    (after the prefork fork), so the engine and the model are never shared across processes.
    """
    options = options or WorkerOptions()
    app = Celery("meddet", set_as_current=False)
    app.conf.update(celery_config(settings, options))
    if context is None:
        context = ProcessContext(settings, options)
    register_tasks(app, context)
    return app


class ProcessContext:
    """A lazily built WorkerContext, rebuilt in a forked child (keyed by process id)."""

    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        self._settings = settings
        self._options = options
        self._pid: int | None = None
        self._context: WorkerContext | None = None

    def __call__(self) -> WorkerContext:
        import os

        if self._context is None or self._pid != os.getpid():
            retry = RetryPolicy(
                max_retries=self._settings.send_retries,
                base_seconds=self._options.retry_backoff,
            )
            self._context = build_context(self._settings, retry=retry)
            self._pid = os.getpid()
        return self._context


def run_worker(
    settings: Settings,
    options: WorkerOptions,
    *,
    concurrency: int = 1,
    queues: str = QUEUE,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in this process (blocks); each pool process loads the model once."""
    from celery.signals import worker_process_init

    context = ProcessContext(settings, options)
    app = make_celery(settings, options, context)

    def _warm_up(**_: object) -> None:
        try:
            context().warm_up()
        except Exception:  # the task will fail with the reason; keep the pool process alive
            log.exception("model_load_failed", checkpoint=str(settings.checkpoint))

    worker_process_init.connect(_warm_up, weak=False)
    sweeper = _start_sweeper(settings)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={queues}",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    try:
        app.worker_main(argv)
    finally:
        sweeper.stop()


def _start_sweeper(settings: Settings) -> LeaseSweeper:
    """The lease sweeper in the worker's main process: jobs of a pool process that was killed
    (out of memory, hard time limit) are requeued or failed even when no node runs one.
    Unpooled, and every fork waits for its pass to end (``fork_guard``), so a pool process
    forked later holds none of its connections nor their locks."""
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.outbox import make_sweeper

    engine = make_engine(settings.effective_database_url, pooled=False)
    return make_sweeper(settings, make_session_factory(engine), lambda: None, guard=fork_guard()).start()


def fork_guard() -> threading.Lock:
    """A lock every fork of this process waits for (``os.register_at_fork``).

    Held around each lease-sweeper pass: Celery forks a new pool process as soon as one dies,
    often just when the sweeper is requeueing that process's job. A child forked while the
    sweeper held the SQLite database copies SQLite's in-process lock table, believes another
    connection of its own holds the write lock, and gets "database is locked" on every write
    (seen once in CI: a replacement pool process retried a job for 60 s and never ran it).
    """
    guard = threading.Lock()
    os.register_at_fork(before=guard.acquire, after_in_parent=guard.release, after_in_child=guard.release)
    return guard
