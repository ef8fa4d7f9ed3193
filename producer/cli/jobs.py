"""Commands that start or continue a run: ``enqueue``, ``run``, ``resume``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from common.constants import DEFAULT_QUEUE, LATEST
from common.errors import ConfigError
from common.settings import Settings
from producer.cli.app import app, console, errors, load_settings
from producer.cli.options import JobOptions, job_command, run_config

if TYPE_CHECKING:
    from producer.runner import RunOutcome

InputPath = Annotated[
    Path | None,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        help="Input JSONL file, or a run file (.toml/.yaml) holding the options.",
    ),
]
RunRef = Annotated[str, typer.Argument(help="Run id, or 'latest'.")]
Workers = Annotated[int, typer.Option(min=1, help="Local worker processes.")]
Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="Folder for results.jsonl/summary.json.")
]


@app.command()
@job_command
def enqueue(
    input_path: InputPath = None,
    model_queues: Annotated[
        bool,
        typer.Option(
            help="Each model's slices on its own queue QUEUE.m.<model key>, for workers "
            "pinned with `fleet workers --model`."
        ),
    ] = False,
    *,
    options: JobOptions,
) -> None:
    """Validate INPUT, store its run in SQL and publish one task per slice."""
    from common.celery_app import create_app
    from common.db import make_engine
    from common.publish import publish_run
    from producer.enqueue import create_run

    settings = load_settings()
    if settings.broker_url is None:
        raise ConfigError("FLEET_BROKER_URL is not set (use `fleet run` for the embedded mode)")
    input_path, options = _with_run_file(input_path, options)
    config = run_config(settings, options)
    db = make_engine(settings.sqlalchemy_url)
    enqueued = create_run(
        db,
        input_path=input_path,
        config=config,
        queue=options.queue,
        skip_invalid=options.skip_invalid,
        reference_field=options.reference_field,
        model_queues=model_queues,
    )
    # If the broker stays away, PublishIncomplete says how many orders went out and that
    # `fleet resume RUN` sends the rest: the run is in SQL already.
    publish_run(db, create_app(settings), run_id=enqueued.run_id, retry_s=settings.publish_retry_s)
    errors.print(
        f"{enqueued.items} items ({enqueued.rejected} rejected), {enqueued.slices} slices "
        f"on queue '{options.queue}'"
    )
    print(enqueued.run_id)


@app.command()
@job_command
def run(
    input_path: InputPath = None,
    workers: Workers = 1,
    local_workers: Annotated[
        bool | None,
        typer.Option(help="Spawn local workers (default: yes unless FLEET_BROKER_URL is set)."),
    ] = None,
    output: Output = None,
    *,
    options: JobOptions,
) -> None:
    """Run INPUT end to end: embedded broker and SQLite unless configured, local workers."""
    from producer.runner import LocalFleet, local_worker_count, preload_env, run_job

    settings = load_settings()
    input_path, options = _with_run_file(input_path, options)
    config = run_config(settings, options)
    spawn = local_workers if local_workers is not None else settings.broker_url is None
    # The workers start (and load the model) while this process validates and enqueues.
    with LocalFleet(
        settings,
        workers=local_worker_count(workers, input_path=input_path, config=config),
        spawn_workers=spawn,
        queue=options.queue,
        console=console,
        preload=preload_env(config),
    ) as fleet:
        outcome = run_job(
            fleet,
            input_path=input_path,
            config=config,
            output_dir=output,
            skip_invalid=options.skip_invalid,
            reference_field=options.reference_field,
        )
    _report(outcome)


@app.command()
def resume(run_ref: RunRef = LATEST, workers: Workers = 1, output: Output = None) -> None:
    """Re-publish the work orders of every slice not done (after a crash or Ctrl-C).

    With FLEET_BROKER_URL set, the fleet's workers take them. Without it (a run started
    by `fleet run` on the embedded default), the embedded broker and local workers are
    started again, the run is seen through, and its results are written.
    """
    settings = load_settings()
    see_through(settings, run_ref=run_ref, workers=workers, output=output)


def see_through(settings: Settings, *, run_ref: str, workers: int, output: Path | None) -> None:
    """Send the work orders a run still owes; without a broker, also run them to the end.

    With FLEET_BROKER_URL set, the fleet's workers take them. Without it, the embedded
    broker and ``workers`` local workers are started, and the results are written.
    """
    from common.celery_app import create_app
    from common.db import make_engine
    from common.publish import resume_run
    from producer.runner import LocalFleet, resume_job

    if settings.broker_url is not None:
        db = make_engine(settings.sqlalchemy_url)
        run_id, sent = resume_run(
            db, create_app(settings), run_ref=run_ref, retry_s=settings.publish_retry_s
        )
        errors.print(f"run {run_id}: {sent} work order(s) sent")
        return
    with LocalFleet(
        settings, workers=workers, spawn_workers=True, queue=DEFAULT_QUEUE, console=console
    ) as fleet:
        outcome = resume_job(fleet, run_ref=run_ref, output_dir=output)
    _report(outcome)


def _with_run_file(input_path: Path | None, options: JobOptions) -> tuple[Path | None, JobOptions]:
    """INPUT as given, or the run file's INPUT and options (the command line on top)."""
    from producer.runfile import is_run_file, merge

    if input_path is None or not is_run_file(input_path):
        return input_path, options
    options, file_input = merge(input_path, options)
    return file_input, options


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
    if "accuracy" in overall:  # a scored run: items right after --aggregate, of items scored
        console.print(
            f"accuracy={overall['accuracy']:.4g} ({overall['correct']:g} of {overall['total']:g})"
        )
