"""The task ``meddet.analyze_series(job_id)``: thin, idempotent, shared by both modes.

:func:`run_job` is one delivery: it returns at once when the job is already finished or another
delivery holds its lease (:mod:`dicom_node.leases`); else it takes the lease, marks the job
running, calls the pipeline while a heartbeat renews the lease, and records the outcome. A run
that stopped after its results were written (worker killed, PACS down) resumes by sending the
stored objects. RetriableError goes back to the caller, which retries with
:func:`schedule_retry`'s countdown (Celery's ``self.retry`` in distributed mode, the embedded
worker's timer otherwise) under the same lease.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs, leases
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Job, JobEvent, JobState, utcnow
from dicom_node.config import Settings
from dicom_node.logging import get_logger
from worker import pipeline
from worker.context import WorkerContext
from worker.errors import BadInputError, PermanentError, RetriableError, StaleRunError
from worker.lease import holding

if TYPE_CHECKING:
    from celery import Celery, Task

log = get_logger(__name__)

TASK_NAME = jobs.TASK_NAME


@dataclass(frozen=True)
class Claim:
    run: int
    resume: bool  # results already on disk: only send them
    token: str = ""  # the lease this delivery holds


def _queued_at(session: Session, job_id: int) -> datetime | None:
    return session.scalars(
        select(JobEvent.at)
        .where(JobEvent.job_id == job_id, JobEvent.state == JobState.queued.value)
        .order_by(JobEvent.id.desc())
        .limit(1)
    ).first()


def _seconds_since(at: datetime) -> float:
    return (datetime.now(UTC) - at).total_seconds()


def claim_job(ctx: WorkerContext, job_id: int, token: str | None = None) -> Claim | str:
    """Take the job's lease for this delivery (``token``, new if None), or say why there is
    nothing to do: already finished, or running elsewhere (another delivery holds the lease).

    A busy or unreachable database is a RetriableError (the delivery is retried).
    """
    try:
        return _claim(ctx, job_id, token or leases.new_token())
    except OperationalError as exc:
        raise RetriableError(f"audit database: {exc.orig}") from exc


def _claim(ctx: WorkerContext, job_id: int, token: str) -> Claim | str:
    now = utcnow()
    with ctx.sessions() as session:
        snapshot = leases.read(session, job_id)
    if snapshot is None:
        log.warning("job_missing", job_id=job_id)
        return "missing"
    if snapshot.state in jobs.FINAL_STATES:
        return f"already {snapshot.state.value}"
    lease = leases.status(snapshot, token, now)
    if lease is leases.Lease.held:
        log.info("job_running_elsewhere", job_id=job_id)
        return "running elsewhere"
    with transaction(ctx.sessions) as session:
        until = leases.lease_until(now, ctx.settings.job_lease_seconds)
        if not leases.take(session, snapshot, token, until):  # compare-and-set, first statement
            log.info("job_running_elsewhere", job_id=job_id)
            return "running elsewhere"
        job = session.get(Job, job_id)
        assert job is not None
        if lease is leases.Lease.lost and leases.count_lost(session, job, ctx.settings.max_deliveries, by="claim"):
            return "failed"
        return _start(ctx, session, job, token)


def _start(ctx: WorkerContext, session: Session, job: Job, token: str) -> Claim | str:
    """The claimed job's next step: complete it, resume sending, or run it."""
    state = JobState(job.state)
    if state is JobState.sent:
        jobs.transition(session, job, JobState.done, "sent before the worker stopped")
        return "done"
    if state is JobState.results_written:
        if pipeline.read_results(pipeline.results_dir(ctx, job.id)) is not None:
            return Claim(run=job.run, resume=True, token=token)
    if state is JobState.queued:
        queued_at = _queued_at(session, job.id)
        if queued_at is not None:
            ctx.metrics.queue_wait_seconds.observe(max(0.0, _seconds_since(queued_at)))
    detail = {"host": socket.gethostname(), "pid": os.getpid(), "run": job.run}
    if state is not JobState.queued:
        detail["redelivered_from"] = state.value
    jobs.transition(session, job, JobState.running, detail)
    return Claim(run=job.run, resume=False, token=token)


