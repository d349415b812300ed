"""What the console's pages read beyond the CLI's audit queries (``dicom_node.audit.queries``,
which the pages and the JSON API call for series, jobs, a job's history and failures).

Here: the overview's counts, header fields shown to a logged-in user (read from the spooled
files, never logged), a job's findings and result objects with where each was sent, the
quarantined files an admin may act on, and the source file of a preview.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node import jobs
from dicom_node.analysis import FINDINGS_FILE, read_manifest
from dicom_node.audit.models import (
    Association,
    Instance,
    Job,
    JobState,
    Outbox,
    QuarantineRecord,
    SendAttempt,
    Series,
    SeriesState,
)
from dicom_node.config import Settings

FAILED_SENDS = ("failure", "unreachable")
HEADER_FIELDS = (
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "BodyPartExamined",
    "InstitutionName",
)


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def window_counts(session: Session, since: datetime) -> dict[str, int]:
    """Received, selected and skipped series, quarantined instances, failed jobs and sends."""
    completed = select(Series.id).where(Series.completed_at >= since)
    return {
        "received": _count(session, select(Series.id).where(Series.first_received_at >= since)),
        "selected": _count(session, completed.where(Series.state == SeriesState.selected)),
        "skipped": _count(session, completed.where(Series.state == SeriesState.skipped)),
        "quarantined": _count(session, select(QuarantineRecord.id).where(QuarantineRecord.at >= since)),
        "failed_jobs": _count(
            session,
            select(Job.id).where(Job.state.in_([JobState.failed, JobState.quarantined]), Job.updated_at >= since),
        ),
        "failed_sends": _count(
            session, select(SendAttempt.id).where(SendAttempt.outcome.in_(FAILED_SENDS), SendAttempt.at >= since)
        ),
        "associations": _count(session, select(Association.id).where(Association.started_at >= since)),
    }


@dataclass(frozen=True)
class Disk:
    used_percent: float
    watermark: float
    free_bytes: int

    @property
    def above(self) -> bool:
        return self.used_percent >= self.watermark


def disk(settings: Settings) -> Disk | None:
    folder = settings.data_dir if settings.data_dir.exists() else None
    if folder is None:
        return None
    usage = shutil.disk_usage(folder)
    return Disk(round(100.0 * usage.used / usage.total, 1), settings.disk_watermark, usage.free)


def overview(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    states = jobs.count_by_state(session)
    unpublished = _count(session, select(Outbox.id).where(Outbox.published_at.is_(None)))
    return {
        "hour": window_counts(session, now - timedelta(hours=1)),
        "day": window_counts(session, now - timedelta(days=1)),
        "jobs": states,
        "queue": {"queued_jobs": states.get("queued", 0), "unpublished_outbox": unpublished},
        "disk": disk(settings),
    }


# ---- header fields (shown, never logged) ---------------------------------------------------


@lru_cache(maxsize=4096)
def _header(path: str, mtime: float) -> dict[str, str]:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_FIELDS))
    return {name: str(ds.get(name, "") or "") for name in HEADER_FIELDS}


def header_of(path: str | None) -> dict[str, str]:
    """Display fields of a spooled file; empty when the file is gone (retention) or unreadable."""
    if not path:
        return {}
    try:
        return _header(path, Path(path).stat().st_mtime)
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def first_instance_paths(session: Session, series_uids: list[str]) -> dict[str, str]:
    """Series UID -> spool path of its first stored instance."""
    if not series_uids:
        return {}
    first = (
        select(func.min(Instance.id).label("id"))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid.in_(series_uids))
        .group_by(Instance.series_id)
        .subquery()
    )
    rows = session.execute(
        select(Series.series_instance_uid, Instance.spool_path)
        .join(Instance, Instance.series_id == Series.id)
        .where(Instance.id.in_(select(first.c.id)))
    )
    return {uid: path for uid, path in rows}


def matches_accession(header: dict[str, str], text: str) -> bool:
    return bool(text) and header.get("AccessionNumber", "").strip().lower() == text.strip().lower()


def senders(session: Session, series_uid: str) -> list[dict[str, Any]]:
    """Who sent a series: calling AE, address and how many instances each association stored."""
    rows = session.execute(
        select(
            Association.id, Association.calling_ae, Association.address, Association.started_at, func.count(Instance.id)
        )
        .join(Instance, Instance.association_id == Association.id)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_uid)
        .group_by(Association.id, Association.calling_ae, Association.address, Association.started_at)
        .order_by(Association.id)
    )
    return [
        {
            "association": a,
            "calling_ae": ae,
            "address": addr,
            "started_at": at.isoformat(timespec="seconds"),
            "instances": n,
        }
        for a, ae, addr, at, n in rows
    ]


def series_extra(session: Session, series_uid: str) -> dict[str, Any] | None:
    """What the series page shows besides ``series_rows``: selection detail, first arrival."""
    series = session.scalar(select(Series).where(Series.series_instance_uid == series_uid))
    if series is None:
        return None
    return {
        "id": series.id,
        "first_received_at": series.first_received_at.isoformat(timespec="seconds"),
        "selection_detail": series.selection_detail,
        "spool_present": Path(series.spool_path).is_dir(),
    }


# ---- a job's results -----------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    folder: Path
    findings: dict[str, Any] | None
    objects: list[dict[str, Any]]  # manifest items + "sends": [{destination, outcome, ...}]


def job_series(session: Session, job_id: int) -> tuple[int, str] | None:
    row = session.execute(select(Job.series_id, Job.series_instance_uid).where(Job.id == job_id)).first()
    return None if row is None else (int(row[0]), str(row[1]))


def results(session: Session, settings: Settings, job_id: int) -> Results | None:
    """The findings and the result-object manifest of the job's results folder (the layout of
    ``dicom_node.analysis.write_results``), with each object's sends."""
    path = session.scalar(select(Job.results_path).where(Job.id == job_id))
    folder = Path(path) if path else settings.results_dir / str(job_id)
    findings_file = folder / FINDINGS_FILE
    if not findings_file.is_file():
        return None
    findings = json.loads(findings_file.read_text())
    manifest = read_manifest(folder) or []
    sends: dict[str, dict[str, dict[str, Any]]] = {}
    for s in session.scalars(select(SendAttempt).where(SendAttempt.job_id == job_id).order_by(SendAttempt.id)):
        sends.setdefault(s.sop_instance_uid or "", {})[s.destination] = {
            "destination": s.destination,
            "outcome": s.outcome,
            "status": None if s.status is None else f"0x{s.status:04X}",
            "error": s.error,
            "at": s.at.isoformat(timespec="seconds"),
        }
    objects = [{**item, "sends": list(sends.get(item["sop_instance_uid"], {}).values())} for item in manifest]
    return Results(folder, findings, objects)


