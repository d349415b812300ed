"""Re-analysing a series under the model this node runs now (``meddet reanalyze``).

A job is keyed by (series, model version), and a worker runs only its own version: a job
queued before an upgrade, or one that failed with "this worker runs model ...", can never run
as it is, and ``meddet retry`` would queue it for the old version again. Re-analysis queues
the job's series afresh for the current version (``jobs.enqueue_series``: a new job, or that
series' existing job for it re-armed), from the instances still in the spool. A job of the
old version that was still waiting is marked failed, "superseded", so that nothing runs it;
finished jobs keep their state and results. Nothing is changed when the spool no longer
holds the series (retention or ``meddet prune`` removed it: then only the PACS can re-send
it), or when the series' job for the current version is running or done (its results
stand); a failed or quarantined one is queued again instead of a new job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Job, JobState, Series
from dicom_node.config import Settings
from dicom_node.leases import IN_FLIGHT
from dicom_node.logging import get_logger
from worker.pipeline import latest_instance_files
from worker.tasks import publish_job

log = get_logger(__name__)

#: A series' job for the current version in these states is run again by re-analysis.
RERUNNABLE = frozenset({JobState.failed, JobState.quarantined})


class ReanalysisRefused(Exception):
    """The job cannot be re-analysed; the message says why and what to do instead."""


@dataclass(frozen=True)
class Reanalysis:
    job: int  # the job asked for (its state after: failed if it was waiting, else unchanged)
    new_job: int  # the series' job for ``model_version``, queued
    model_version: str
    run: int
    published: bool  # distributed mode: handed to the broker now (else the relay does, later)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def stale_queued_jobs(session: Session, model_version: str) -> list[int]:
    """Ids of the jobs waiting to run for another model version than ``model_version``."""
    query = select(Job.id).where(Job.state == JobState.queued, Job.model_version != model_version).order_by(Job.id)
    return list(session.scalars(query))


def reanalyze_job(settings: Settings, sessions: sessionmaker[Session], job_id: int, model_version: str) -> Reanalysis:
    """Queue job ``job_id``'s series for ``model_version`` (see the module); ReanalysisRefused
    when the job does not exist, is already of that version, is held by a worker, or its
    series is no longer in the spool."""
    with transaction(sessions) as session:
        old = session.get(Job, job_id, with_for_update=True)  # a worker's claim waits (PostgreSQL)
        if old is None:
            raise ReanalysisRefused(f"job {job_id} does not exist")
        if old.model_version == model_version:
            raise ReanalysisRefused(
                f"job {job_id} is already for model {model_version}; `meddet retry {job_id}` runs a failed one again"
            )
        if JobState(old.state) in IN_FLIGHT:
            raise ReanalysisRefused(
                f"job {job_id} is {JobState(old.state).value}: a worker holds it; try again when it has finished"
            )
        series = session.get(Series, old.series_id)
        assert series is not None  # a job's series row is never deleted before the job
        files = latest_instance_files(session, series.id)
        missing = [p for p in files if not p.is_file()]
        if not files or missing:
            gone = f"{len(missing)} of {len(files)}" if files else "all"
            raise ReanalysisRefused(
                f"job {job_id}: {gone} of its series' spooled instances are gone (retention or prune); "
                "re-send the series from the PACS"
            )
        current = jobs.job_of(session, series.series_instance_uid, model_version)
        if current is not None and JobState(current.state) not in (JobState.queued, *RERUNNABLE):
            raise ReanalysisRefused(
                f"job {job_id}: its series already has job {current.id} for model {model_version} "
                f"({JobState(current.state).value})"
            )
        new = jobs.enqueue_series(session, series, model_version)
        if JobState(old.state) is JobState.queued:
            jobs.transition(
                session, old, JobState.failed, f"superseded: series re-analysed as job {new.id} with {model_version}"
            )
        new_id, run = new.id, new.run
    published = publish_job(settings, sessions, new_id)
    return Reanalysis(job_id, new_id, model_version, run, published)


def reanalyze_stale(settings: Settings, sessions: sessionmaker[Session], model_version: str) -> list[Reanalysis]:
    """Every job waiting for another model version, moved to ``model_version`` (``meddet serve``
    in embedded mode at start-up: its one worker runs only that version). Each move is logged;
    a refused job (its series no longer spooled) is left as it is, with a warning."""
    with sessions() as session:
        stale = stale_queued_jobs(session, model_version)
    moved = []
    for job_id in stale:
        try:
            done = reanalyze_job(settings, sessions, job_id, model_version)
        except ReanalysisRefused as exc:
            log.warning("stale_job_not_reanalysed", job_id=job_id, reason=str(exc))
            continue
        log.info("stale_job_reanalysed", job_id=job_id, new_job=done.new_job, model_version=model_version)
        moved.append(done)
    return moved