def finish(
    ctx: WorkerContext,
    job_id: int,
    state: JobState,
    reason: str,
    run: int | None = None,
    lease: str | None = None,
) -> None:
    """Mark the job failed or quarantined with ``reason`` (the dead letter); a ``run`` that a
    newer run superseded, or a ``lease`` another delivery took over, leaves the job alone."""
    with transaction(ctx.sessions) as session:
        job = session.get(Job, job_id)
        if job is None or JobState(job.state) in jobs.FINAL_STATES:
            return
        if run is not None and job.run != run:
            return
        if lease is not None and job.lease_token not in (lease, None):
            return
        jobs.transition(session, job, state, reason)
    ctx.metrics.jobs_finished.labels(outcome=state.value).inc()
    log.warning("job_finished", job_id=job_id, state=state.value, reason=reason)


def run_job(ctx: WorkerContext, job_id: int, lease: str | None = None) -> str:
    """One delivery of the task; returns the outcome, raises RetriableError to be retried.

    ``lease`` is this delivery's token: a retry passes the token of the delivery it retries,
    whose lease :func:`schedule_retry` kept over the countdown.
    """
    claim = claim_job(ctx, job_id, lease)
    if isinstance(claim, str):
        return claim
    with holding(ctx.sessions, job_id, claim.token, ctx.settings.job_lease_seconds):
        return _run_claimed(ctx, job_id, claim)


def _run_claimed(ctx: WorkerContext, job_id: int, claim: Claim) -> str:
    start = time.perf_counter()
    try:
        if claim.resume:
            objects = pipeline.read_results(pipeline.results_dir(ctx, job_id)) or []
        else:
            objects = pipeline.analyze(ctx, job_id, claim.run)
        pipeline.deliver(ctx, job_id, claim.run, objects)
        seconds = round(time.perf_counter() - start, 4)
        pipeline.advance(ctx, job_id, claim.run, JobState.done, {"seconds": seconds})
    except StaleRunError as exc:
        log.info("job_superseded", job_id=job_id, detail=str(exc))
        return "superseded"
    except BadInputError as exc:
        finish(ctx, job_id, JobState.quarantined, exc.reason, claim.run, claim.token)
        return "quarantined"
    except PermanentError as exc:
        finish(ctx, job_id, JobState.failed, exc.reason, claim.run, claim.token)
        return "failed"
    except RetriableError:
        raise
    except Exception as exc:  # a bug or a time limit: fail the job visibly, then re-raise
        reason = f"unexpected {type(exc).__name__}: {exc}"
        finish(ctx, job_id, JobState.failed, reason, claim.run, claim.token)
        raise
    ctx.metrics.job_run_seconds.observe(seconds)
    ctx.metrics.jobs_finished.labels(outcome="done").inc()
    log.info("job_done", job_id=job_id, run=claim.run, seconds=seconds)
    return "done"


def schedule_retry(
    ctx: WorkerContext, job_id: int, error: RetriableError, attempt: int, lease: str | None = None
) -> float | None:
    """Record a retry and return its countdown, or give up (job failed) and return None.

    ``lease`` (the retried delivery's token) is kept over the countdown, so no other delivery
    takes the job meanwhile and the sweeper leaves it alone until the retry is overdue.
    """
    if attempt >= ctx.retry.max_retries:
        reason = f"gave up after {attempt} retries: {error.reason}"
        finish(ctx, job_id, JobState.failed, reason, lease=lease)
        return None
    countdown = ctx.retry.countdown(attempt)
    try:
        with transaction(ctx.sessions) as session:
            if lease is not None:
                until = leases.lease_until(utcnow(), countdown + ctx.settings.job_lease_seconds)
                leases.extend(session, job_id, lease, until)
            job = session.get(Job, job_id)
            if job is None:
                return None
            job.retries += 1
            jobs.record_event(
                session,
                job,
                "retry",
                {"attempt": attempt + 1, "in_seconds": countdown, "reason": error.reason},
            )
    except OperationalError as exc:  # the retry still happens; only its audit row is missing
        log.warning("retry_not_recorded", job_id=job_id, error=str(exc.orig))
    log.info("job_retry", job_id=job_id, attempt=attempt + 1, countdown=countdown)
    return countdown


