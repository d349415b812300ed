"""Retention: remove spool folders of finished series and old quarantine files, recorded.

A series folder is removed once its series is skipped, or every job of it is ``done``, and it
has been finished for ``spool_retention_hours``. Quarantine files go after
``quarantine_retention_days``. Every removal is a :class:`CleanupRecord`.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import transaction
from dicom_node.audit.models import CleanupRecord, JobState, Series, SeriesState
from dicom_node.config import Settings
from dicom_node.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Removal:
    path: Path
    kind: str  # spool / quarantine
    size_bytes: int
    reason: str


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def finished_series(session: Session, before: datetime) -> list[Series]:
    """Series whose work is over (skipped, or all jobs done) since before ``before``."""
    result = []
    for series in session.scalars(
        select(Series).where(Series.state.in_([SeriesState.skipped, SeriesState.selected]))
    ):
        completed = series.completed_at
        if completed is None or completed > before:
            continue
        if series.state == SeriesState.selected and (
            not series.jobs or any(job.state != JobState.done for job in series.jobs)
        ):
            continue
        result.append(series)
    return result


def plan(settings: Settings, session: Session, now: datetime) -> list[Removal]:
    """What retention would remove now (pure apart from reading the DB and stat)."""
    removals = []
    spool_cutoff = now - timedelta(hours=settings.spool_retention_hours)
    for series in finished_series(session, spool_cutoff):
        folder = Path(series.spool_path)
        if folder.exists():
            why = "series skipped" if series.state == SeriesState.skipped else "all jobs done"
            removals.append(Removal(folder, "spool", _size(folder), f"{why}, retention passed"))
    q_cutoff = (now - timedelta(days=settings.quarantine_retention_days)).timestamp()
    if settings.quarantine_dir.exists():
        for path in sorted(settings.quarantine_dir.glob("*.dcm")):
            if path.stat().st_mtime < q_cutoff:
                removals.append(
                    Removal(path, "quarantine", path.stat().st_size, "quarantine retention passed")
                )
    return removals


def collect_garbage(
    settings: Settings,
    session_factory: sessionmaker[Session],
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[Removal]:
    """Remove what :func:`plan` lists (unless ``dry_run``) and record each removal."""
    now = now or datetime.now(timezone.utc)
    with session_factory() as session:
        removals = plan(settings, session, now)
    if dry_run or not removals:
        return removals
    with transaction(session_factory) as session:
        for removal in removals:
            if removal.path.is_dir():
                shutil.rmtree(removal.path, ignore_errors=True)
            else:
                removal.path.unlink(missing_ok=True)
                removal.path.with_suffix(".json").unlink(missing_ok=True)
            session.add(
                CleanupRecord(
                    path=str(removal.path),
                    kind=removal.kind,
                    size_bytes=removal.size_bytes,
                    reason=removal.reason,
                    at=now,
                )
            )
    log.info("retention removed files", count=len(removals), bytes=sum(r.size_bytes for r in removals))
    return removals


class RetentionLoop:
    """Runs :func:`collect_garbage` every ``interval`` seconds on a daemon thread."""

    def __init__(
        self, settings: Settings, session_factory: sessionmaker[Session], interval: float = 600.0
    ) -> None:
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
            try:
                collect_garbage(self._settings, self._factory)
            except Exception:  # keep serving; the next pass retries
                log.exception("retention pass failed")
