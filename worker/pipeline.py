"""The pipeline of one job, as plain functions: series -> images -> detections -> findings per
disc level -> result objects on disk -> sent to every destination.

Each step records a JobEvent with its timing (``step:<name>``, detail ``{"seconds": ...}``) and
each state change goes through :func:`dicom_node.jobs.transition`, in short transactions, so
the audit trail shows where a job is while it runs. Torch is imported only by the detector.
The analysis itself (detect, levels, result objects) and the results folder are
:func:`dicom_node.analysis.analyze_series` and :func:`dicom_node.analysis.write_results`, the
ones ``meddet predict`` uses; this module adds the job: its audit trail, errors and sending.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dicom_node import analysis, jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Instance, Job, JobState, Series
from dicom_node.kinds import RESULT_KINDS, ResultKind
from dicom_node.logging import get_logger
from worker.context import WorkerContext
from worker.errors import BadInputError, PermanentError, RetriableError, StaleRunError
from worker.lease import current_lease

log = get_logger(__name__)

# The results folder of a job is the one layout of dicom_node.analysis (``meddet predict``
# writes the same): findings.json, NN-<kind>.dcm, objects.json last.
write_results = analysis.write_results
read_results = analysis.read_results


@dataclass(frozen=True)
class JobInput:
    job_id: int
    run: int
    model_version: str
    study_instance_uid: str
    series_instance_uid: str
    files: tuple[Path, ...]


# ---- audit helpers -------------------------------------------------------------------------


@contextmanager
def job_session(ctx: WorkerContext, job_id: int, run: int) -> Iterator[tuple[Session, Job]]:
    """A transaction holding the job; raises StaleRunError when a newer run superseded ``run``
    or when this thread's delivery no longer holds the job's lease (the sweeper took it back).

    A busy or unreachable database is a RetriableError.
    """
    try:
        with transaction(ctx.sessions) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise PermanentError(f"job {job_id} does not exist")
            if job.run != run:
                raise StaleRunError(f"job {job_id} run {run} superseded by run {job.run}")
            token = current_lease.get()
            if token is not None and job.lease_token != token:
                raise StaleRunError(f"job {job_id}: this delivery no longer holds its lease")
            yield session, job
    except OperationalError as exc:
        raise RetriableError(f"audit database: {exc.orig}") from exc


def advance(ctx: WorkerContext, job_id: int, run: int, state: JobState, detail: Any = None) -> None:
    with job_session(ctx, job_id, run) as (session, job):
        jobs.transition(session, job, state, detail)


@contextmanager
def step(ctx: WorkerContext, job_id: int, run: int, name: str, **detail: Any) -> Iterator[dict[str, Any]]:
    """Time the block and record ``step:<name>`` with its seconds and any detail it adds."""
    info: dict[str, Any] = dict(detail)
    start = time.perf_counter()
    yield info
    info["seconds"] = round(time.perf_counter() - start, 4)
    with job_session(ctx, job_id, run) as (session, job):
        jobs.record_event(session, job, f"step:{name}", info)


# ---- the steps -----------------------------------------------------------------------------


def latest_instance_files(session: Session, series_id: int) -> list[Path]:
    """Spool paths of the latest revision of every instance of a series."""
    latest = (
        select(Instance.sop_instance_uid, func.max(Instance.revision).label("revision"))
        .where(Instance.series_id == series_id)
        .group_by(Instance.sop_instance_uid)
        .subquery()
    )
    rows = session.scalars(
        select(Instance.spool_path)
        .join(
            latest,
            (Instance.sop_instance_uid == latest.c.sop_instance_uid) & (Instance.revision == latest.c.revision),
        )
        .where(Instance.series_id == series_id)
        .order_by(Instance.sop_instance_uid)
    )
    return [Path(p) for p in rows]


def load_job_input(ctx: WorkerContext, job_id: int, run: int) -> JobInput:
    with job_session(ctx, job_id, run) as (session, job):
        series = session.get(Series, job.series_id)
        assert series is not None
        files = latest_instance_files(session, series.id)
        if not files:
            raise BadInputError(f"series {series.series_instance_uid} has no instances")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise PermanentError(f"{len(missing)} spool file(s) missing, e.g. {missing[0]}")
        return JobInput(
            job_id=job.id,
            run=run,
            model_version=job.model_version,
            study_instance_uid=series.study_instance_uid,
            series_instance_uid=series.series_instance_uid,
            files=tuple(files),
        )


def results_dir(ctx: WorkerContext, job_id: int) -> Path:
    return ctx.settings.results_dir / str(job_id)


def analyze(ctx: WorkerContext, job_id: int, run: int) -> list[tuple[str, Dataset]]:
    """Run the detector on the job's series and write its results; state -> results_written."""
    job = load_job_input(ctx, job_id, run)
    from dicom_node.pixels import SeriesError, read_series
    from dicom_node.results import FindingsError

    with step(ctx, job_id, run, "decode", instances=len(job.files)) as info:
        try:
            series = read_series(
                list(job.files), series_uid=job.series_instance_uid, max_pixels=ctx.settings.max_pixels
            )
        except (ValueError, KeyError, AttributeError) as exc:  # SeriesError is a ValueError
            raise BadInputError(f"cannot decode series: {exc}") from exc
        info["slices"] = len(series.slices)
    detector = ctx.detector()
    if detector.version != job.model_version:
        raise PermanentError(
            f"this worker runs model {detector.version}, the job is for {job.model_version}; "
            f"`meddet reanalyze {job_id}` queues its series for {detector.version}"
        )
    seconds: dict[str, float] = {}

    @contextmanager
    def job_step(name: str, **detail: Any) -> Iterator[dict[str, Any]]:
        with step(ctx, job_id, run, name, **detail) as info:
            yield info
        seconds[name] = info["seconds"]

    try:
        result = analysis.analyze_series(
            series,
            detector,
            kinds=kinds_to_build(ctx.settings),
            sr_kind=ctx.settings.sr_kind,
            step=job_step,
        )
    except FindingsError as exc:  # names the missing attribute
        raise BadInputError(f"cannot build result objects: {exc}") from exc
    except SeriesError as exc:  # no pixel spacing
        raise BadInputError(str(exc)) from exc
    ctx.metrics.detector_seconds_per_slice.observe(seconds["detect"] / max(1, len(series.slices)))
    objects = result.objects
    out_dir = results_dir(ctx, job_id)
    with step(ctx, job_id, run, "write", path=str(out_dir)):
        write_results(out_dir, result.findings, objects)
    with job_session(ctx, job_id, run) as (session, job_row):
        job_row.results_path = str(out_dir)
        jobs.transition(session, job_row, JobState.results_written, {"objects": [k for k, _ in objects]})
    return list(objects)


