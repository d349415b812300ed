"""Jobs: one (series, model version), its state machine, its outbox rows and audit queries.

The node calls :func:`enqueue_series` inside the transaction that marks a series selected, so
the job and its outbox row commit together (transactional outbox); a relay or the embedded
worker turns outbox rows into task runs. Every state change goes through :func:`transition`,
which validates it and records a :class:`JobEvent` with a timestamp. No torch, no celery here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dicom_node.audit.models import Job, JobEvent, JobState, Outbox, Series, utcnow

TASK_NAME = "meddet.analyze_series"

S = JobState
# Allowed state changes. ``running -> running`` is a redelivery after a worker died mid-job;
# ``failed -> sent`` is a successful resend of results that were written but not delivered.
ALLOWED: Mapping[JobState, frozenset[JobState]] = {
    S.queued: frozenset({S.running, S.failed, S.quarantined}),
    S.running: frozenset({S.running, S.results_written, S.failed, S.quarantined, S.queued}),
    S.results_written: frozenset({S.running, S.sent, S.failed, S.queued}),
    S.sent: frozenset({S.done, S.failed, S.queued}),
    S.done: frozenset({S.queued, S.sent}),
    S.failed: frozenset({S.queued, S.sent}),
    S.quarantined: frozenset({S.queued}),
}
FINAL_STATES = frozenset({S.done, S.failed, S.quarantined})


class InvalidTransition(ValueError):
    """A state change that the job's state machine does not allow."""


def _detail_text(detail: str | Mapping[str, Any] | None) -> str | None:
    if detail is None or isinstance(detail, str):
        return detail
    return json.dumps(detail, sort_keys=True, default=str)


def record_event(session: Session, job: Job, name: str, detail: str | Mapping[str, Any] | None = None) -> JobEvent:
    """Append a non-state event (a pipeline step with its timing, a retry, a resend)."""
    event = JobEvent(job_id=job.id, state=name, at=utcnow(), detail=_detail_text(detail))
    session.add(event)
    return event


def transition(
    session: Session,
    job: Job,
    state: JobState,
    detail: str | Mapping[str, Any] | None = None,
) -> JobEvent:
    """Move ``job`` to ``state`` (validated against :data:`ALLOWED`) and record the event.

    For ``failed`` and ``quarantined`` the detail text becomes the job's ``reason``. A final
    state or ``queued`` ends the lease of whichever delivery held the job.
    """
    state = JobState(state)
    if state not in ALLOWED[JobState(job.state)]:
        raise InvalidTransition(f"job {job.id}: {JobState(job.state).value} -> {state.value}")
    now = utcnow()
    job.state = state
    job.updated_at = now
    text = _detail_text(detail)
    if state in (S.failed, S.quarantined):
        job.reason = text
    elif state is S.queued:
        job.reason = None
    if state in FINAL_STATES or state is S.queued:
        job.lease_token = None
        job.lease_expires_at = None
    event = JobEvent(job_id=job.id, state=state.value, at=now, detail=text)
    session.add(event)
    return event


def add_outbox(session: Session, job: Job, task_name: str = TASK_NAME) -> Outbox:
    """A new outbox row for ``job``: published later by the relay or the embedded worker."""
    row = Outbox(job_id=job.id, task_name=task_name, created_at=utcnow())
    session.add(row)
    return row


def job_of(session: Session, series_instance_uid: str, model_version: str) -> Job | None:
    """The job of a series for ``model_version`` (one at most: the job key), if any."""
    return session.scalars(
        select(Job).where(Job.series_instance_uid == series_instance_uid, Job.model_version == model_version)
    ).one_or_none()


def enqueue_series(session: Session, series: Series, model_version: str) -> Job:
    """Create (or re-arm) the job of ``series`` for ``model_version``, in the caller's transaction.

    Idempotent per (series UID, model version): a job still waiting to run is returned as is;
    a job that has started or finished (late instances reopened the series) gets ``run``
    bumped, goes back to ``queued`` with an event and a new outbox row.
    """
    job = job_of(session, series.series_instance_uid, model_version)
    if job is None:
        job = Job(
            series_id=series.id,
            series_instance_uid=series.series_instance_uid,
            model_version=model_version,
            state=S.queued,
            run=1,
            retries=0,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, state=S.queued.value, at=job.created_at, detail="run 1"))
        add_outbox(session, job)
        return job
    if JobState(job.state) is S.queued:
        return job
    requeue(session, job, f"series reopened; run {job.run + 1}")
    return job


def requeue(session: Session, job: Job, reason: str) -> Outbox:
    """Start a new run of ``job``: bump ``run``, reset retries and lost deliveries, state
    queued, new outbox row."""
    transition(session, job, S.queued, reason)
    job.run += 1
    job.retries = 0
    job.lost_deliveries = 0
    session.flush()
    return add_outbox(session, job)