def preview_slices(findings: list[dict[str, Any]], limit: int = 6) -> list[int]:
    """Indexes of findings whose slices to preview: one per slice with a herniation (most
    probable first), else the most certain finding's slice."""
    from dicom_node.demo import key_finding

    chosen: dict[tuple[str, int], int] = {}
    ranked = sorted(range(len(findings)), key=lambda i: -float(findings[i].get("score", 0)))
    for i in ranked:
        f = findings[i]
        if f.get("label") == "herniation":
            chosen.setdefault((f["sop_instance_uid"], int(f.get("frame", 1))), i)
    if not chosen and (key := key_finding(findings)) is not None:  # None: no findings
        chosen[("", 0)] = findings.index(key)
    return list(chosen.values())[:limit]


def source_file(session: Session, series_id: int, sop_uid: str) -> Path | None:
    """The spooled file (latest revision) of one instance of a series."""
    path = session.scalar(
        select(Instance.spool_path)
        .where(Instance.series_id == series_id, Instance.sop_instance_uid == sop_uid)
        .order_by(Instance.revision.desc())
        .limit(1)
    )
    return Path(path) if path else None


# ---- quarantine ----------------------------------------------------------------------------


def in_quarantine(settings: Settings, path: str) -> Path | None:
    """``path`` when it is a file directly inside the quarantine folder (never elsewhere)."""
    candidate = Path(path)
    folder = settings.quarantine_dir.resolve()
    try:
        resolved = candidate.resolve()
    except OSError:
        return None
    return resolved if resolved.parent == folder and resolved.is_file() else None


def quarantined_files(session: Session, settings: Settings, limit: int = 200) -> list[dict[str, Any]]:
    """Quarantine records whose file is still in the quarantine folder, newest first."""
    rows = []
    for q in session.scalars(select(QuarantineRecord).order_by(QuarantineRecord.id.desc()).limit(limit)):
        path = in_quarantine(settings, q.path)
        if path is None:
            continue
        rows.append(
            {
                "id": q.id,
                "at": q.at.isoformat(timespec="seconds"),
                "uid": q.sop_instance_uid,
                "reason": q.reason,
                "file": path.name,
                "bytes": path.stat().st_size,
            }
        )
    return rows
