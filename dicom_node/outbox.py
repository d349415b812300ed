"""The node's side of the job hand-off, task-free: outbox rows go to the broker by task name.

:class:`OutboxRelay` (distributed mode, ``MEDDET_BROKER_URL`` set) publishes unpublished outbox
rows to Celery by task name and marks them published; a broker that is down leaves the rows
where they are, and the relay backs off and tries again. :class:`OutboxLoop` is the polling
thread it shares with the embedded worker (``worker.dispatch.EmbeddedWorker``, which the CLI
hands to ``meddet serve`` in embedded mode). :func:`make_sweeper` builds the lease sweeper of
``meddet serve`` and ``meddet worker``.

Nothing here imports task code, torch or ``worker``: the node publishes names, the worker
registers the tasks. :func:`broker_config` is the broker configuration both sides share.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs, leases
from dicom_node.audit.db import transaction
from dicom_node.config import Settings
from dicom_node.logging import get_logger
from dicom_node.metrics import Metrics

log = get_logger(__name__)

QUEUE = "gpu"
Publish = Callable[[str, int], None]  # (task name, job id)


class Dispatcher(Protocol):
    def start(self) -> None: ...
    def notify(self) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...


class OutboxLoop:
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


class OutboxRelay(OutboxLoop):
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
                # the exponent is capped: 2 ** 1024 no longer fits a float (a broker down for hours)
                delay = min(self.max_backoff, self.poll_interval * 2.0 ** min(self._failures, 32))
                log.warning("broker_unavailable", job_id=exc.job_id, retry_in=delay, error=str(exc))
                return delay
            self._failures = 0
        return self.poll_interval


class PublishFailed(Exception):
    """The broker refused or could not be reached; the row stays unpublished."""

    def __init__(self, job_id: int, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.job_id = job_id


def publish_next(sessions: sessionmaker[Session], publish: Publish, job_id: int | None = None) -> int | None:
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


def broker_config(broker_url: str, visibility_timeout: float = 3600.0) -> dict[str, Any]:
    """The Celery settings the relay and the workers share: broker, queue and routes,
    serialisation, and fast failure of a publish while the broker is down."""
    # A lost worker's unacked message is restored on a sweep after ``visibility_timeout``;
    # kombu sweeps every interval x throttle seconds (100 by default): make it the interval.
    transport = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, min(10, int(visibility_timeout / 3))),
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        "task_routes": {jobs.TASK_NAME: {"queue": QUEUE}},
        "task_serializer": "json",
        "accept_content": ["json"],
        # A relay that cannot reach Redis gives up fast and retries later (rows stay in the outbox).
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        "redis_socket_connect_timeout": 2,
        "broker_connection_timeout": 2,
    }


def celery_publisher(settings: Settings) -> Publish:
    """Publish by task name to ``settings.broker_url`` (a bare Celery app: no task code, no
    result backend: the node never waits for results)."""
    from celery import Celery

    if not settings.broker_url:
        raise ValueError("broker_url: distributed mode needs MEDDET_BROKER_URL (a Redis URL)")
    app = Celery("meddet-relay", set_as_current=False)
    app.conf.update(broker_config(settings.broker_url))

    def publish(task_name: str, job_id: int) -> None:
        app.send_task(task_name, args=[job_id], queue=QUEUE)

    return publish


def make_relay(
    settings: Settings, session_factory: sessionmaker[Session], metrics: Metrics, *, poll_interval: float = 1.0
) -> OutboxRelay:
    """The relay of distributed mode, publishing to ``settings.broker_url``; call start()."""
    return OutboxRelay(session_factory, metrics, celery_publisher(settings), poll_interval)


def make_sweeper(
    settings: Settings,
    session_factory: sessionmaker[Session],
    on_requeued: Callable[[], None],
    guard: AbstractContextManager[Any] | None = None,
) -> leases.LeaseSweeper:
    """The lease sweeper of ``meddet serve`` and ``meddet worker``; call start(). ``guard``
    is held around every pass."""
    interval = leases.sweep_interval(settings.job_lease_seconds)
    return leases.LeaseSweeper(
        session_factory,
        settings.max_deliveries,
        interval,
        on_requeued,
        republish_after=settings.job_republish_seconds,
        guard=guard,
    )
