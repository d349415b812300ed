"""The ``meddet`` command line: the one place that loads settings and wires packages together.

Each command group lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dicom_node.config import Settings, describe_config_error, load_settings
from dicom_node.logging import configure_logging

app = typer.Typer(
    name="meddet",
    help="MedDet Node: a DICOM node that finds cervical disc herniations in sagittal T2 MRI.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


@dataclass
class CliState:
    """Per-invocation state: settings are loaded on first use, once."""

    config_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except (ValueError, FileNotFoundError) as exc:
                typer.secho(f"Configuration error: {describe_config_error(exc)}", fg="red", err=True)
                raise typer.Exit(2) from exc
            configure_logging(self._settings.log_level, self._settings.log_json)
        return self._settings


def fail(message: str, code: int = 2) -> NoReturn:
    """A clear error for bad input, no traceback: ``Error: message`` in red on stderr, then exit
    with ``code`` (2: the command was used wrongly; 1: it ran and failed)."""
    typer.secho(f"Error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def print_rows(rows: list[dict[str, Any]], title: str, as_json: bool) -> None:
    """Rows as a table (``title``; "no <title>" when empty), or as JSON with ``as_json``."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no {title}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*rows[0].keys(), title=title)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    Console(width=200).print(table)


def state(ctx: typer.Context) -> CliState:
    obj: Any = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (keys as in `meddet config show`)"),
    ] = None,
) -> None:
    ctx.obj = CliState(config_file=config)


def main() -> None:
    from dicom_node.cli import calibrate, console, data, demo, discs, distill, ml, node, ops  # noqa: F401  (commands register)

    app()
