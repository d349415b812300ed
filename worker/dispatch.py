"""The embedded worker: outbox rows run as task runs in this process (no broker).

:class:`EmbeddedWorker` runs the task function on one thread of ``meddet serve``; a row is
marked published only once its run ended, so a crash re-runs it (and the job's lease counts
the crash: a job that kills the node is failed after ``max_deliveries``, not re-run forever).
The CLI hands it to ``serve`` (:func:`make_dispatcher`). The relay of distributed mode, the
polling loop both share, publishing and the lease sweeper are the node's, in
:mod:`dicom_node.outbox`.
"""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs, leases
from dicom_node.audit.db import transaction
from dicom_node.config import Settings
from dicom_node.logging import get_logger
from dicom_node.metrics import Metrics
from dicom_node.outbox import Dispatcher, OutboxLoop, make_relay
from worker.context import RetryPolicy, WorkerContext
from worker.errors import RetriableError

log = get_logger(__name__)


class EmbeddedWorker(OutboxLoop):
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
    return make_relay(settings, session_factory, metrics, poll_interval=poll_interval)
