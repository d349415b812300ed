"""Web console commands: ``meddet console`` and ``meddet user add|list|remove|token|unlock|password``."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from dicom_node.cli import app, print_rows, state

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from dicom_node.config import Settings
    from dicom_node.console.actions import Operations, Outcome

T = TypeVar("T")

user_app = typer.Typer(help="Users of the web console (admins and radiologists).", no_args_is_help=True)
app.add_typer(user_app, name="user")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _sessions(ctx: typer.Context) -> sessionmaker[Session]:
    from dicom_node.audit.db import make_engine, make_session_factory
    from migrations import upgrade

    settings = state(ctx).settings
    upgrade(settings.effective_database_url)  # a fresh install: `meddet user add` comes first
    return make_session_factory(make_engine(settings.effective_database_url))


def _operator() -> str:
    """Who ran the command, for the action log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _read_password(confirm: bool = True) -> str:
    """From a prompt on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != first:
            typer.secho("the passwords differ", fg="red", err=True)
            raise typer.Exit(2)
        return first
    return sys.stdin.readline().rstrip("\r\n")


def job_operations(model_version: str) -> Operations:
    """The worker's retry, resend and re-analysis (with ``model_version``, the node's), as the
    console's :class:`Operations` (the CLI is the one place that wires the console to the worker)."""
    from dicom_node.console.actions import Operations, Outcome
    from dicom_node.metrics import Metrics
    from worker.context import RetryPolicy, WorkerContext
    from worker.errors import PipelineError
    from worker.reanalysis import ReanalysisRefused, reanalyze_job
    from worker.tasks import resend_job, retry_job

    def retry(settings: Settings, sessions: sessionmaker[Session], job_id: int, who: str) -> Outcome:
        try:
            result = retry_job(settings, sessions, job_id, f"retry requested by {who} (console)")
        except PipelineError as exc:
            return Outcome(False, str(exc))
        note = "" if settings.embedded or result["published"] else "; broker down, published later"
        return Outcome(True, f"job {job_id} queued (run {result['run']}){note}")

    def resend(settings: Settings, sessions: sessionmaker[Session], job_id: int, who: str) -> Outcome:
        context = WorkerContext(settings, sessions, Metrics(), retry=RetryPolicy(max_retries=settings.send_retries))
        try:
            return Outcome(True, f"job {job_id} results sent again: {resend_job(context, job_id)}")
        except PipelineError as exc:
            return Outcome(False, str(exc))

    def reanalyze(settings: Settings, sessions: sessionmaker[Session], job_id: int, who: str) -> Outcome:
        try:
            done = reanalyze_job(settings, sessions, job_id, model_version)
        except ReanalysisRefused as exc:
            return Outcome(False, str(exc))
        return Outcome(True, f"job {job_id}: series queued as job {done.new_job} (run {done.run}) for {model_version}")

    return Operations(retry, resend, reanalyze)


def _run(fn: Callable[[], T]) -> T:
    from dicom_node.console.users import UserError

    try:
        return fn()
    except UserError as exc:
        typer.secho(f"user: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name")],
    role: Annotated[str, typer.Option("--role", help="admin or radiologist")] = "radiologist",
) -> None:
    """Add a user; the password comes from a prompt, or from stdin when piped (8+ characters).

    Stored as an argon2 hash. Radiologists see series, findings and previews; admins also see
    associations, failures and settings, and may retry, resend, release and delete.
    """
    from dicom_node.console import users

    if role not in ("admin", "radiologist"):
        typer.secho("--role: admin or radiologist", fg="red", err=True)
        raise typer.Exit(2)
    sessions = _sessions(ctx)
    password = _read_password()
    _run(lambda: users.add_user(sessions, name, role, password, by=_operator()))
    typer.echo(f"user {name} added ({role})")


@user_app.command("list")
def user_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Users, their role, last login, lock-out and number of API tokens."""
    from dicom_node.console import users

    print_rows(users.list_users(_sessions(ctx)), "users", as_json)


@user_app.command("remove")
def user_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Remove a user, with their API tokens and open sessions."""
    from dicom_node.console import users

    sessions = _sessions(ctx)
    _run(lambda: users.remove_user(sessions, name, by=_operator()))
    typer.echo(f"user {name} removed")


@user_app.command("password")
def user_password(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Set a new password (prompt or stdin); ends the user's sessions and any lock-out."""
    from dicom_node.console import users

    sessions = _sessions(ctx)
    password = _read_password()
    _run(lambda: users.set_password(sessions, name, password, by=_operator()))
    typer.echo(f"password of {name} changed")


@user_app.command("unlock")
def user_unlock(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """End a lock-out after repeated wrong passwords."""
    from dicom_node.console import users

    sessions = _sessions(ctx)
    _run(lambda: users.unlock_user(sessions, name, by=_operator()))
    typer.echo(f"user {name} unlocked")


@user_app.command("token")
def user_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke all of the user's tokens instead")] = False,
) -> None:
    """Print a new API token for NAME (shown once): `Authorization: Bearer <token>` on /api/."""
    from dicom_node.console import users

    sessions = _sessions(ctx)
    if revoke:
        n = _run(lambda: users.revoke_tokens(sessions, name, by=_operator()))
        typer.echo(f"revoked {n} token(s) of {name}")
        return
    typer.echo(_run(lambda: users.new_token(sessions, name, by=_operator())))


@app.command()
def console(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address (default MEDDET_CONSOLE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MEDDET_CONSOLE_PORT)")] = None,
) -> None:
    """Run the web console alone (`meddet serve` runs it too), e.g. beside a distributed node.

    Same audit DB (MEDDET_DATABASE_URL) and data folder as the node; users: `meddet user add`.
    """
    import detector
    from dicom_node.console.server import serve_forever

    settings = state(ctx).settings
    updates = {k: v for k, v in {"console_host": host, "console_port": port}.items() if v is not None}
    if updates:
        settings = settings.model_copy(update=updates)
    if settings.console_port == 0:
        typer.secho("console port is 0 (off): set MEDDET_CONSOLE_PORT or --port", fg="red", err=True)
        raise typer.Exit(2)
    sessions = _sessions(ctx)
    scheme = "https" if settings.console_tls_cert else "http"
    typer.echo(f"MedDet console on {scheme}://{settings.console_host}:{settings.console_port}/", err=True)
    version = detector.model_version(settings.checkpoint)
    serve_forever(settings, sessions, version, job_operations(version))
