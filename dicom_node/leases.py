"""Job leases: which delivery runs a job, until when; and the sweeper that takes back the
jobs of deliveries that were lost.

A delivery claims a job by writing its token and an expiry with a compare-and-set on the job
row (one UPDATE whose WHERE repeats what it read), so two deliveries of one job never both run
it, on SQLite as on PostgreSQL. The worker renews the lease while the job runs. A lease that
expires (the worker was SIGKILLed, ran out of memory, or hit Celery's hard time limit after
its message was acknowledged) is *lost*: the sweeper, or the next claim, counts it in
``lost_deliveries`` and requeues the job through the outbox; at ``max_deliveries`` the job is
failed with the reason instead, so a job that kills its worker is not redelivered forever.
No torch, no celery here.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import TRANSIENT_DB_ERRORS, short_error, transaction
from dicom_node.audit.models import Job, JobState, Outbox, utcnow
from dicom_node.logging import get_logger

log = get_logger(__name__)

#: States in which a delivery holds the job (a queued or finished job has no lease).
IN_FLIGHT = (JobState.running, JobState.results_written, JobState.sent)


class Lease(str, Enum):
    """What a claim finds: nobody's, its own, lost (expired, or its process is gone), held."""

    free = "free"
    ours = "ours"
    lost = "lost"
    held = "held"


@dataclass(frozen=True)
class Snapshot:
    """The job row as a claim read it: the compare half of the compare-and-set."""

    job_id: int
    state: JobState
    run: int
    token: str | None
    expires_at: datetime | None


def new_token() -> str:
    """``host:pid:random``: unique per delivery, and says which process holds the lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_gone(token: str) -> bool:
    """True when ``token`` names a process on this host that no longer exists (killed)."""
    parts = token.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def read(session: Session, job_id: int) -> Snapshot | None:
    job = session.get(Job, job_id)
    if job is None:
        return None
    return Snapshot(job.id, JobState(job.state), job.run, job.lease_token, job.lease_expires_at)


def status(snapshot: Snapshot, token: str, now: datetime) -> Lease:
    if snapshot.token is None:
        return Lease.free
    if snapshot.token == token:
        return Lease.ours
    expired = snapshot.expires_at is None or snapshot.expires_at <= now
    return Lease.lost if expired or holder_is_gone(snapshot.token) else Lease.held


def take(session: Session, snapshot: Snapshot, token: str | None, until: datetime | None) -> bool:
    """Compare-and-set: give the lease to ``token`` (None: nobody) if the row is still as
    ``snapshot`` saw it. Run it first in its transaction; False means another delivery won."""
    held: ColumnElement[bool]
    if snapshot.token is None:
        held = Job.lease_token.is_(None)
    else:
        held = Job.lease_token == snapshot.token
    result = session.execute(
        update(Job)
        .where(Job.id == snapshot.job_id, Job.run == snapshot.run, Job.state == snapshot.state)
        .where(held)
        .values(lease_token=token, lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


def extend(session: Session, job_id: int, token: str, until: datetime) -> bool:
    """Push the expiry of ``token``'s lease to ``until``; False when it no longer holds it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_token == token)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


