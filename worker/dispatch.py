"""The hand-off the node calls: outbox rows become task runs, in either mode.

- Distributed (``MEDDET_BROKER_URL`` set): :class:`OutboxRelay` publishes unpublished outbox
  rows to Celery by task name (no torch, no task code in the node) and marks them published.
  A broker that is down leaves the rows where they are; the relay backs off and tries again.
- Embedded (no broker): :class:`EmbeddedWorker` runs the same task function in this process,
  on one thread; a row is marked published only once its run ended, so a crash re-runs it
  (and the job's lease counts the crash: a job that kills the node is failed after
  ``max_deliveries``, not re-run forever).
- Both modes run a :class:`dicom_node.leases.LeaseSweeper` (:func:`make_sweeper`) that takes
  back jobs whose lease expired.

Both poll the outbox (the source of truth) and wake early on :meth:`notify`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs, leases
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
        """Publish every pending row, one transaction each (at least once; see
        :func:`publish_next`); back off while the broker is down."""
        while not self._stopping.is_set():
            try:
                if publish_next(self.sessions, self.publish) is None:
                    return self.poll_interval
            except PublishFailed as exc:
                self._failures += 1
                delay = min(self.max_backoff, self.poll_interval * 2**self._failures)
                log.warning("broker_unavailable", job_id=exc.job_id, retry_in=delay, error=str(exc))
                return delay
            self._failures = 0
        return self.poll_interval


class PublishFailed(Exception):
    """The broker refused or could not be reached; the row stays unpublished."""

    def __init__(self, job_id: int, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.job_id = job_id


def publish_next(
    sessions: sessionmaker[Session], publish: Publish, job_id: int | None = None
) -> int | None:
    """Publish the oldest pending row (of ``job_id`` if given); its job id, or None if none.

    The row is marked published with a compare-and-set before the publish, in the same
    transaction, which commits after it: another relay never publishes it too, and a broker
    that refuses rolls the mark back (PublishFailed). A crash between publish and commit
    publishes the row again; the task's lease claim makes that second delivery a no-op.
    """
    errors = broker_errors()
    row: tuple[int, int, str] | None = None
    try:
        with transaction(sessions) as session:
            row = jobs.reserve_next(session, job_id)
            if row is None:
                return None
            publish(row[2], row[1])
    except errors as exc:
        if row is None:
            raise
        with transaction(sessions) as session:
            jobs.mark_publish_failed(session, row[0], f"{type(exc).__name__}: {exc}")
        raise PublishFailed(row[1], exc) from exc
    log.info("job_published", job_id=row[1], task=row[2])
    return row[1]


class EmbeddedWorker(_OutboxLoop):
    """Runs outbox rows in this process, one at a time, with the task's retry policy."""

    name = "embedded-worker"

    def __init__(self, context: WorkerContext, poll_interval: float = 1.0) -> None:
        super().__init__(context.sessions, context.metrics, poll_interval)
        self.context = context
        self._attempts: dict[int, int] = {}
        self._not_before: dict[int, float] = {}
        self._leases: dict[int, tuple[int, str]] = {}  # row -> (job, token) awaiting a retry

    def _prepare(self) -> None:
        try:  # load the model now, off the node's threads, not on the first series
            self.context.warm_up()
        except Exception:  # each job will fail with the reason; the node keeps receiving
            log.exception("model_load_failed", checkpoint=str(self.context.settings.checkpoint))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop, and give up the leases of jobs waiting for a retry: the next start (or the
        sweeper) takes them up without counting a lost delivery."""
        super().stop(timeout)
        for job_id, token in self._leases.values():
            try:
                leases.release(self.sessions, job_id, token)
            except Exception:  # the lease expires on its own
                log.exception("lease_not_released", job_id=job_id)

    def tick(self) -> float:
        for row_id, job_id, _task in self._pending():
            if self._stopping.is_set():
                break
            if self._not_before.get(row_id, 0.0) > time.monotonic():
                continue
            if self._run(row_id, job_id):
                continue
            self._attempts.pop(row_id, None)
            self._not_before.pop(row_id, None)
            self._leases.pop(row_id, None)
            with transaction(self.sessions) as session:
                jobs.mark_published(session, row_id)
        waits = [t - time.monotonic() for t in self._not_before.values()]
        return max(0.05, min([self.poll_interval, *waits]))

    def _run(self, row_id: int, job_id: int) -> bool:
        """One delivery of the row's job; True when it waits for a retry."""
        from worker.tasks import run_job, schedule_retry

        token = self._leases.get(row_id, (job_id, leases.new_token()))[1]
        try:
            run_job(self.context, job_id, token)
        except RetriableError as exc:
            attempt = self._attempts.get(row_id, 0)
            countdown = schedule_retry(self.context, job_id, exc, attempt, token)
            if countdown is not None:
                self._attempts[row_id] = attempt + 1
                self._not_before[row_id] = time.monotonic() + countdown
                self._leases[row_id] = (job_id, token)
                return True
        except Exception:  # the job is already marked failed with the reason
            log.exception("embedded_job_crashed", job_id=job_id)
        return False


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


def make_sweeper(
    settings: Settings, session_factory: sessionmaker[Session], on_requeued: Callable[[], None]
) -> leases.LeaseSweeper:
    """The lease sweeper of ``meddet serve`` and ``meddet worker``; call start()."""
    interval = leases.sweep_interval(settings.job_lease_seconds)
    return leases.LeaseSweeper(session_factory, settings.max_deliveries, interval, on_requeued)
