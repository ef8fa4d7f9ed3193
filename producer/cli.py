"""The ``fleet`` command line: enqueue, run, status, export, resume, demo-model.

Each command builds the settings, does its one job through the modules that own
it, and turns a FleetError into a clear message and exit code 2.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from common.constants import DEFAULT_QUEUE, LATEST
from common.db import make_engine
from common.errors import ConfigError, FleetError
from common.runconfig import Batching, Generation, RunConfig
from common.settings import Settings

if TYPE_CHECKING:
    from producer.runner import RunOutcome

app = typer.Typer(
    name="fleet",
    help="Batch inference on Celery, Redis and SQL: enqueue, run, watch, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"


InputPath = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Input JSONL file.")
]
Models = Annotated[
    list[str], typer.Option("--model", "-m", help="Model path or hub id; repeat for more lanes.")
]
Engine = Annotated[str, typer.Option(help="Inference engine: hf or echo.")]
Template = Annotated[
    str | None,
    typer.Option(help='Prompt template, e.g. "Context: {context}\\nQuestion: {query}\\nAnswer:".'),
]
MaxNewTokens = Annotated[int | None, typer.Option(min=1, help="Tokens to generate per item.")]
Temperature = Annotated[float, typer.Option(min=0.0, help="0 means greedy.")]
TopP = Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")]
Seed = Annotated[int | None, typer.Option(help="Sampling seed.")]
BatchSize = Annotated[int | None, typer.Option(min=1, help="Most prompts per forward batch.")]
MaxBatchTokens = Annotated[
    int | None, typer.Option(min=1, help="Most tokens per batch (padded prompts + new tokens).")
]
SliceSize = Annotated[int | None, typer.Option(min=1, help="Items per slice (one task).")]
SkipInvalid = Annotated[
    bool, typer.Option(help="Enqueue the valid records and record the rejects as failed items.")
]
ReferenceField = Annotated[str | None, typer.Option(help="Field holding the reference answer.")]
Dtype = Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16.")]
Queue = Annotated[str, typer.Option(help="Broker queue the run's slices go to.")]
RunRef = Annotated[str, typer.Argument(help="Run id, or 'latest'.")]


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(f"bad FLEET_* setting: {error}") from error


def _run_config(
    settings: Settings,
    *,
    engine: str,
    models: list[str],
    template: str | None,
    max_new_tokens: int | None,
    temperature: float,
    top_p: float,
    seed: int | None,
    batch_size: int | None,
    max_batch_tokens: int | None,
    slice_size: int | None,
    dtype: str | None,
) -> RunConfig:
    from worker.engines import ENGINES

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if not models:
        raise ConfigError("give at least one --model")
    return RunConfig(
        engine=engine,
        models=[_model_ref(engine, model) for model in models],
        template=template,
        generation=Generation(
            max_new_tokens=max_new_tokens or settings.max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        ),
        batching=Batching(
            batch_size=batch_size or settings.batch_size,
            max_batch_tokens=max_batch_tokens or settings.max_batch_tokens,
        ),
        slice_size=slice_size or settings.slice_size,
        dtype=dtype or settings.dtype,
    )


def _model_ref(engine: str, model: str) -> str:
    """A local checkpoint becomes an absolute path, so workers anywhere find it."""
    path = Path(model).expanduser()
    if engine == "hf" and path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"--model {model}: a folder without config.json is no checkpoint")
        return str(path.resolve())
    if engine == "hf" and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise ConfigError(f"--model {model}: no such checkpoint folder")
    return model


@app.command()
def enqueue(
    input_path: InputPath,
    model: Models,
    engine: Engine = "hf",
    template: Template = None,
    max_new_tokens: MaxNewTokens = None,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    batch_size: BatchSize = None,
    max_batch_tokens: MaxBatchTokens = None,
    slice_size: SliceSize = None,
    dtype: Dtype = None,
    skip_invalid: SkipInvalid = False,
    reference_field: ReferenceField = None,
    queue: Queue = DEFAULT_QUEUE,
) -> None:
    """Validate INPUT, store its run in SQL and publish one task per slice."""
    from producer.enqueue import create_run
    from producer.publish import publish_run
    from worker.app import create_app

    settings = _settings()
    if settings.broker_url is None:
        raise ConfigError("FLEET_BROKER_URL is not set (use `fleet run` for the embedded mode)")
    config = _run_config(
        settings,
        engine=engine,
        models=model,
        template=template,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        slice_size=slice_size,
        dtype=dtype,
    )
    db = make_engine(settings.sqlalchemy_url)
    enqueued = create_run(
        db,
        input_path=input_path,
        config=config,
        queue=queue,
        skip_invalid=skip_invalid,
        reference_field=reference_field,
    )
    publish_run(db, create_app(settings), run_id=enqueued.run_id)
    errors.print(
        f"{enqueued.items} items ({enqueued.rejected} rejected), {enqueued.slices} slices "
        f"on queue '{queue}'"
    )
    print(enqueued.run_id)


@app.command()
def run(
    input_path: InputPath,
    model: Models,
    engine: Engine = "hf",
    template: Template = None,
    max_new_tokens: MaxNewTokens = None,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    batch_size: BatchSize = None,
    max_batch_tokens: MaxBatchTokens = None,
    slice_size: SliceSize = None,
    dtype: Dtype = None,
    skip_invalid: SkipInvalid = False,
    reference_field: ReferenceField = None,
    queue: Queue = DEFAULT_QUEUE,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    local_workers: Annotated[
        bool | None,
        typer.Option(help="Spawn local workers (default: yes unless FLEET_BROKER_URL is set)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for results.jsonl/summary.json.")
    ] = None,
) -> None:
    """Run INPUT end to end: embedded broker and SQLite unless configured, local workers."""
    from producer.runner import LocalFleet, run_job

    settings = _settings()
    config = _run_config(
        settings,
        engine=engine,
        models=model,
        template=template,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        slice_size=slice_size,
        dtype=dtype,
    )
    spawn = local_workers if local_workers is not None else settings.broker_url is None
    with LocalFleet(
        settings, workers=workers, spawn_workers=spawn, queue=queue, console=console
    ) as fleet:
        outcome = run_job(
            fleet,
            input_path=input_path,
            config=config,
            output_dir=output,
            skip_invalid=skip_invalid,
            reference_field=reference_field,
        )
    _report(outcome)


def _report(outcome: RunOutcome) -> None:
    _print_summary(outcome.overall)
    console.print(f"results: {outcome.jsonl} ({outcome.records} records)")
    console.print(f"summary: {outcome.summary}")
    if outcome.status != "completed":
        raise typer.Exit(1)


def _print_summary(overall: dict[str, float]) -> None:
    shown = (
        "results",
        "results_ok",
        "results_failed",
        "success_rate",
        "latency_mean_s",
        "latency_p95_s",
        "tokens_per_s",
        "items_per_s",
        "wall_time_s",
    )
    console.print("  ".join(f"{name}={overall.get(name, 0):.4g}" for name in shown))


@app.command()
def status(
    run_ref: Annotated[
        str | None, typer.Argument(help="Run id or 'latest'; none lists runs.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow until it ends.")] = False,
) -> None:
    """Show a run's progress (or, with no RUN, the recent runs)."""
    from producer.status import describe, read_progress, runs_table
    from producer.status import watch as watch_run

    db = make_engine(_settings().sqlalchemy_url)
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


