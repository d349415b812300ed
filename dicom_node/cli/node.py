"""Node commands: serve, config, db, audit, spool."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dicom_node.cli import app, state
from dicom_node.config import setting_sources

config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
db_app = typer.Typer(help="Audit database schema (Alembic).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Print every setting, its value, and where it came from (env, toml or default)."""
    settings = state(ctx).settings
    values = settings.model_dump(mode="json")
    sources = setting_sources(settings)
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