# ---- outbox ------------------------------------------------------------------------------


def pending_outbox(session: Session, limit: int = 100) -> list[Outbox]:
    """Unpublished outbox rows, oldest first."""
    return list(session.scalars(select(Outbox).where(Outbox.published_at.is_(None)).order_by(Outbox.id).limit(limit)))


def next_unpublished(session: Session) -> Outbox | None:
    """The oldest unpublished row, locked for this transaction; rows other relays hold are
    skipped (PostgreSQL ``FOR UPDATE SKIP LOCKED``), so two relays never publish the same row."""
    return session.scalars(
        select(Outbox)
        .where(Outbox.published_at.is_(None))
        .order_by(Outbox.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()


def reserve_next(session: Session, job_id: int | None = None) -> tuple[int, int, str] | None:
    """Mark the oldest unpublished row (of ``job_id`` if given) published, in one UPDATE, and
    return (row id, job id, task name); None when there is none.

    Two relays (or ``meddet retry`` beside a node) never both take a row, on SQLite too: the
    row is marked before it is published, in the caller's transaction, which the caller
    commits after publishing or rolls back when the broker refuses.
    """
    oldest = select(Outbox.id).where(Outbox.published_at.is_(None))
    if job_id is not None:
        oldest = oldest.where(Outbox.job_id == job_id)
    pick = oldest.order_by(Outbox.id).limit(1).with_for_update(skip_locked=True).scalar_subquery()
    marked = session.execute(
        update(Outbox)
        .where(Outbox.id == pick, Outbox.published_at.is_(None))
        .values(published_at=utcnow(), attempts=Outbox.attempts + 1, last_error=None)
        .returning(Outbox.id, Outbox.job_id, Outbox.task_name)
        .execution_options(synchronize_session=False)
    ).first()
    return None if marked is None else (marked[0], marked[1], marked[2])


def mark_published(session: Session, row_id: int) -> None:
    row = session.get(Outbox, row_id)
    if row is not None and row.published_at is None:
        row.published_at = utcnow()
        row.attempts += 1
        row.last_error = None


def mark_publish_failed(session: Session, row_id: int, error: str) -> None:
    row = session.get(Outbox, row_id)
    if row is not None:
        row.attempts += 1
        row.last_error = error[:2000]


def latest_run_wrote_results(session: Session, job_id: int) -> bool:
    """Whether the job's current run reached ``results_written`` (each run starts ``queued``)."""

    def last(state: JobState) -> int:
        return (
            session.scalar(
                select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id, JobEvent.state == state.value)
            )
            or 0
        )

    return last(S.results_written) > last(S.queued)


# ---- audit queries (``meddet audit jobs``) -------------------------------------------------


@dataclass(frozen=True)
class JobSummary:
    id: int
    series_instance_uid: str
    model_version: str
    state: str
    run: int
    retries: int
    reason: str | None
    created_at: datetime
    updated_at: datetime
    results_path: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        series_instance_uid=job.series_instance_uid,
        model_version=job.model_version,
        state=JobState(job.state).value,
        run=job.run,
        retries=job.retries,
        reason=job.reason,
        created_at=job.created_at,
        updated_at=job.updated_at,
        results_path=job.results_path,
    )


def list_jobs(
    session: Session,
    *,
    status: JobState | str | Sequence[JobState | str] | None = None,
    since: datetime | None = None,
    limit: int | None = 200,
    series_uid: str | None = None,
    job_id: int | None = None,
) -> list[JobSummary]:
    """Jobs, newest first, optionally filtered by state(s), last update time, series or id."""
    query = select(Job).order_by(Job.updated_at.desc(), Job.id.desc())
    if series_uid is not None:
        query = query.where(Job.series_instance_uid == series_uid)
    if job_id is not None:
        query = query.where(Job.id == job_id)
    if status is not None:
        states = [status] if isinstance(status, (str, JobState)) else list(status)
        query = query.where(Job.state.in_([JobState(s) for s in states]))
    if since is not None:
        query = query.where(Job.updated_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [_summary(job) for job in session.scalars(query)]


def job_history(session: Session, job_id: int) -> list[dict[str, Any]]:
    """Every event of a job in order: state or step, time (ISO 8601), detail."""
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    return [{"state": e.state, "at": e.at.isoformat(), "detail": e.detail} for e in events]


def count_by_state(session: Session) -> dict[str, int]:
    """Number of jobs in each state (every state present, zero when none)."""
    counts = {s.value: 0 for s in JobState}
    for state, n in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        counts[JobState(state).value] = n
    return counts
