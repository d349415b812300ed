"""Retention: remove spool folders of finished series and old quarantine files, recorded.

A series folder is removed once its series is skipped, or every job of it is ``done``, and it
has been finished for ``spool_retention_hours``. Quarantine files go after
``quarantine_retention_days``. Every removal is a :class:`CleanupRecord`.

The node keeps receiving while retention runs, so a removal deletes only the files its plan
listed, after checking under the series' row lock that the series is still finished; the
folder goes only once it is empty. An instance acknowledged after the plan stays on disk (and
reopens its series); the spool makes a removed folder again for a late instance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import transaction
from dicom_node.audit.models import CleanupRecord, Job, JobState, Series, SeriesState
from dicom_node.config import Settings
from dicom_node.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Removal:
    path: Path
    kind: str  # spool / quarantine
    size_bytes: int
    reason: str
    files: tuple[Path, ...] = ()  # spool: the files planned (later arrivals are kept)
    series_id: int | None = None
    completed_at: datetime | None = None  # spool: the completion the plan saw


def is_finished(series: Series, before: datetime) -> bool:
    """Skipped, or selected with every job done (or failed and superseded by a later job of
    the series that is done), and completed before ``before``."""
    completed = series.completed_at
    if completed is None or completed > before:
        return False
    if series.state == SeriesState.skipped:
        return True
    if series.state != SeriesState.selected or not series.jobs:
        return False
    done = [job.id for job in series.jobs if job.state == JobState.done]
    return all(job.state == JobState.done or _superseded(job, done) for job in series.jobs)


def _superseded(job: Job, done_ids: list[int]) -> bool:
    """A failed job whose series a later job (``meddet reanalyze``, another model) has done."""
    return job.state == JobState.failed and any(i > job.id for i in done_ids)


def finished_series(session: Session, before: datetime) -> list[Series]:
    """Series whose work is over (skipped, or all jobs done) since before ``before``."""
    query = select(Series).where(Series.state.in_([SeriesState.skipped, SeriesState.selected]))
    return [series for series in session.scalars(query) if is_finished(series, before)]


def plan(settings: Settings, session: Session, now: datetime) -> list[Removal]:
    """What retention would remove now (pure apart from reading the DB and stat)."""
    removals = []
    spool_cutoff = now - timedelta(hours=settings.spool_retention_hours)
    for series in finished_series(session, spool_cutoff):
        folder = Path(series.spool_path)
        if folder.is_dir():
            why = "series skipped" if series.state == SeriesState.skipped else "all jobs done"
            files = tuple(sorted(p for p in folder.iterdir() if p.is_file()))
            size = sum(p.stat().st_size for p in files)
            removals.append(
                Removal(folder, "spool", size, f"{why}, retention passed", files, series.id, series.completed_at)
            )
    q_cutoff = (now - timedelta(days=settings.quarantine_retention_days)).timestamp()
    if settings.quarantine_dir.exists():
        for path in sorted(settings.quarantine_dir.glob("*.dcm")):
            if path.stat().st_mtime < q_cutoff:
                removals.append(Removal(path, "quarantine", path.stat().st_size, "quarantine retention passed"))
    return removals


def collect_garbage(
    settings: Settings,
    session_factory: sessionmaker[Session],
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[Removal]:
    """Remove what :func:`plan` lists (unless ``dry_run``) and record each removal."""
    now = now or datetime.now(UTC)
    with session_factory() as session:
        removals = plan(settings, session, now)
    if dry_run or not removals:
        return removals
    done = []
    for removal in removals:
        with transaction(session_factory) as session:
            if not _remove(session, removal):
                continue
            session.add(
                CleanupRecord(
                    path=str(removal.path),
                    kind=removal.kind,
                    size_bytes=removal.size_bytes,
                    reason=removal.reason,
                    at=now,
                )
            )
        done.append(removal)
    log.info("retention removed files", count=len(done), bytes=sum(r.size_bytes for r in done))
    return done


def _remove(session: Session, removal: Removal) -> bool:
    """Delete what ``removal`` planned; False when its series came back to life meanwhile."""
    if removal.kind != "spool":
        removal.path.unlink(missing_ok=True)
        removal.path.with_suffix(".json").unlink(missing_ok=True)
        return True
    series = session.get(Series, removal.series_id, with_for_update=True)
    planned = removal.completed_at
    if series is None or planned is None or series.completed_at != planned or not is_finished(series, planned):
        log.info("retention skipped a series that received more", series_id=removal.series_id)
        return False
    for path in removal.files:
        path.unlink(missing_ok=True)
    _remove_if_empty(removal.path)
    _remove_if_empty(removal.path.parent)  # the study folder, once its last series is gone
    return True


def _remove_if_empty(folder: Path) -> None:
    """rmdir: a folder that received a file after the plan stays (ENOTEMPTY)."""
    try:
        folder.rmdir()
    except OSError:
        pass


class RetentionLoop:
    """Runs :func:`collect_garbage` every ``interval`` seconds on a daemon thread, then, when
    ``prune_older_than_days`` is set, :func:`dicom_node.prune.prune` for that age."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], interval: float = 600.0) -> None:
        self._settings = settings
        self._factory = session_factory
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.run_once()

    def run_once(self) -> None:
        """One pass: retention, then the scheduled prune (if set); failures are logged and the
        next pass retries."""
        try:
            collect_garbage(self._settings, self._factory)
        except Exception:  # keep serving; the next pass retries
            log.exception("retention pass failed")
        days = self._settings.prune_older_than_days
        if days is None:
            return
        from dicom_node.prune import prune

        now = datetime.now(UTC)
        try:
            prune(self._settings, self._factory, now - timedelta(days=days), now=now)
        except Exception:  # the database may be down: the next pass retries
            log.exception("scheduled prune failed", older_than_days=days)
