"""The pipeline of one job, as plain functions: series -> images -> detections -> findings per
disc level -> result objects on disk -> sent to every destination.

Each step records a JobEvent with its timing (``step:<name>``, detail ``{"seconds": ...}``) and
each state change goes through :func:`dicom_node.jobs.transition`, in short transactions, so
the audit trail shows where a job is while it runs. Torch is imported only by the detector.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Instance, Job, JobState, Series
from dicom_node.kinds import RESULT_KINDS
from dicom_node.logging import get_logger
from worker.context import WorkerContext
from worker.errors import BadInputError, PermanentError, RetriableError, StaleRunError
from worker.lease import current_lease

log = get_logger(__name__)

FINDINGS_FILE = "findings.json"
MANIFEST_FILE = "objects.json"  # written last: the results of a run are complete on disk


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


def advance(
    ctx: WorkerContext, job_id: int, run: int, state: JobState, detail: Any = None
) -> None:
    with job_session(ctx, job_id, run) as (session, job):
        jobs.transition(session, job, state, detail)


@contextmanager
def step(ctx: WorkerContext, job_id: int, run: int, name: str, **detail: Any) -> Iterator[dict]:
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
            (Instance.sop_instance_uid == latest.c.sop_instance_uid)
            & (Instance.revision == latest.c.revision),
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


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file unique to this process, thread and call, then rename."""
    unique = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.{unique}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_results(
    out_dir: Path, document: dict[str, Any], objects: Sequence[tuple[str, Dataset]]
) -> list[dict[str, str]]:
    """findings.json, ``NN-<kind>.dcm`` per object, then the manifest; each file atomic."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(
        out_dir / FINDINGS_FILE, lambda p: p.write_text(json.dumps(document, indent=2) + "\n")
    )
    manifest = []
    for index, (kind, ds) in enumerate(objects):
        name = f"{index:02d}-{kind}.dcm"
        _write_atomic(out_dir / name, lambda p, ds=ds: ds.save_as(p, enforce_file_format=True))
        manifest.append({"kind": kind, "file": name, "sop_instance_uid": str(ds.SOPInstanceUID)})
    _write_atomic(
        out_dir / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n")
    )
    return manifest


def read_results(out_dir: Path) -> list[tuple[str, Dataset]] | None:
    """The result objects of a finished write, or None when the manifest is not there."""
    manifest_path = out_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    return [(item["kind"], dcmread(out_dir / item["file"])) for item in manifest]


def results_dir(ctx: WorkerContext, job_id: int) -> Path:
    return ctx.settings.results_dir / str(job_id)


def analyze(ctx: WorkerContext, job_id: int, run: int) -> list[tuple[str, Dataset]]:
    """Run the detector on the job's series and write its results; state -> results_written."""
    job = load_job_input(ctx, job_id, run)
    from dicom_node.findings import build_findings
    from dicom_node.pixels import read_series
    from dicom_node.results import build_result_objects

    with step(ctx, job_id, run, "decode", instances=len(job.files)) as info:
        try:
            series = read_series(list(job.files), series_uid=job.series_instance_uid,
                                 max_pixels=ctx.settings.max_pixels)
        except (ValueError, KeyError, AttributeError) as exc:  # SeriesError is a ValueError
            raise BadInputError(f"cannot decode series: {exc}") from exc
        info["slices"] = len(series.slices)
    detector = ctx.detector()
    version = getattr(detector, "version", job.model_version)
    if version != job.model_version:
        raise PermanentError(f"this worker runs model {version}, the job is for {job.model_version}")
    with step(ctx, job_id, run, "detect", slices=len(series.slices)) as info:
        try:
            spacing = series.pixel_spacing
        except ValueError as exc:  # SeriesError: no pixel spacing
            raise BadInputError(str(exc)) from exc
        analysis = detector.analyze(series.images, spacing)
    ctx.metrics.detector_seconds_per_slice.observe(info["seconds"] / max(1, len(series.slices)))
    with step(ctx, job_id, run, "levels") as info:
        document = build_findings(series, analysis, job.model_version)
        info["levels"] = len(document["findings"])
        info["anchor"] = document["levels"]["anchor"]
    with step(ctx, job_id, run, "results") as info:
        objects: list[tuple[str, Dataset]] = []
        if document["findings"]:  # no disc seen: findings.json says so, nothing to send
            try:
                objects = build_result_objects(
                    document, series.sources, kinds_to_build(ctx.settings), ctx.settings.sr_kind
                )
            except ValueError as exc:  # FindingsError names the missing attribute
                raise BadInputError(f"cannot build result objects: {exc}") from exc
        info["objects"] = [kind for kind, _ in objects]
    out_dir = results_dir(ctx, job_id)
    with step(ctx, job_id, run, "write", path=str(out_dir)):
        write_results(out_dir, document, objects)
    with job_session(ctx, job_id, run) as (session, job_row):
        job_row.results_path = str(out_dir)
        jobs.transition(
            session, job_row, JobState.results_written, {"objects": [k for k, _ in objects]}
        )
    return list(objects)


def kinds_to_build(settings: Any) -> list[str]:
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
