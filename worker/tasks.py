"""The task ``meddet.analyze_series(job_id)``: thin, idempotent, shared by both modes.

:func:`run_job` is one delivery: it returns at once when the job is already finished, marks it
running, calls the pipeline and records the outcome. A run that stopped after its results were
written (worker killed, PACS down) resumes by sending the stored objects. RetriableError goes
back to the caller, which retries with :func:`schedule_retry`'s countdown (Celery's
``self.retry`` in distributed mode, the embedded worker's timer otherwise).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Job, JobEvent, JobState
from dicom_node.logging import get_logger
from worker import pipeline
from worker.context import WorkerContext
from worker.errors import BadInputError, PermanentError, RetriableError, StaleRunError

log = get_logger(__name__)

TASK_NAME = jobs.TASK_NAME


@dataclass(frozen=True)
class Claim:
    run: int
    resume: bool  # results already on disk: only send them


def _queued_at(session, job_id: int) -> datetime | None:  # type: ignore[no-untyped-def]
    return session.scalars(
        select(JobEvent.at)
        .where(JobEvent.job_id == job_id, JobEvent.state == JobState.queued.value)
        .order_by(JobEvent.id.desc())
        .limit(1)
    ).first()


def _seconds_since(at: datetime) -> float:
    return (datetime.now(timezone.utc) - at).total_seconds()


def claim_job(ctx: WorkerContext, job_id: int) -> Claim | str:
    """Take the job for this delivery, or say why there is nothing to do.

    A busy or unreachable database is a RetriableError (the delivery is retried).
    """
    try:
        return _claim(ctx, job_id)
    except OperationalError as exc:
        raise RetriableError(f"audit database: {exc.orig}") from exc


def _claim(ctx: WorkerContext, job_id: int) -> Claim | str:
    with transaction(ctx.sessions) as session:
        job = session.get(Job, job_id, with_for_update=True)  # one claimant at a time
        if job is None:
            log.warning("job_missing", job_id=job_id)
            return "missing"
        state = JobState(job.state)
        if state in jobs.FINAL_STATES:
            return f"already {state.value}"
        if state is JobState.sent:
            jobs.transition(session, job, JobState.done, "sent before the worker stopped")
            return "done"
        if state is JobState.results_written:
            if pipeline.read_results(pipeline.results_dir(ctx, job_id)) is not None:
                return Claim(run=job.run, resume=True)
        if state is JobState.queued:
            queued_at = _queued_at(session, job_id)
            if queued_at is not None:
                ctx.metrics.queue_wait_seconds.observe(max(0.0, _seconds_since(queued_at)))
        detail = {"host": socket.gethostname(), "pid": os.getpid(), "run": job.run}
        if state is not JobState.queued:
            detail["redelivered_from"] = state.value
        jobs.transition(session, job, JobState.running, detail)
        return Claim(run=job.run, resume=False)


def finish(
    ctx: WorkerContext, job_id: int, state: JobState, reason: str, run: int | None = None
) -> None:
    """Mark the job failed or quarantined with ``reason`` (the dead letter); a ``run`` that a
    newer run superseded leaves the job alone."""
    with transaction(ctx.sessions) as session:
        job = session.get(Job, job_id)
        if job is None or JobState(job.state) in jobs.FINAL_STATES:
            return
        if run is not None and job.run != run:
            return
        jobs.transition(session, job, state, reason)
    ctx.metrics.jobs_finished.labels(outcome=state.value).inc()
    log.warning("job_finished", job_id=job_id, state=state.value, reason=reason)


def run_job(ctx: WorkerContext, job_id: int) -> str:
    """One delivery of the task; returns the outcome, raises RetriableError to be retried."""
    claim = claim_job(ctx, job_id)
    if isinstance(claim, str):
        return claim
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
        finish(ctx, job_id, JobState.quarantined, exc.reason, claim.run)
        return "quarantined"
    except PermanentError as exc:
        finish(ctx, job_id, JobState.failed, exc.reason, claim.run)
        return "failed"
    except RetriableError:
        raise
    except Exception as exc:  # a bug or a time limit: fail the job visibly, then re-raise
        finish(ctx, job_id, JobState.failed, f"unexpected {type(exc).__name__}: {exc}", claim.run)
        raise
    ctx.metrics.job_run_seconds.observe(seconds)
    ctx.metrics.jobs_finished.labels(outcome="done").inc()
    log.info("job_done", job_id=job_id, run=claim.run, seconds=seconds)
    return "done"


def schedule_retry(
    ctx: WorkerContext, job_id: int, error: RetriableError, attempt: int
) -> float | None:
    """Record a retry and return its countdown, or give up (job failed) and return None."""
    if attempt >= ctx.retry.max_retries:
        finish(ctx, job_id, JobState.failed, f"gave up after {attempt} retries: {error.reason}")
        return None
    countdown = ctx.retry.countdown(attempt)
    try:
        with transaction(ctx.sessions) as session:
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


def register_tasks(app, context: Callable[[], WorkerContext]):  # type: ignore[no-untyped-def]
    """Register ``meddet.analyze_series`` on a Celery ``app``; ``context()`` is per process."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def analyze_series(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
        ctx = context()
        try:
            return run_job(ctx, job_id)
        except RetriableError as exc:
            countdown = schedule_retry(ctx, job_id, exc, self.request.retries)
            if countdown is None:
                return "failed"
            raise self.retry(exc=exc, countdown=countdown, max_retries=None)

    return analyze_series


def resend_job(ctx: WorkerContext, job_id: int) -> str:
    """Send a job's stored result objects again (same UIDs); the job ends ``done``.

    Raises PermanentError when there is nothing to send and RetriableError when a destination
    still cannot take them (the job keeps its state).
    """
    with transaction(ctx.sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise PermanentError(f"job {job_id} does not exist")
        state = JobState(job.state)
        if state not in (JobState.done, JobState.failed, JobState.results_written):
            raise PermanentError(f"job {job_id} is {state.value}: resend needs a finished job")
        run = job.run
        jobs.record_event(session, job, "resend", {"from_state": state.value})
    objects = pipeline.read_results(pipeline.results_dir(ctx, job_id))
    if not objects:
        raise PermanentError(f"job {job_id} has no stored results to send")
    pipeline.deliver(ctx, job_id, run, objects)
    pipeline.advance(ctx, job_id, run, JobState.done, "resent")
    return "done"