@app.command()
def export(
    run_ref: RunRef = LATEST,
    format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.jsonl,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")] = Path(
        "results.jsonl"
    ),
) -> None:
    """Write a run's results (jsonl, one per item and lane) or summary (json)."""
    from producer.export import write_json, write_jsonl

    db = make_engine(_settings().sqlalchemy_url)
    if format is ExportFormat.jsonl:
        count = write_jsonl(db, run_ref=run_ref, path=output)
        errors.print(f"{count} records written to {output}")
    else:
        write_json(db, run_ref=run_ref, path=output)
        errors.print(f"summary written to {output}")


@app.command()
def resume(
    run_ref: RunRef = LATEST,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for results.jsonl/summary.json.")
    ] = None,
) -> None:
    """Re-publish the work orders of every slice not done (after a crash or Ctrl-C).

    With FLEET_BROKER_URL set, the fleet's workers take them. Without it (a run started
    by `fleet run` on the embedded default), the embedded broker and local workers are
    started again, the run is seen through, and its results are written.
    """
    from producer.publish import resume_run
    from producer.runner import LocalFleet, resume_job
    from worker.app import create_app

    settings = _settings()
    if settings.broker_url is not None:
        db = make_engine(settings.sqlalchemy_url)
        run_id, sent = resume_run(db, create_app(settings), run_ref=run_ref)
        errors.print(f"run {run_id}: {sent} work order(s) sent")
        return
    with LocalFleet(
        settings, workers=workers, spawn_workers=True, queue=DEFAULT_QUEUE, console=console
    ) as fleet:
        outcome = resume_job(fleet, run_ref=run_ref, output_dir=output)
    _report(outcome)


@app.command("demo-model")
def demo_model(
    target: Annotated[Path, typer.Argument(help="Folder to write the model into.")] = Path(
        ".fleet/demo-model"
    ),
) -> None:
    """Build a tiny real transformers model (random weights, local tokenizer), no download."""
    from producer.demo_model import build_demo_model

    path = build_demo_model(target)
    console.print(f"demo model written to {path}")


def main() -> None:
    """Entry point: run the CLI, turning FleetErrors into one clear message."""
    try:
        app()
    except FleetError as error:
        errors.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        raise SystemExit(2) from None