def release(sessions: sessionmaker[Session], job_id: int, token: str) -> None:
    """Give up ``token``'s lease (a graceful stop while the job waits for a retry)."""
    with transaction(sessions) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_token == token)
            .values(lease_token=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def count_lost(session: Session, job: Job, max_deliveries: int, by: str) -> bool:
    """Count a lost delivery of ``job``; at ``max_deliveries`` fail it (True), else record it."""
    job.lost_deliveries += 1
    if job.lost_deliveries >= max_deliveries:
        jobs.transition(
            session,
            job,
            JobState.failed,
            f"worker lost on {job.lost_deliveries} deliveries (killed, out of memory or past "
            "its time limit); not delivered again",
        )
        log.error("job_failed_lost_deliveries", job_id=job.id, lost=job.lost_deliveries)
        return True
    detail = {"lost_deliveries": job.lost_deliveries, "by": by}
    jobs.record_event(session, job, "lease_expired", detail)
    log.warning("job_lease_lost", job_id=job.id, lost=job.lost_deliveries, by=by)
    return False


# ---- the sweeper ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepReport:
    requeued: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()


def sweep(sessions: sessionmaker[Session], max_deliveries: int, now: datetime | None = None) -> SweepReport:
    """Take back every expired lease: requeue the job (a new outbox row) or fail it."""
    now = now or utcnow()
    with sessions() as session:
        expired = list(
            session.scalars(
                select(Job.id).where(
                    Job.lease_token.is_not(None),
                    Job.lease_expires_at <= now,
                    Job.state.in_(IN_FLIGHT),
                )
            )
        )
    requeued, failed = [], []
    for job_id in expired:
        outcome = _sweep_one(sessions, job_id, max_deliveries, now)
        if outcome == "requeued":
            requeued.append(job_id)
        elif outcome == "failed":
            failed.append(job_id)
    return SweepReport(tuple(requeued), tuple(failed))


def republish_unclaimed(
    sessions: sessionmaker[Session], older_than: float, now: datetime | None = None
) -> tuple[int, ...]:
    """Publish again every job that is still ``queued``, unclaimed, ``older_than`` seconds after
    its message went out: the broker lost it (Redis restarted without persistence drops its
    queue), and nothing else would ever look at it (no lease to expire, an outbox row marked
    published). A second delivery is safe: a claim takes a lease. The job ids."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than)
    with transaction(sessions) as session:
        rows = session.scalars(
            select(Outbox)
            .join(Job, Job.id == Outbox.job_id)
            .where(
                Job.state == JobState.queued.value,
                Job.lease_token.is_(None),
                Outbox.published_at.is_not(None),
                Outbox.published_at <= cutoff,
            )
            .order_by(Outbox.id)
        ).all()
        latest = {row.job_id: row for row in rows}  # one message per job
        for row in latest.values():
            row.published_at = None
            job = session.get(Job, row.job_id)
            assert job is not None
            jobs.record_event(session, job, "republished", {"unclaimed_seconds": older_than})
    if latest:
        log.warning("queued jobs never claimed: published again", jobs=sorted(latest))
    return tuple(sorted(latest))


def _sweep_one(sessions: sessionmaker[Session], job_id: int, max_deliveries: int, now: datetime) -> str:
    """Requeue or fail one job whose lease expired; "renewed"/"gone" when it no longer is."""
    with sessions() as session:
        snapshot = read(session, job_id)
    if snapshot is None or snapshot.token is None or snapshot.expires_at is None:
        return "gone"
    if snapshot.expires_at > now or snapshot.state not in IN_FLIGHT:
        return "renewed"
    with transaction(sessions) as session:
        if not take(session, snapshot, None, None):
            return "renewed"  # the holder renewed it, or a claim took it over, meanwhile
        job = session.get(Job, job_id)
        assert job is not None
        if count_lost(session, job, max_deliveries, by="sweeper"):
            return "failed"
        jobs.add_outbox(session, job)
    return "requeued"


class LeaseSweeper:
    """Runs :func:`sweep` every ``interval`` seconds on a daemon thread (node and worker)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        max_deliveries: int,
        interval: float,
        on_requeued: Callable[[], None] = lambda: None,
        republish_after: float | None = None,
        guard: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._sessions = sessions
        self._guard = guard  # held around every pass (the worker makes its forks wait for it)
        self._republish_after = republish_after
        self._max = max_deliveries
        self._interval = interval
        self._on_requeued = on_requeued
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-sweeper", daemon=True)

    def start(self) -> LeaseSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._guard or nullcontext():
                    report = sweep(self._sessions, self._max)
                    again = (
                        republish_unclaimed(self._sessions, self._republish_after)
                        if self._republish_after is not None
                        else ()
                    )
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("lease_sweep_failed", error=short_error(exc))
                continue
            except Exception:  # keep sweeping; the next pass retries
                log.exception("lease_sweep_failed")
                continue
            if report.requeued or again:
                self._on_requeued()


def sweep_interval(lease_seconds: float) -> float:
    """How often to sweep: half a lease, at most 30 s."""
    return max(0.05, min(30.0, lease_seconds / 2))


def lease_until(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
