"""Distributed-mode and operator commands: worker, resend, retry.

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