def register_tasks(app: Celery, context: Callable[[], WorkerContext]) -> Task:
    """Register ``meddet.analyze_series`` on a Celery ``app``; ``context()`` is per process."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]  # celery is untyped
    def analyze_series(self: Task, job_id: int, lease: str | None = None) -> str:
        ctx = context()
        token = lease or leases.new_token()
        try:
            return run_job(ctx, job_id, token)
        except RetriableError as exc:
            countdown = schedule_retry(ctx, job_id, exc, self.request.retries, token)
            if countdown is None:
                return "failed"
            raise self.retry(exc=exc, countdown=countdown, max_retries=None, kwargs={"lease": token}) from exc

    return analyze_series


class ResendRefused(PermanentError):
    """Nothing was sent: the job is not finished, is running, or its latest run wrote no
    results (the files on disk, if any, are an earlier run's)."""


def resend_job(ctx: WorkerContext, job_id: int) -> str:
    """Send a job's stored result objects again (same UIDs); the job ends ``done``.

    Only the latest run's results are sent: ResendRefused when that run wrote none (or the
    job is not finished, or a delivery holds it). RetriableError when a destination still
    cannot take them (the job keeps its state).
    """
    token = leases.new_token()
    run = _take_for_resend(ctx, job_id, token)
    try:
        objects = pipeline.read_results(pipeline.results_dir(ctx, job_id))
        if not objects:
            raise ResendRefused(f"job {job_id} has no stored results to send")
        with holding(ctx.sessions, job_id, token, ctx.settings.job_lease_seconds):
            pipeline.deliver(ctx, job_id, run, objects)
            pipeline.advance(ctx, job_id, run, JobState.done, "resent")
    finally:
        leases.release(ctx.sessions, job_id, token)  # a no-op once the job is done
    return "done"


def _take_for_resend(ctx: WorkerContext, job_id: int, token: str) -> int:
    """Check the job can be resent and take its lease; the run whose results are sent."""
    now = utcnow()
    with ctx.sessions() as session:
        snapshot = leases.read(session, job_id)
        if snapshot is None:
            raise ResendRefused(f"job {job_id} does not exist")
        state = snapshot.state
        if state not in (JobState.done, JobState.failed, JobState.results_written):
            raise ResendRefused(f"job {job_id} is {state.value}: resend needs a finished job")
        if not jobs.latest_run_wrote_results(session, job_id):
            older = pipeline.read_results(pipeline.results_dir(ctx, job_id)) is not None
            raise ResendRefused(
                f"job {job_id} run {snapshot.run} wrote no results (it ended {state.value})"
                + ("; the results on disk are an earlier run's" if older else "")
                + f". Run it again: meddet retry {job_id}"
            )
    if leases.status(snapshot, token, now) is leases.Lease.held:
        raise ResendRefused(f"job {job_id} is being run by a worker; try again when it ends")
    with transaction(ctx.sessions) as session:
        until = leases.lease_until(now, ctx.settings.job_lease_seconds)
        if not leases.take(session, snapshot, token, until):
            raise ResendRefused(f"job {job_id} changed meanwhile; try again")
        job = session.get(Job, job_id)
        assert job is not None
        jobs.record_event(session, job, "resend", {"from_state": state.value})
    return snapshot.run


class RetryRefused(PermanentError):
    """Nothing was queued: the job does not exist, or is neither failed nor quarantined."""


def retry_job(
    settings: Settings, sessions: sessionmaker[Session], job_id: int, reason: str = "retry requested by operator"
) -> dict[str, Any]:
    """Queue a failed (or quarantined) job again: a new run, state ``queued``, an outbox row.

    ``meddet retry`` and the web console both call this. In distributed mode the job's outbox
    rows are published now (a node's relay would too, later); ``published`` is False when the
    broker was down. Returns ``{"job", "state", "run", "published"}``; RetryRefused otherwise.
    """
    with transaction(sessions) as session:
        row = session.get(Job, job_id)
        if row is None:
            raise RetryRefused(f"job {job_id} does not exist")
        if JobState(row.state) not in (JobState.failed, JobState.quarantined):
            raise RetryRefused(f"job {job_id} is {JobState(row.state).value}; only failed or quarantined jobs retry")
        jobs.requeue(session, row, reason)
        run = row.run
    published = publish_job(settings, sessions, job_id)
    return {"job": job_id, "state": "queued", "run": run, "published": published}


def publish_job(settings: Settings, sessions: sessionmaker[Session], job_id: int) -> bool:
    """Distributed mode: publish ``job_id``'s pending outbox rows to the broker now (only its
    own). False when embedded (the in-process dispatcher takes them) or the broker is down (the
    node's relay publishes them later)."""
    if settings.embedded:
        return False
    from dicom_node.outbox import PublishFailed, celery_publisher, publish_next

    publish = celery_publisher(settings)
    try:
        while publish_next(sessions, publish, job_id) is not None:
            pass
    except PublishFailed as exc:
        log.warning("job_not_published", job_id=job_id, error=str(exc))
        return False
    return True
