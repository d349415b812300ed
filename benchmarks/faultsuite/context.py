"""What every phase of the suite shares: its sizes, the generator, the destination, the logs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from benchmarks.faultsuite.generator import Generator, SeriesFiles
from benchmarks.faultsuite.report import FINAL, Row, audit_counts, destination_counts, job_histories
from benchmarks.faultsuite.senders import Ledger
from benchmarks.faultsuite.services import PeakRSS
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Job, JobState, Series, SeriesState
from dicom_node.loopback import TestPACS, wait_for


@dataclass(frozen=True)
class Sizes:
    """How big a run is. ``small()`` is the CI size."""

    senders: int = 8
    series: int = 30  # per sender, in the soak
    slices: int = 5
    size: int = 128
    fuzz_examples: int = 100  # per fuzz target (PDUs, headers)
    dist_senders: int = 4
    dist_series: int = 2  # per sender in each of the distributed phase's three parts
    redis_outage: float = 4.0
    postgres_outage: float = 8.0  # longer than the ~6 s that used to drop audit batches
    pace: float = 0.2  # seconds between a sender's series
    timeout: float = 1800.0  # for the traffic of a phase, and for its jobs to finish

    @classmethod
    def small(cls) -> Sizes:
        return cls(
            senders=2,
            series=2,
            fuzz_examples=12,
            dist_senders=1,
            dist_series=1,
            redis_outage=3.0,
            postgres_outage=7.0,
            pace=0.3,
            timeout=120.0,
        )


@dataclass
class Context:
    """The run's shared state; notes, skipped parts and problems are printed as they happen."""

    sizes: Sizes
    workdir: Path
    generator: Generator
    destination: TestPACS
    checkpoint: Path
    rss: PeakRSS
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def logs(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {time.monotonic() - self.started:6.1f} s  {text}", flush=True)

    def phase(self, title: str) -> None:
        print(f"{time.monotonic() - self.started:6.1f} s  {title}", flush=True)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  - PROBLEM: {text}", flush=True)

    def skip(self, text: str) -> None:
        self.skipped.append(text)
        print(f"  - SKIPPED: {text}", flush=True)


def flatten(plan: list[list[SeriesFiles]]) -> list[SeriesFiles]:
    return [series for sender in plan for series in sender]


def running_job(database_url: str) -> int | None:
    """The id of a job in ``running`` state, if any."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return session.scalar(select(Job.id).where(Job.state == JobState.running).limit(1))
    finally:
        engine.dispose()


def settled(database_url: str, series: list[SeriesFiles]) -> bool:
    """Every series recorded, complete, and skipped or with all its jobs finished."""
    wanted = {s.series_uid for s in series}
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = [s for s in session.scalars(select(Series)) if s.series_instance_uid in wanted]
            if len(rows) < len(wanted):
                return False
            for row in rows:
                if row.state == SeriesState.skipped:
                    continue
                if row.state != SeriesState.selected or not row.jobs or any(j.state not in FINAL for j in row.jobs):
                    return False
            return True
    except Exception:  # noqa: BLE001 - the database may be down (outage phase): not settled
        return False
    finally:
        engine.dispose()


def wait_settled(ctx: Context, database_url: str, series: list[SeriesFiles], what: str) -> float:
    """Wait (up to the phase timeout) until :func:`settled`; seconds waited."""
    start = time.monotonic()
    try:
        wait_for(lambda: settled(database_url, series), ctx.sizes.timeout, what, interval=0.5)
    except TimeoutError:
        ctx.problem(f"{what}: not settled after {ctx.sizes.timeout:.0f} s")
    return time.monotonic() - start


def count_row(phase: str, ctx: Context, database_url: str, series: list[SeriesFiles], ledger: Ledger) -> Row:
    """The table row of a phase: the ledger's figures against the audit DB and the destination.
    Every job's history goes to ``<workdir>/<phase>-jobs.json``."""
    ours = {uid for s in series for uid in s.sop_uids}
    counts = audit_counts(database_url, ours)
    histories = ctx.workdir / f"{phase.replace(' ', '-')}-jobs.json"
    histories.write_text(json.dumps(job_histories(database_url), indent=1, default=str))
    acked = ledger.acked & ours
    duplicates, resent = destination_counts(ctx.destination.received(), {s.study_uid for s in series})
    lost = len(acked - (counts.recorded & counts.analysed))
    return Row(
        phase,
        sent=len(ledger.sent & ours),
        acked=len(acked),
        recorded=len(counts.recorded),
        analysed=len(counts.analysed),
        lost=lost,
        stuck=counts.stuck,
        failed_jobs=counts.failed,
        duplicates=duplicates,
        resent_same_uid=resent,
    )
