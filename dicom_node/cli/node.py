"""Node commands: serve, config, db, audit, spool."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dicom_node.cli import app, print_rows, state
from dicom_node.config import masked_values, setting_sources

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from dicom_node.audit.models import Series
    from dicom_node.config import Settings

config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
db_app = typer.Typer(help="Audit database: schema (Alembic) and retention.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Print every setting, its value, and where it came from (env, toml or default).

    Passwords in URLs (database, broker) are shown as ***.
    """
    settings = state(ctx).settings
    values = masked_values(settings)
    sources = setting_sources(settings, state(ctx).config_file)
    if as_json:
        typer.echo(json.dumps({k: {"value": v, "source": sources[k]} for k, v in values.items()}, indent=2))
        return
    table = Table("setting", "value", "source", title="meddet settings")
    for name, value in values.items():
        table.add_row(f"MEDDET_{name.upper()}", json.dumps(value), sources[name])
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Create or migrate the audit database to the latest schema."""
    from migrations import upgrade

    settings = state(ctx).settings
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"audit database at revision {revision}")


@db_app.command("prune")
def db_prune(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option("--older-than", help="Age (90d, 12w, 36h) or a date (2026-01-01)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would go; delete nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Delete audit rows, results folders and failed jobs' spools older than --older-than.

    Finished jobs (with events, outbox rows, send attempts), idle series without jobs, closed
    associations, quarantine and cleanup records; each prune is recorded (`cleanup`, kind prune).
    """
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.audit.queries import parse_since
    from dicom_node.prune import prune

    settings = state(ctx).settings
    try:
        cutoff = parse_since(older_than)
        assert cutoff is not None
        factory = make_session_factory(make_engine(settings.effective_database_url))
        report = prune(settings, factory, cutoff, dry_run=dry_run)
    except ValueError as exc:
        typer.secho(f"db prune: {str(exc).replace('--since', '--older-than')}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    typer.echo(("would delete " if dry_run else "deleted ") + report.summary())
    for folder in report.folders:
        typer.echo(f"  {folder.kind}: {folder.path} ({folder.size_bytes} bytes)")


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the node: DICOM SCP, series assembly and job dispatch (embedded worker by default).

    Embedded mode (no MEDDET_BROKER_URL) runs the detector on an in-process worker thread with
    SQLite under MEDDET_DATA_DIR; with a broker, jobs go to `meddet worker` processes.
    Stops cleanly on SIGTERM/SIGINT: open associations finish (or are aborted after 30 s).
    """
    import signal

    import detector
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.jobs import enqueue_series
    from dicom_node.metrics import Metrics, serve_metrics
    from dicom_node.node import Node
    from dicom_node.outbox import make_sweeper
    from dicom_node.retention import RetentionLoop
    from migrations import upgrade
    from worker.dispatch import make_dispatcher

    settings = state(ctx).settings
    upgrade(settings.effective_database_url)
    factory = make_session_factory(make_engine(settings.effective_database_url))
    metrics = Metrics()
    if settings.metrics_port is not None:
        serve_metrics(settings.metrics_port, metrics.registry, settings.metrics_host)
    model_version = detector.model_version(settings.checkpoint)
    _move_stale_jobs(settings, factory, model_version)
    dispatcher = make_dispatcher(settings, factory, metrics)

    def after_commit(completed: list[Series]) -> None:
        metrics.series_completed.inc(len(completed))
        dispatcher.notify()

    def on_selected(session: Session, series: Series) -> None:
        enqueue_series(session, series, model_version)

    node = Node(
        settings,
        factory,
        on_selected=on_selected,
        after_commit=after_commit,
        count_instance=lambda outcome: metrics.instances_received.labels(outcome=outcome).inc(),
    )
    retention = RetentionLoop(settings, factory)
    sweeper = make_sweeper(settings, factory, dispatcher.notify)

    def shutdown(signum: int, _frame: object) -> None:
        typer.echo(f"received signal {signum}, stopping", err=True)
        node.stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    dispatcher.start()
    node.start()
    retention.start()
    sweeper.start()
    web = None
    if settings.console_port:  # 0 = no web console
        from dicom_node.cli.console import job_operations
        from dicom_node.console.server import ConsoleThread

        try:
            web = ConsoleThread(
                settings, factory, model_version, metrics.registry, job_operations(model_version)
            ).start()
        except RuntimeError as exc:  # the node receives anyway; the console is an extra
            typer.secho(f"web console not started: {exc}", fg="yellow", err=True)
    mode = "embedded worker" if settings.embedded else "broker"
    typer.echo(
        f"MedDet node {settings.ae_title} listening on {settings.host}:{node.port} "
        f"({mode}, model {model_version}, data in {settings.data_dir})",
        err=True,
    )
    if web is not None:
        scheme = "https" if settings.console_tls_cert else "http"
        typer.echo(f"web console on {scheme}://{settings.console_host}:{settings.console_port}/", err=True)
    node.wait()
    if web is not None:
        web.stop()
    sweeper.stop()
    retention.stop()
    dispatcher.stop()


audit_app = typer.Typer(help="Admin queries on the audit database.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

SinceOpt = Annotated[str | None, typer.Option("--since", help="e.g. 30m, 2h, 7d, or an ISO time")]
StatusOpt = Annotated[str | None, typer.Option("--status", help="Only rows in this state")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
LimitOpt = Annotated[int, typer.Option("--limit", help="At most this many rows")]


def _move_stale_jobs(settings: Settings, sessions: sessionmaker[Session], model_version: str) -> None:
    """Jobs queued for another model version (before an upgrade) can never run here: in
    embedded mode this node's worker is the only one, so they move to its model; with a broker,
    workers of the old version may still be draining them, so the admin is told the command."""
    from worker.reanalysis import reanalyze_stale, stale_queued_jobs

    if settings.embedded:
        for moved in reanalyze_stale(settings, sessions, model_version):
            typer.echo(
                f"job {moved.job} was queued for another model: its series queued as job {moved.new_job}", err=True
            )
        return
    with sessions() as session:
        stale = stale_queued_jobs(session, model_version)
    if stale:
        typer.secho(
            f"{len(stale)} queued job(s) are for another model version than {model_version}; once no worker "
            "of that version is left, `meddet reanalyze --queued` moves them to this one",
            fg="yellow",
            err=True,
        )


def _query(
    ctx: typer.Context, fn: Callable[..., list[dict[str, Any]]], title: str, as_json: bool, **kwargs: Any
) -> None:
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.audit.queries import parse_since

    settings = state(ctx).settings
    try:
        if "since" in kwargs:
            kwargs["since"] = parse_since(kwargs["since"])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    factory = make_session_factory(make_engine(settings.effective_database_url))
    with factory() as session:
        print_rows(fn(session, **kwargs), title, as_json)


@audit_app.command("series")
def audit_series(
    ctx: typer.Context,
    since: SinceOpt = None,
    status: StatusOpt = None,
    as_json: JsonOpt = False,
    limit: LimitOpt = 100,
) -> None:
    """Received series: state (receiving, selected, skipped), counts, the rule that failed."""
    from dicom_node.audit.queries import series_rows

    _query(ctx, series_rows, "series", as_json, since=since, status=status, limit=limit)


@audit_app.command("jobs")
def audit_jobs(
    ctx: typer.Context,
    since: SinceOpt = None,
    status: StatusOpt = None,
    as_json: JsonOpt = False,
    limit: LimitOpt = 100,
) -> None:
    """Jobs: series, model version, state, retries and the reason of a failure."""
    from dicom_node.audit.queries import job_rows

    _query(ctx, job_rows, "jobs", as_json, since=since, status=status, limit=limit)


@audit_app.command("job")
def audit_job(ctx: typer.Context, job_id: int, as_json: JsonOpt = False) -> None:
    """The full history of one job: every state with its time, and every send attempt."""
    from dicom_node.audit.queries import job_history

    _query(ctx, job_history, f"history of job {job_id}", as_json, job_id=job_id)


@audit_app.command("associations")
def audit_associations(
    ctx: typer.Context,
    since: SinceOpt = None,
    status: StatusOpt = None,
    as_json: JsonOpt = False,
    limit: LimitOpt = 100,
) -> None:
    """Who connected: calling AE, address, times, counts, outcome (released/aborted/rejected)."""
    from dicom_node.audit.queries import association_rows

    _query(ctx, association_rows, "associations", as_json, since=since, status=status, limit=limit)


@audit_app.command("failures")
def audit_failures(ctx: typer.Context, since: SinceOpt = None, as_json: JsonOpt = False, limit: LimitOpt = 100) -> None:
    """What went wrong: quarantined instances, failed jobs, failed sends, with reasons."""
    from dicom_node.audit.queries import failure_rows

    _query(ctx, failure_rows, "failures", as_json, since=since, limit=limit)


spool_app = typer.Typer(help="The spool on disk.", no_args_is_help=True)
app.add_typer(spool_app, name="spool")


@spool_app.command("gc")
def spool_gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, remove nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove spool folders of finished series and old quarantine files (recorded in the DB)."""
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.retention import collect_garbage

    settings = state(ctx).settings
    factory = make_session_factory(make_engine(settings.effective_database_url))
    removals = collect_garbage(settings, factory, dry_run=dry_run)
    rows = [{"path": str(r.path), "kind": r.kind, "bytes": r.size_bytes, "reason": r.reason} for r in removals]
    print_rows(rows, "removals (dry run)" if dry_run else "removed", as_json)
