"""Commands that read a run back: ``status`` and ``export``."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from common.constants import LATEST
from producer.cli.app import app, console, errors, load_settings


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"


@app.command()
def status(
    run_ref: Annotated[
        str | None, typer.Argument(help="Run id or 'latest'; none lists runs.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow until it ends.")] = False,
) -> None:
    """Show a run's progress (or, with no RUN, the recent runs)."""
    from common.db import make_engine
    from producer.status import describe, read_progress, runs_table
    from producer.status import watch as watch_run

    db = make_engine(load_settings().sqlalchemy_url)
    if run_ref is None:
        console.print(runs_table(db))
    elif watch:
        watch_run(db, run_ref, console=console)
    else:
        run_id, state = read_progress(db, run_ref)
        console.print(
            f"{run_id}  {state.done}/{state.expected}  {describe(state)}  "
            f"slices {state.slices_done}/{state.slices_total}"
        )


#: Where ``fleet export`` writes without ``-o``: each format its own file.
DEFAULT_NAMES = {ExportFormat.jsonl: Path("results.jsonl"), ExportFormat.json: Path("summary.json")}


@app.command()
def export(
    run_ref: Annotated[str, typer.Argument(help="Run id, or 'latest'.")] = LATEST,
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.jsonl,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (default results.jsonl, or summary.json for --format json); "
            "'-' writes to standard output. A file of the other kind is never overwritten.",
        ),
    ] = None,
    with_prompts: Annotated[
        bool,
        typer.Option(
            help="Each line's rendered_prompt, as the model got it (the run must have been "
            "made with --keep-prompts)."
        ),
    ] = False,
) -> None:
    """Write a run's results (jsonl, one per item and lane) or summary (json)."""
    from common.db import make_engine
    from producer.export import stream_jsonl, summary, summary_text, write_json, write_jsonl

    db = make_engine(load_settings().sqlalchemy_url)
    if output == "-":
        if format is ExportFormat.jsonl:
            count = stream_jsonl(db, run_ref=run_ref, out=sys.stdout, with_prompts=with_prompts)
            errors.print(f"{count} records written to standard output")
        else:
            sys.stdout.write(summary_text(summary(db, run_ref=run_ref)))
        sys.stdout.flush()
        return
    path = Path(output) if output else DEFAULT_NAMES[format]
    if format is ExportFormat.jsonl:
        count = write_jsonl(db, run_ref=run_ref, path=path, with_prompts=with_prompts)
        errors.print(f"{count} records written to {path}")
    else:
        write_json(db, run_ref=run_ref, path=path)
        errors.print(f"summary written to {path}")
