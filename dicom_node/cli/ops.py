"""Distributed-mode and operator commands: worker, resend, retry, reanalyze.

Heavy modules (celery, the pipeline, torch) are imported inside the commands.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dicom_node.cli import app, fail, state


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="Pool processes (one per GPU is typical)")] = 1,
    queues: Annotated[str, typer.Option(help="Queues to consume, comma-separated")] = "gpu",
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default: celery@host)")] = None,
    soft_time_limit: Annotated[float, typer.Option(help="Seconds per job before it is stopped")] = 600.0,
    visibility_timeout: Annotated[
        float, typer.Option(help="Seconds before a lost worker's job is redelivered")
    ] = 3600.0,
    retry_backoff: Annotated[float, typer.Option(help="First retry delay in seconds (doubles)")] = 5.0,
) -> None:
    """Run a Celery worker (distributed mode): consumes jobs, runs the detector (CUDA if present)."""
    settings = state(ctx).settings
    if settings.embedded:
        fail("meddet worker needs MEDDET_BROKER_URL (Redis); embedded mode runs in `meddet serve`", 2)
    from worker.app import WorkerOptions, run_worker

    options = WorkerOptions(
        soft_time_limit=soft_time_limit,
        time_limit=soft_time_limit + 60,
        visibility_timeout=visibility_timeout,
        retry_backoff=retry_backoff,
    )
    if settings.metrics_port is not None:
        from dicom_node.metrics import enable_multiprocess, serve_metrics

        registry = enable_multiprocess(settings.data_dir / "prometheus" / "worker")
        serve_metrics(settings.metrics_port, registry, settings.metrics_host)
    run_worker(
        settings,
        options,
        concurrency=concurrency,
        queues=queues,
        loglevel=settings.log_level,
        hostname=hostname,
    )


@app.command()
def resend(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(help="Job id (see `meddet audit jobs`)")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Send a job's stored results again to every destination (same SOP Instance UIDs).

    Only the latest run's results are sent. Exit code 2: refused, nothing sent (the job is not
    finished, a worker runs it, or its latest run wrote no results: `meddet retry` it);
    exit code 1: a destination could not take them.
    """
    from worker.context import build_context
    from worker.errors import PipelineError
    from worker.tasks import ResendRefused, resend_job

    context = build_context(state(ctx).settings)
    try:
        outcome = resend_job(context, job)
    except PipelineError as exc:
        code = 2 if isinstance(exc, ResendRefused) else 1
        outcome = "refused" if code == 2 else "error"
        if as_json:
            typer.echo(json.dumps({"job": job, "outcome": outcome, "reason": str(exc)}))
            raise typer.Exit(code) from exc
        fail(f"job {job}: {exc}", code)
    typer.echo(json.dumps({"job": job, "outcome": outcome}) if as_json else f"job {job}: {outcome}")


@app.command()
def retry(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(help="Job id of a failed or quarantined job")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Queue a failed (or quarantined) job again; the node's dispatcher or a worker runs it."""
    from dicom_node.audit.db import make_engine, make_session_factory
    from worker.tasks import RetryRefused, retry_job

    settings = state(ctx).settings
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    try:
        result = retry_job(settings, sessions, job)
    except RetryRefused as exc:
        fail(str(exc), 1)
    if not settings.embedded and not result["published"]:
        typer.secho(f"job {job}: broker unavailable; the node's relay publishes it later", fg="yellow", err=True)
    typer.echo(json.dumps(result) if as_json else f"job {job}: queued (run {result['run']})")


@app.command()
def reanalyze(
    ctx: typer.Context,
    job_ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="[JOB]...", help="Job ids (see `meddet audit jobs`)", show_default=False),
    ] = None,
    queued: Annotated[
        bool, typer.Option("--queued", help="Every job waiting to run for another model version than this node's")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output, one line per job")] = False,
) -> None:
    """Analyse a job's series again with the model this node runs now (MEDDET_CHECKPOINT).

    For jobs of another model version: queued before an upgrade, or failed with "this worker
    runs model ...". The series is queued from the spool as a new job for the current version;
    an old job still waiting is marked failed ("superseded"), finished ones keep their results.
    Exit code 2: a job was refused (no such job, already this version, held by a worker, or its
    series is no longer spooled: re-send it from the PACS); the others are still queued.
    """
    import detector
    from dicom_node.audit.db import make_engine, make_session_factory
    from worker.reanalysis import ReanalysisRefused, reanalyze_job, stale_queued_jobs

    settings = state(ctx).settings
    if not job_ids and not queued:
        fail("name the jobs to re-analyse, or --queued for every job waiting for another model version")
    version = detector.model_version(settings.checkpoint)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    ids = list(job_ids or [])
    if queued:
        with sessions() as session:
            ids += [i for i in stale_queued_jobs(session, version) if i not in ids]
    refused = 0
    for job_id in ids:
        try:
            done = reanalyze_job(settings, sessions, job_id, version).to_dict()
        except ReanalysisRefused as exc:
            refused += 1
            done = {"job": job_id, "outcome": "refused", "reason": str(exc)}
            if not as_json:
                typer.secho(f"Error: {exc}", fg="red", err=True)
                continue
        if as_json:
            typer.echo(json.dumps(done))
        else:
            typer.echo(f"job {job_id}: series queued as job {done['new_job']} (run {done['run']}) for {version}")
    if not ids:
        typer.echo(f"no job is waiting for another model version than {version}")
    if refused:
        raise typer.Exit(2)
