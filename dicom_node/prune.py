"""``meddet db prune --older-than 90d``: retention for audit rows, results and failed spools.

Older than the cutoff (last change before it) are pruned:

* finished jobs (done, failed, quarantined) with their events, outbox rows and send attempts,
  and their results folders (``results/<job id>``, or an orphan one there without a job row);
* the spool folder of a failed (or quarantined) job's series that received nothing since;
* series with no job left whose spool folder is gone (skipped, or retention removed it), and
  their instance rows;
* closed associations, quarantine records, send attempts without a job, cleanup records.

A job that changed state since the plan is kept (checked again in the deleting transaction).
Each prune adds a ``CleanupRecord`` (kind ``prune``) and a log line with the counts; each
folder removed adds its own record, as retention does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import transaction
from dicom_node.audit.models import (
    Association,
    CleanupRecord,
    Instance,
    Job,
    JobEvent,
    JobState,
    Outbox,
    QuarantineRecord,
    SendAttempt,
    Series,
)
from dicom_node.config import Settings
from dicom_node.logging import get_logger

log = get_logger(__name__)

FINISHED = (JobState.done, JobState.failed, JobState.quarantined)
FAILED = (JobState.failed, JobState.quarantined)
_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Folder:
    """A folder to remove: results of a job, or a failed job's series spool."""

    path: Path
    kind: str  # results / spool
    size_bytes: int
    series_id: int | None = None


@dataclass
class PruneReport:
    """What a prune removed (or, dry run, would remove): rows per table, and folders."""

    cutoff: datetime
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)
    folders: list[Folder] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size_bytes for f in self.folders)

    def summary(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.rows.items())
        kinds = {kind: sum(f.kind == kind for f in self.folders) for kind in ("results", "spool")}
        return (
            f"older than {self.cutoff.isoformat(timespec='seconds')}: {counts}; "
            f"results folders {kinds['results']}, spool folders {kinds['spool']}, {self.bytes} bytes"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "rows": self.rows,
            "folders": [{"path": str(f.path), "kind": f.kind, "bytes": f.size_bytes} for f in self.folders],
            "bytes": self.bytes,
        }


# --- planning -----------------------------------------------------------------------------
def old_job_ids(session: Session, cutoff: datetime) -> list[int]:
    """Finished jobs last changed before ``cutoff``."""
    query = select(Job.id).where(Job.state.in_(FINISHED), Job.updated_at < cutoff).order_by(Job.id)
    return list(session.scalars(query))


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def results_folders(settings: Settings, session: Session, job_ids: Sequence[int], cutoff: datetime) -> list[Folder]:
    """Results folders of ``job_ids``, and orphan ones (no job row) not modified since ``cutoff``."""
    pruned = set(job_ids)
    root = settings.results_dir
    if not root.is_dir():
        return []
    known = set(session.scalars(select(Job.id)))
    folders = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        job_id = int(path.name) if path.name.isdigit() else None
        orphan = job_id not in known and path.stat().st_mtime < cutoff.timestamp()
        if job_id in pruned or orphan:
            folders.append(Folder(path, "results", _folder_size(path)))
    return folders


def failed_spools(session: Session, job_ids: Sequence[int], cutoff: datetime) -> list[Folder]:
    """Spool folders of failed jobs' series that received nothing since ``cutoff`` and have
    no job outside ``job_ids``."""
    pruned = set(job_ids)
    folders = []
    for series in _series_of(session, job_ids, failed_only=True):
        idle = series.last_received_at < cutoff
        if idle and all(job.id in pruned for job in series.jobs) and Path(series.spool_path).is_dir():
            folder = Path(series.spool_path)
            folders.append(Folder(folder, "spool", _folder_size(folder), series.id))
    return folders


def _series_of(session: Session, job_ids: Sequence[int], failed_only: bool = False) -> list[Series]:
    states = FAILED if failed_only else FINISHED
    series_ids: set[int] = set()
    for chunk in _chunks(job_ids):
        query = select(Job.series_id).where(Job.id.in_(chunk), Job.state.in_(states))
        series_ids.update(session.scalars(query))
    return [s for s in (session.get(Series, sid) for sid in sorted(series_ids)) if s is not None]


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


# --- deleting rows ------------------------------------------------------------------------
def _count_or_delete(session: Session, model: Any, where: Any, dry_run: bool) -> int:
    if dry_run:
        return int(session.scalar(select(func.count()).select_from(model).where(where)) or 0)
    return int(session.execute(delete(model).where(where)).rowcount or 0)  # type: ignore[attr-defined]


def prune_jobs(session: Session, job_ids: Sequence[int], cutoff: datetime, dry_run: bool) -> dict[str, int]:
    """Delete (or count) the jobs still finished and old, with their events, outbox, sends."""
    rows = {"jobs": 0, "job_events": 0, "outbox": 0, "send_attempts": 0}
    for chunk in _chunks(job_ids):
        still = select(Job.id).where(Job.id.in_(chunk), Job.state.in_(FINISHED), Job.updated_at < cutoff)
        ids = list(session.scalars(still if dry_run else still.with_for_update()))
        if not ids:
            continue
        rows["job_events"] += _count_or_delete(session, JobEvent, JobEvent.job_id.in_(ids), dry_run)
        rows["outbox"] += _count_or_delete(session, Outbox, Outbox.job_id.in_(ids), dry_run)
        rows["send_attempts"] += _count_or_delete(session, SendAttempt, SendAttempt.job_id.in_(ids), dry_run)
        rows["jobs"] += _count_or_delete(session, Job, Job.id.in_(ids), dry_run)
    return rows


