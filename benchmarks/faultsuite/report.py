"""What each phase measured, counted from the audit DB, the destination and the logs; the table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset
from sqlalchemy import select

from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Instance, Job, JobState

FINAL = {JobState.done, JobState.failed, JobState.quarantined}


@dataclass
class Row:
    """One line of the table (``None``: not measured in this phase)."""

    phase: str
    sent: int = 0
    acked: int = 0
    recorded: int = 0
    analysed: int | None = None
    lost: int = 0
    stuck: int | None = None
    failed_jobs: int | None = None
    duplicates: int | None = None
    resent_same_uid: int | None = None
    node_rss_mib: float | None = None
    worker_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditCounts:
    recorded: set[str]
    analysed: set[str]
    stuck: int
    failed: int
    done_jobs: list[int]


def audit_counts(database_url: str, uids: Iterable[str]) -> AuditCounts:
    """Of ``uids``: recorded (an Instance row), analysed (its series has a ``done`` job); jobs
    not in a final state (stuck) and failed, over the series of ``uids``."""
    wanted = set(uids)
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.execute(select(Instance.sop_instance_uid, Instance.series_id)).all()
            series_of = {uid: sid for uid, sid in rows if uid in wanted}
            ours = set(series_of.values())
            jobs = [j for j in session.scalars(select(Job)) if j.series_id in ours]
            done_series = {j.series_id for j in jobs if j.state == JobState.done}
            return AuditCounts(
                recorded=set(series_of),
                analysed={uid for uid, sid in series_of.items() if sid in done_series},
                stuck=sum(j.state not in FINAL for j in jobs),
                failed=sum(j.state in (JobState.failed, JobState.quarantined) for j in jobs),
                done_jobs=sorted(j.id for j in jobs if j.state == JobState.done),
            )
    finally:
        engine.dispose()


def job_histories(database_url: str) -> list[dict[str, Any]]:
    """Every job with its series and events (kept in the work folder, to explain a count)."""
    from dicom_node.jobs import job_history

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return [
                {
                    "job": job.id,
                    "series": job.series_instance_uid,
                    "state": job.state.value,
                    "reason": job.reason,
                    "events": job_history(session, job.id),
                }
                for job in session.scalars(select(Job).order_by(Job.id))
            ]
    finally:
        engine.dispose()


def destination_counts(received: Sequence[Dataset], studies: set[str]) -> tuple[int, int]:
    """(duplicates, re-sent with the same UID) among results for ``studies``.

    A duplicate is a second *different* object of one kind (Modality) for one study: what a
    PACS would show twice. The same SOP Instance UID arriving again (a re-run after a crash)
    replaces the first copy at a PACS; it is counted apart.
    """
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    total = 0
    for ds in received:
        if str(ds.StudyInstanceUID) in studies:
            seen[(str(ds.StudyInstanceUID), str(ds.Modality))].add(str(ds.SOPInstanceUID))
            total += 1
    distinct = sum(len(uids) for uids in seen.values())
    return sum(len(uids) - 1 for uids in seen.values()), total - distinct


def phi_lines(logs: Iterable[Path], tokens: Sequence[str]) -> dict[str, list[str]]:
    """Log lines holding any of ``tokens`` (case-insensitive), by log format (json/console)."""
    lowered = [t.lower() for t in tokens]
    found: dict[str, list[str]] = {"json": [], "console": []}
    for path in logs:
        kind = "json" if ".json." in path.name else "console"
        for line in path.read_text(errors="replace").splitlines():
            if any(t in line.lower() for t in lowered):
                found[kind].append(f"{path.name}: {line[:300]}")
    return found


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


COLUMNS = [
    ("phase", "phase"),
    ("sent", "sent"),
    ("acked", "acknowledged"),
    ("recorded", "recorded"),
    ("analysed", "analysed"),
    ("lost", "lost"),
    ("stuck", "jobs stuck"),
    ("failed_jobs", "jobs failed"),
    ("duplicates", "duplicates at destination"),
    ("resent_same_uid", "re-sent, same UID"),
    ("node_rss_mib", "node peak RSS MiB"),
    ("worker_rss_mib", "worker peak RSS MiB"),
]


def table(rows: Sequence[Row], phi: dict[str, list[str]]) -> str:
    """The suite's table as Markdown, with the PHI line counts under it."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(getattr(row, key)) for key, _ in COLUMNS) + " |")
    lines.append("")
    lines.append(f"log lines with a patient name or ID: {len(phi['console'])} console, {len(phi['json'])} JSON")
    return "\n".join(lines)


def total_row(rows: Sequence[Row]) -> Row:
    """Sums (and maxima for RSS) over the phases."""

    def add(key: str) -> int | None:
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return sum(values) if values else None

    def peak(key: str) -> float | None:
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return max(values) if values else None

    return Row(
        "total",
        sent=add("sent") or 0,
        acked=add("acked") or 0,
        recorded=add("recorded") or 0,
        analysed=add("analysed"),
        lost=add("lost") or 0,
        stuck=add("stuck"),
        failed_jobs=add("failed_jobs"),
        duplicates=add("duplicates"),
        resent_same_uid=add("resent_same_uid"),
        node_rss_mib=peak("node_rss_mib"),
        worker_rss_mib=peak("worker_rss_mib"),
    )