def kinds_to_build(settings: Any) -> list[ResultKind]:
    """Every result kind some destination wants (each may choose its own), in a fixed order."""
    wanted = set(settings.result_objects)
    for destination in settings.destinations:
        wanted.update(destination.kinds(settings.result_objects))
    return [kind for kind in RESULT_KINDS if kind in wanted]


def deliver(
    ctx: WorkerContext,
    job_id: int,
    run: int,
    objects: Sequence[tuple[str, Dataset]],
    *,
    send_retries: int = 1,
    send_backoff: float = 0.5,
) -> None:
    """Send each destination its kinds of ``objects``; all accepted -> state sent.

    A destination that is unreachable or refuses raises RetriableError (the task retries;
    objects already accepted are sent again with the same UIDs, which a PACS de-duplicates).
    """
    from dicom_node.sender import send_objects

    failures = []
    sent_to = []
    for destination in ctx.settings.destinations:
        wanted = destination.kinds(ctx.settings.result_objects)
        datasets = [(kind, ds) for kind, ds in objects if kind in wanted]
        if not datasets:
            continue
        sent_to.append(str(destination))
        with step(ctx, job_id, run, "send", destination=str(destination)) as info:
            report = send_objects(
                datasets,
                destination,
                calling_ae=ctx.settings.ae_title,
                session_factory=ctx.sessions,
                job_id=job_id,
                retries=send_retries,
                backoff=send_backoff,
            )
            info["ok"] = bool(report.ok)
        if not report.ok:
            failures.append(f"{destination}: {report_summary(report)}")
    if failures:
        raise RetriableError("; ".join(failures))
    advance(ctx, job_id, run, JobState.sent, {"destinations": sent_to, "objects": len(objects)})


def report_summary(report: Any) -> str:
    """A short text of a SendReport for the audit trail."""
    for attr in ("error", "reason", "summary"):
        value = getattr(report, attr, None)
        if value:
            return str(value)
    return repr(report)