def prune_series(session: Session, cutoff: datetime, dry_run: bool, gone: set[Path]) -> dict[str, int]:
    """Delete (or count) idle series with no job left and no spool folder, with their instances.

    ``gone``: spool folders this prune removes (a dry run has not removed them yet).
    """
    pruned = Job.state.in_(FINISHED) & (Job.updated_at < cutoff)  # deleted by prune_jobs
    has_job = select(Job.id).where(Job.series_id == Series.id, ~pruned).exists()
    query = select(Series).where(Series.last_received_at < cutoff, ~has_job).order_by(Series.id)
    ids = [s.id for s in session.scalars(query) if Path(s.spool_path) in gone or not Path(s.spool_path).exists()]
    rows = {"series": 0, "instances": 0}
    for chunk in _chunks(ids):
        rows["instances"] += _count_or_delete(session, Instance, Instance.series_id.in_(chunk), dry_run)
        rows["series"] += _count_or_delete(session, Series, Series.id.in_(chunk), dry_run)
    return rows


def prune_other(session: Session, cutoff: datetime, dry_run: bool) -> dict[str, int]:
    """Delete (or count) closed associations, quarantine, job-less sends, cleanup records."""
    closed = (Association.outcome != "open") & (Association.started_at < cutoff)
    if not dry_run:  # instances and quarantine rows outlive the association they came on
        old = select(Association.id).where(closed).scalar_subquery()
        session.execute(update(Instance).where(Instance.association_id.in_(old)).values(association_id=None))
        session.execute(
            update(QuarantineRecord).where(QuarantineRecord.association_id.in_(old)).values(association_id=None)
        )
    return {
        "associations": _count_or_delete(session, Association, closed, dry_run),
        "quarantine": _count_or_delete(session, QuarantineRecord, QuarantineRecord.at < cutoff, dry_run),
        "send_attempts_without_job": _count_or_delete(
            session, SendAttempt, SendAttempt.job_id.is_(None) & (SendAttempt.at < cutoff), dry_run
        ),
        "cleanup": _count_or_delete(session, CleanupRecord, CleanupRecord.at < cutoff, dry_run),
    }


# --- removing folders ---------------------------------------------------------------------
def remove_folder(session: Session, folder: Folder, cutoff: datetime) -> bool:
    """Remove ``folder``; a spool one only while its series is still idle (row lock)."""
    if folder.kind == "spool":
        series = session.get(Series, folder.series_id, with_for_update=True)
        if series is None or series.last_received_at >= cutoff:
            log.info("prune kept a series spool that received more", series_id=folder.series_id)
            return False
    shutil.rmtree(folder.path, ignore_errors=True)
    if folder.kind == "spool":
        try:
            folder.path.parent.rmdir()  # the study folder, once its last series is gone
        except OSError:
            pass
    return True


# --- the whole prune ----------------------------------------------------------------------
def prune(
    settings: Settings,
    session_factory: sessionmaker[Session],
    cutoff: datetime,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Prune everything older than ``cutoff`` (see the module docstring); record it."""
    now = now or datetime.now(UTC)
    if cutoff > now:
        raise ValueError(f"cutoff {cutoff.isoformat()} is in the future")
    report = PruneReport(cutoff, dry_run)
    with session_factory() as session:
        job_ids = old_job_ids(session, cutoff)
        planned = results_folders(settings, session, job_ids, cutoff) + failed_spools(session, job_ids, cutoff)
    for folder in planned:
        if dry_run:
            report.folders.append(folder)
            continue
        with transaction(session_factory) as session:
            if remove_folder(session, folder, cutoff):
                session.add(
                    CleanupRecord(
                        path=str(folder.path),
                        kind=folder.kind,
                        size_bytes=folder.size_bytes,
                        reason="db prune: older than the cutoff",
                        at=now,
                    )
                )
                report.folders.append(folder)
    gone = {f.path for f in report.folders if f.kind == "spool"}
    with transaction(session_factory) as session:
        report.rows.update(prune_jobs(session, job_ids, cutoff, dry_run))
        report.rows.update(prune_series(session, cutoff, dry_run, gone))
        report.rows.update(prune_other(session, cutoff, dry_run))
        if not dry_run:
            session.add(
                CleanupRecord(
                    path=str(settings.data_dir),
                    kind="prune",
                    size_bytes=report.bytes,
                    reason=f"db prune {report.summary()}",
                    at=now,
                )
            )
    log.info(
        "db prune" + (" (dry run)" if dry_run else ""),
        cutoff=cutoff.isoformat(),
        bytes=report.bytes,
        folders=len(report.folders),
        **report.rows,
    )
    return report
