"""Read-only admin queries behind ``meddet audit``: plain rows, ready for a table or JSON."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from dicom_node import jobs
from dicom_node.audit.models import Association, Instance, Job, QuarantineRecord, SendAttempt, Series

_DURATION = re.compile(r"^(?P<n>\d+(\.\d+)?)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO date/time (UTC if no offset)."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    if match := _DURATION.match(text.strip()):
        return now - timedelta(**{_UNITS[match["unit"]]: float(match["n"])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"--since {text!r}: use e.g. 30m, 2h, 7d or 2026-11-01T08:00") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def series_rows(
    session: Session,
    since: datetime | None = None,
    status: str | None = None,
    limit: int = 100,
    *,
    until: datetime | None = None,
    modality: str | None = None,
    calling_ae: str | None = None,
    uid: str | None = None,
) -> list[dict[str, Any]]:
    """Series, newest first. The keyword filters are the web console's: received before
    ``until``, ``modality``, sent by ``calling_ae``, series or study UID starting with ``uid``."""
    query = select(Series).order_by(Series.last_received_at.desc()).limit(limit)
    if since:
        query = query.where(Series.last_received_at >= since)
    if until:
        query = query.where(Series.last_received_at < until)
    if status:
        query = query.where(Series.state == status)
    if modality:
        query = query.where(Series.modality == modality)
    if calling_ae:
        senders = (
            select(Instance.series_id)
            .join(Association, Instance.association_id == Association.id)
            .where(Association.calling_ae == calling_ae)
        )
        query = query.where(Series.id.in_(senders))
    if uid:
        query = query.where(
            or_(
                Series.series_instance_uid.startswith(uid, autoescape=True),
                Series.study_instance_uid.startswith(uid, autoescape=True),
            )
        )
    return [
        {
            "series_instance_uid": s.series_instance_uid,
            "study_instance_uid": s.study_instance_uid,
            "modality": s.modality,
            "state": s.state.value,
            "instances": s.n_instances,
            "expected": s.expected_instances,
            "last_received_at": _iso(s.last_received_at),
            "completed_at": _iso(s.completed_at),
            "completion": s.completion_reason,
            "failed_rule": s.failed_rule,
            "jobs": [f"{j.id}:{j.state.value}" for j in s.jobs],
        }
        for s in session.scalars(query)
    ]


def job_rows(
    session: Session,
    since: datetime | None = None,
    status: str | None = None,
    limit: int = 100,
    *,
    series_uid: str | None = None,
    job_id: int | None = None,
) -> list[dict[str, Any]]:
    rows = []
    found = jobs.list_jobs(session, status=status, since=since, limit=limit, series_uid=series_uid, job_id=job_id)
    for summary in found:
        row = summary.as_dict()
        rows.append({"job_id": row.pop("id"), **row})
    return rows


def job_history(session: Session, job_id: int) -> list[dict[str, Any]]:
    """The job's events (:func:`dicom_node.jobs.job_history`) merged with its send attempts."""
    sends = session.scalars(select(SendAttempt).where(SendAttempt.job_id == job_id).order_by(SendAttempt.id))
    rows = [{"at": e["at"], "what": e["state"], "detail": e["detail"]} for e in jobs.job_history(session, job_id)]
    rows += [
        {
            "at": s.at.isoformat(),  # as precise as the events': sorted among them by time
            "what": f"send {s.kind or ''} -> {s.destination}",
            "detail": f"{s.outcome} status={s.status if s.status is None else hex(s.status)} {s.error or ''}".strip(),
        }
        for s in sends
    ]
    return sorted(rows, key=lambda row: datetime.fromisoformat(row["at"]))


def association_rows(
    session: Session, since: datetime | None = None, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(Association).order_by(Association.started_at.desc()).limit(limit)
    if since:
        query = query.where(Association.started_at >= since)
    if status:
        query = query.where(Association.outcome == status)
    return [
        {
            "id": a.id,
            "calling_ae": a.calling_ae,
            "called_ae": a.called_ae,
            "address": a.address,
            "started_at": _iso(a.started_at),
            "ended_at": _iso(a.ended_at),
            "stored": a.n_stored,
            "failed": a.n_failed,
            "outcome": a.outcome,
            "reason": a.reason,
        }
        for a in session.scalars(query)
    ]


def failure_rows(session: Session, since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Everything that went wrong: quarantined instances, failed jobs, failed sends."""
    rows: list[dict[str, Any]] = []
    quarantine = select(QuarantineRecord).order_by(QuarantineRecord.at.desc()).limit(limit)
    jobs = select(Job).where(Job.state.in_(["failed", "quarantined"])).limit(limit)
    sends = (
        select(SendAttempt)
        .where(SendAttempt.outcome.in_(["failure", "unreachable"]))
        .order_by(SendAttempt.at.desc())
        .limit(limit)
    )
    if since:
        quarantine = quarantine.where(QuarantineRecord.at >= since)
        jobs = jobs.where(Job.updated_at >= since)
        sends = sends.where(SendAttempt.at >= since)
    for q in session.scalars(quarantine):
        rows.append({"at": _iso(q.at), "kind": "quarantine", "uid": q.sop_instance_uid, "reason": q.reason})
    for j in session.scalars(jobs):
        rows.append({"at": _iso(j.updated_at), "kind": f"job {j.id}", "uid": j.series_instance_uid, "reason": j.reason})
    for s in session.scalars(sends):
        rows.append(
            {"at": _iso(s.at), "kind": f"send -> {s.destination}", "uid": s.sop_instance_uid, "reason": s.error}
        )
    return sorted(rows, key=lambda row: row["at"] or "", reverse=True)[:limit]
