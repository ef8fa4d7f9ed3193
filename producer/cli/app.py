"""The ``fleet`` Typer app, its consoles and the entry point.

Commands live in the sibling modules, one area each; they register themselves on
``app`` when ``producer.cli`` imports them.
"""

from __future__ import annotations

import gc

import typer
from rich.console import Console
from rich.markup import escape

from common.errors import FleetError
from common.settings import load_settings

app = typer.Typer(
    name="fleet",
    help="Batch inference on Celery, Redis and SQL: enqueue, run, watch, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# No wrapping of printed lines: a path or a command must stay whole, to copy and to grep.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

__all__ = ["app", "console", "errors", "load_settings", "main"]


def main() -> None:
    """Entry point: run the CLI, turning FleetErrors into one clear message."""
    try:
        app()
    except FleetError as error:
        errors.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        raise SystemExit(2) from None
    finally:
        # The command is done: spare the exit a full collection over every object of
        # every module imported (SQLAlchemy, Celery, pydantic), 0.3 s and more.
        gc.freeze()
