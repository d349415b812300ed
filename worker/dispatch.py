"""The hand-off the node calls: outbox rows become task runs, in either mode.

- Distributed (``MEDDET_BROKER_URL`` set): :class:`OutboxRelay` publishes unpublished outbox
  rows to Celery by task name (no torch, no task code in the node) and marks them published.
  A broker that is down leaves the rows where they are; the relay backs off and tries again.
- Embedded (no broker): :class:`EmbeddedWorker` runs the same task function in this process,
  on one thread; a row is marked published only once its run ended, so a crash re-runs it.

Both poll the outbox (the source of truth) and wake early on :meth:`notify`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.config import Settings
from dicom_node.logging import get_logger
from dicom_node.metrics import Metrics
from worker.context import RetryPolicy, WorkerContext
from worker.errors import RetriableError

log = get_logger(__name__)

Publish = Callable[[str, int], None]  # (task name, job id)


class Dispatcher(Protocol):
    def start(self) -> None: ...
    def notify(self) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...


class _OutboxLoop:
    """A daemon thread calling :meth:`tick` (returns seconds until the next call)."""

    name = "outbox"

    def __init__(self, sessions: sessionmaker[Session], metrics: Metrics, poll_interval: float):
        self.sessions = sessions
        self.metrics = metrics
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"meddet-{self.name}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("dispatcher_still_busy", thread=self._thread.name, waited=timeout)

    def _prepare(self) -> None:
        """Runs once on the thread before the first tick."""

    def _loop(self) -> None:
        self._prepare()
        delay = 0.0
        while not self._stopping.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                delay = self.tick()
                self._refresh_gauge()
            except Exception:  # keep the node serving; the outbox keeps the work
                log.exception("dispatcher_tick_failed", thread=self.name)
                delay = max(self.poll_interval, 5.0)

    def _refresh_gauge(self) -> None:
        with transaction(self.sessions) as session:
            self.metrics.set_job_states(jobs.count_by_state(session))

    def _pending(self) -> list[tuple[int, int, str]]:
        with transaction(self.sessions) as session:
            return [(r.id, r.job_id, r.task_name) for r in jobs.pending_outbox(session)]

    def tick(self) -> float:
        raise NotImplementedError


def broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (OperationalError, RedisConnectionError, RedisTimeoutError, OSError)


class OutboxRelay(_OutboxLoop):
    """Publishes outbox rows to the broker; backs off (up to ``max_backoff``) while it is down."""

    name = "outbox-relay"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        metrics: Metrics,
        publish: Publish,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
    ) -> None:
        super().__init__(sessions, metrics, poll_interval)
        self.publish = publish
        self.max_backoff = max_backoff
        self._failures = 0

    def tick(self) -> float:
        """Publish rows one transaction each: lock the row, publish, mark it (at least once)."""
        errors = broker_errors()
        while not self._stopping.is_set():
            with transaction(self.sessions) as session:
                row = jobs.next_unpublished(session)
                if row is None:
                    return self.poll_interval
                try:
                    self.publish(row.task_name, row.job_id)
                except errors as exc:
                    self._failures += 1
                    jobs.mark_publish_failed(session, row.id, f"{type(exc).__name__}: {exc}")
                    delay = min(self.max_backoff, self.poll_interval * 2**self._failures)
                    log.warning("broker_unavailable", job_id=row.job_id, retry_in=delay, error=str(exc))
                    return delay
                jobs.mark_published(session, row.id)
                self._failures = 0
                log.info("job_published", job_id=row.job_id, task=row.task_name)
        return self.poll_interval


class EmbeddedWorker(_OutboxLoop):
    """Runs outbox rows in this process, one at a time, with the task's retry policy."""

    name = "embedded-worker"

    def __init__(self, context: WorkerContext, poll_interval: float = 1.0) -> None:
        super().__init__(context.sessions, context.metrics, poll_interval)
        self.context = context
        self._attempts: dict[int, int] = {}
        self._not_before: dict[int, float] = {}

    def _prepare(self) -> None:
        try:  # load the model now, off the node's threads, not on the first series
            self.context.warm_up()
        except Exception:  # each job will fail with the reason; the node keeps receiving
            log.exception("model_load_failed", checkpoint=str(self.context.settings.checkpoint))

    def tick(self) -> float:
        from worker.tasks import run_job, schedule_retry

        for row_id, job_id, _task in self._pending():
            if self._stopping.is_set():
                break
            if self._not_before.get(row_id, 0.0) > time.monotonic():
                continue
            try:
                run_job(self.context, job_id)
            except RetriableError as exc:
                attempt = self._attempts.get(row_id, 0)
                countdown = schedule_retry(self.context, job_id, exc, attempt)
                if countdown is not None:
                    self._attempts[row_id] = attempt + 1
                    self._not_before[row_id] = time.monotonic() + countdown
                    continue
            except Exception:  # the job is already marked failed with the reason
                log.exception("embedded_job_crashed", job_id=job_id)
            self._attempts.pop(row_id, None)
            self._not_before.pop(row_id, None)
            with transaction(self.sessions) as session:
                jobs.mark_published(session, row_id)
        waits = [t - time.monotonic() for t in self._not_before.values()]
        return max(0.05, min([self.poll_interval, *waits]))


def celery_publisher(settings: Settings) -> Publish:
    """Publish by task name to ``settings.broker_url`` (a bare Celery app: no task code)."""
    from celery import Celery

    from worker.app import QUEUE, WorkerOptions, celery_config

    config = celery_config(settings, WorkerOptions())
    del config["result_backend"]  # the node never waits for results: no result subscription
    app = Celery("meddet-relay", set_as_current=False)
    app.conf.update(config)

    def publish(task_name: str, job_id: int) -> None:
        app.send_task(task_name, args=[job_id], queue=QUEUE)

    return publish


def make_dispatcher(
    settings: Settings,
    session_factory: sessionmaker[Session],
    metrics: Metrics,
    *,
    poll_interval: float = 1.0,
    retry_backoff: float = 5.0,
) -> Dispatcher:
    """The relay (broker configured) or the in-process worker (embedded mode); call start()."""
    if settings.embedded:
        retry = RetryPolicy(max_retries=settings.send_retries, base_seconds=retry_backoff)
        context = WorkerContext(settings, session_factory, metrics, retry=retry)
        return EmbeddedWorker(context, poll_interval)
    return OutboxRelay(session_factory, metrics, celery_publisher(settings), poll_interval)
