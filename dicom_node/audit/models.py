"""SQLAlchemy 2.0 models of the audit database. Schema changes go through ``migrations/``."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

UID = String(64)
AE = String(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


def clip(column: Any, value: str | None) -> str | None:
    """``value`` cut to the length of ``column`` (a mapped String attribute): PostgreSQL refuses
    longer text, SQLite keeps it, so header values are cut before they reach the DB."""
    length = getattr(column.type, "length", None)
    return value[:length] if value and length else value


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always reads back timezone-aware, in UTC.

    Everything we store is UTC; SQLite returns it naive and PostgreSQL in the session's zone,
    so callers never have to guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SeriesState(str, enum.Enum):
    receiving = "receiving"
    complete = "complete"
    selected = "selected"
    skipped = "skipped"


class JobState(str, enum.Enum):
    """DESIGN.md section 1: received -> ... -> done, or failed / quarantined."""

    queued = "queued"
    running = "running"
    results_written = "results_written"
    sent = "sent"
    done = "done"
    failed = "failed"
    quarantined = "quarantined"


class Association(Base):
    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    calling_ae: Mapped[str] = mapped_column(AE)
    called_ae: Mapped[str] = mapped_column(AE)
    address: Mapped[str] = mapped_column(String(64))
    port: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    n_stored: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(16), default="open")  # open/released/aborted/rejected
    reason: Mapped[str | None] = mapped_column(Text)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True, index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[SeriesState] = mapped_column(
        Enum(SeriesState, native_enum=False, length=16), default=SeriesState.receiving
    )
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    expected_instances: Mapped[int | None] = mapped_column(Integer)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completion_reason: Mapped[str | None] = mapped_column(String(32))  # quiet_period/expected_count
    failed_rule: Mapped[str | None] = mapped_column(String(64))
    selection_detail: Mapped[str | None] = mapped_column(Text)
    spool_path: Mapped[str] = mapped_column(Text)

    instances: Mapped[list[Instance]] = relationship(back_populates="series")
    jobs: Mapped[list[Job]] = relationship(back_populates="series")


class Instance(Base):
    """One spooled file. Revisions are numbered per series folder (``spool.py``), so the same
    SOP Instance UID may arrive in two series: the key includes the series (migration 0002)."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("series_id", "sop_instance_uid", "revision", name="uq_instances_series_sop_revision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    association_id: Mapped[int | None] = mapped_column(ForeignKey("associations.id"))
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    spool_path: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class QuarantineRecord(Base):
    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    association_id: Mapped[int | None] = mapped_column(ForeignKey("associations.id"))
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One (series, model version). Re-runs (late instances, resend) bump ``run``.

    A delivery that runs the job holds its lease (``lease_token`` until ``lease_expires_at``,
    renewed while it runs); ``lost_deliveries`` counts leases that expired in this run
    (migration 0003).
    """

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("series_instance_uid", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    model_version: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, native_enum=False, length=16), default=JobState.queued, index=True
    )
    reason: Mapped[str | None] = mapped_column(Text)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    run: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    results_path: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lost_deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    series: Mapped[Series] = relationship(back_populates="jobs")
    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")


class JobEvent(Base):
    """The state history of a job, with timings of pipeline steps in ``detail``."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    state: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class Outbox(Base):
    """Transactional outbox: written with the job, published to the broker by a relay."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    task_name: Mapped[str] = mapped_column(String(64), default="meddet.analyze_series")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class SendAttempt(Base):
    """One C-STORE of one result object to one destination."""

    __tablename__ = "send_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(128))
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    kind: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # success/warning/failure/unreachable
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CleanupRecord(Base):
    """What retention removed from disk, and why."""

    __tablename__ = "cleanup"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # spool/quarantine/results
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
