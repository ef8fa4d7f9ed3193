"""Commands that read a run back: ``status``, ``export`` and ``report``."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from common.constants import LATEST
from common.errors import ConfigError
from producer.cli.app import app, console, errors, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    parquet = "parquet"
    #: OpenAI Batch output lines (``producer.openai_export``).
    openai = "openai"


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
DEFAULT_NAMES = {
    ExportFormat.jsonl: Path("results.jsonl"),
    ExportFormat.json: Path("summary.json"),
    ExportFormat.csv: Path("results.csv"),
    ExportFormat.parquet: Path("results.parquet"),
    ExportFormat.openai: Path("batch_output.jsonl"),
}


@app.command()
def export(
    run_ref: Annotated[str, typer.Argument(help="Run id, or 'latest'.")] = LATEST,
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.jsonl,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (default results.jsonl, summary.json, results.csv or "
            "results.parquet by format); '-' writes to standard output (not parquet). "
            "A file of another kind is never overwritten.",
        ),
    ] = None,
    with_prompts: Annotated[
        bool,
        typer.Option(
            help="Each line's rendered_prompt, as the model got it (the run must have been "
            "made with --keep-prompts)."
        ),
    ] = False,
    errors_file: Annotated[
        Path | None,
        typer.Option(
            "--errors",
            help="--format openai: file for the failed requests (default: the output file).",
        ),
    ] = None,
) -> None:
    """Write a run's results (jsonl, csv, parquet: one per item and lane), summary (json),
    or OpenAI Batch output (openai: one per request, in input order)."""
    from common.db import make_engine
    from producer.export import stream_jsonl, summary, summary_text, write_json, write_jsonl

    db = make_engine(load_settings().sqlalchemy_url)
    if format is ExportFormat.openai:
        _export_openai(db, run_ref, output, errors_file)
        return
    if errors_file is not None:
        raise ConfigError("--errors is for --format openai")
    if format in (ExportFormat.csv, ExportFormat.parquet):
        _export_table(db, run_ref, format, output)
        return
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


def _export_table(db: Engine, run_ref: str, format: ExportFormat, output: str | None) -> None:
    """``--format csv`` or ``parquet``: the JSONL export's records as a table."""
    from producer.export_tables import stream_csv, write_csv, write_parquet

    if output == "-":
        if format is ExportFormat.parquet:
            raise ConfigError("parquet cannot be written to standard output: give -o FILE")
        count = stream_csv(db, run_ref=run_ref, out=sys.stdout)
        sys.stdout.flush()
        errors.print(f"{count} records written to standard output")
        return
    path = Path(output) if output else DEFAULT_NAMES[format]
    writer = write_csv if format is ExportFormat.csv else write_parquet
    count = writer(db, run_ref=run_ref, path=path)
    errors.print(f"{count} records written to {path}")


@app.command()
def report(
    run_ref: Annotated[str, typer.Argument(help="Run id, or 'latest'.")] = LATEST,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="HTML file to write; only a fleet report is ever replaced."
        ),
    ] = Path("report.html"),
) -> None:
    """Write a run's report: one self-contained HTML page (opens offline; partial while running)."""
    from common.db import make_engine
    from producer.report import write_report

    path = write_report(make_engine(load_settings().sqlalchemy_url), run_ref, output)
    console.print(f"report: {path}")


def _export_openai(db: Engine, run_ref: str, output: str | None, errors_file: Path | None) -> None:
    """``fleet export --format openai``: responses to the output, failures to --errors."""
    from producer.openai_export import described, stream_openai, write_openai

    if output == "-":
        if errors_file is None:
            written = stream_openai(db, run_ref=run_ref, out=sys.stdout, errors_out=sys.stdout)
        else:
            with errors_file.open("w", encoding="utf-8") as errors_out:
                written = stream_openai(db, run_ref=run_ref, out=sys.stdout, errors_out=errors_out)
        sys.stdout.flush()
        errors.print(f"{written.responses} responses, {written.errors} errors")
        return
    path = Path(output) if output else DEFAULT_NAMES[ExportFormat.openai]
    written = write_openai(db, run_ref=run_ref, output=path, errors=errors_file)
    errors.print(described(written, path, errors_file))
