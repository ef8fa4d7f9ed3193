"""Commands that start or continue a run: ``enqueue``, ``run``, ``resume``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from common.constants import LATEST
from common.errors import FleetError
from common.settings import Settings
from producer.cli.app import app, console, errors, load_settings
from producer.cli.options import JobOptions, job_command

if TYPE_CHECKING:
    from common.stats import Figures
    from producer.jobs import StoredJob
    from producer.runner import RunInterrupted, RunOutcome
    from producer.verdict import FailureLimit

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
    Path | None,
    typer.Option("--output", "-o", help="Folder for results.jsonl, summary.json, report.html."),
]
MaxFailures = Annotated[
    str | None,
    typer.Option(
        help="Exit 1 when more results than this fail: a count (10) or a share (5%). "
        "A run in which every result failed exits 1 regardless."
    ),
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
    from producer.jobs import enqueue_job

    job = enqueue_job(
        load_settings(), inputs=input_path, options=options, model_queues=model_queues
    )
    enqueued = job.enqueued
    errors.print(
        f"{enqueued.items} items ({enqueued.rejected} rejected), {enqueued.slices} slices "
        f"on queue '{job.queue}'"
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
    max_failures: MaxFailures = None,
    *,
    options: JobOptions,
) -> None:
    """Run INPUT end to end: embedded broker and SQLite unless configured, local workers.

    Exits 1 when the run did not complete, when every result failed, or when more
    failed than --max-failures allows; 130 on Ctrl-C, saying how to resume.
    """
    from producer.jobs import store_job
    from producer.runner import stop_signals
    from producer.verdict import parse_limit

    settings = load_settings()
    limit = parse_limit(max_failures)
    with stop_signals():  # heard while the inputs are read and stored, too
        job = store_job(settings, inputs=input_path, options=options)
        if job.file_workers is not None and workers == 1:  # 1 is the default: the file's stands
            workers = job.file_workers
        run_to_end(
            settings, job, workers=workers, local_workers=local_workers, output=output, limit=limit
        )


def run_to_end(
    settings: Settings,
    job: StoredJob,
    *,
    workers: int,
    local_workers: bool | None,
    output: Path | None,
    limit: FailureLimit | None,
) -> None:
    """Run a stored job to its end and report it: ``fleet run`` and ``fleet batch``.

    Exits 1 when the run failed (``_report``), 130 on Ctrl-C or SIGTERM saying how
    to resume. Before the run is stored (the caller's part), either exits 130 with
    nothing stored.
    """
    from producer.jobs import run_stored
    from producer.runner import RunInterrupted

    try:
        with _stored_run_named(job.run_id):
            outcome = run_stored(
                settings,
                job,
                workers=workers,
                local_workers=local_workers,
                output=output,
                console=console,
            )
    except RunInterrupted as stop:
        _interrupted(settings, stop, workers=workers, output=output)
    _report(settings, outcome, limit)


@app.command()
def resume(
    run_ref: RunRef = LATEST,
    workers: Workers = 1,
    output: Output = None,
    max_failures: MaxFailures = None,
) -> None:
    """Re-publish the work orders of every slice not done (after a crash or Ctrl-C).

    With FLEET_BROKER_URL set, the fleet's workers take them. Without it (a run started
    by `fleet run` on the embedded default), the embedded broker and local workers are
    started again, the run is seen through, and its results are written.
    """
    from producer.verdict import parse_limit

    settings = load_settings()
    limit = parse_limit(max_failures)
    see_through(settings, run_ref=run_ref, workers=workers, output=output, limit=limit)


def see_through(
    settings: Settings,
    *,
    run_ref: str,
    workers: int,
    output: Path | None,
    limit: FailureLimit | None = None,
) -> None:
    """Send the work orders a run still owes; without a broker, also run them to the end.

    With FLEET_BROKER_URL set, the fleet's workers take them. Without it, the embedded
    broker and ``workers`` local workers are started, and the results are written.
    """
    from producer.jobs import OrdersSent, continue_run
    from producer.runner import RunInterrupted

    try:
        outcome = continue_run(
            settings, run_ref=run_ref, workers=workers, output=output, console=console
        )
    except RunInterrupted as stop:
        _interrupted(settings, stop, workers=workers, output=output)
    if isinstance(outcome, OrdersSent):
        errors.print(f"run {outcome.run_id}: {outcome.sent} work order(s) sent")
        return
    _report(settings, outcome, limit)


@contextmanager
def _stored_run_named(run_id: str) -> Iterator[None]:
    """A fleet that fails to start leaves the stored run: say how to start it later."""
    try:
        yield
    except FleetError as error:
        if "fleet resume" not in str(error):
            errors.print(f"run {run_id} is stored; once this is fixed: fleet resume {run_id}")
        raise


def _report(settings: Settings, outcome: RunOutcome, limit: FailureLimit | None) -> None:
    """The summary on stdout; exit 1 with the cause on stderr when the run failed."""
    from common.db import make_engine, session_scope
    from common.queries import failure_causes
    from producer.verdict import failure_verdict

    _print_summary(outcome.overall, outcome.aggregate)
    console.print(f"results: {outcome.jsonl} ({outcome.records} records)")
    console.print(f"summary: {outcome.summary}")
    console.print(f"report: {outcome.report}")
    overall = outcome.overall
    why = failure_verdict(
        status=outcome.status,
        ok=int(overall.get("results_ok") or 0),
        failed=int(overall.get("results_failed") or 0),
        limit=limit,
    )
    if why is None:
        return
    errors.print(f"[red]run {outcome.run_id} failed:[/red] {why}", highlight=False, soft_wrap=True)
    with session_scope(make_engine(settings.sqlalchemy_url)) as session:
        causes = failure_causes(session, run_id=outcome.run_id)
    for kind, count, message in causes:
        errors.print(
            f"  {count} x {kind}: {_first_line(message)}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    raise typer.Exit(1)


def _first_line(message: str, width: int = 300) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "(no message)"
    return line if len(line) <= width else line[: width - 3] + "..."


def _interrupted(
    settings: Settings, stop: RunInterrupted, *, workers: int, output: Path | None
) -> NoReturn:
    """After Ctrl-C: how far the run got (its done slices) and the command that finishes it."""
    from common.db import make_engine
    from producer.status import read_progress

    run_id, state = read_progress(make_engine(settings.sqlalchemy_url), stop.run_id)
    command = f"fleet resume {run_id}"
    if workers != 1:
        command += f" --workers {workers}"
    if output is not None:
        command += f" --output {output}"
    errors.print(
        f"interrupted: run {run_id} has {state.slices_done} of {state.slices_total} slices done "
        f"({state.done} of {state.expected} results: ok {state.ok}, failed {state.failed}); "
        f"nothing stored is lost. To finish it: {command}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(130)


def _print_summary(overall: Figures, aggregate: str) -> None:
    shown = (
        "results",
        "results_ok",
        "results_failed",
        "success_rate",
        "latency_mean_s",
        "latency_p95_s",
        "tokens_per_s",
        "items_per_s",
        "results_per_s",
        "active_time_s",
        "wall_time_s",
    )
    console.print("  ".join(f"{name}={_figure(overall.get(name))}" for name in shown))
    if "accuracy" not in overall:
        return
    accuracy, correct, total = (
        _figure(overall.get(name)) for name in ("accuracy", "correct", "total")
    )
    if aggregate == "mean":  # a sum of scores, not a count of items right
        console.print(f"accuracy={accuracy} (mean score of {total} items; scores sum to {correct})")
    else:
        console.print(
            f"accuracy={accuracy} ({correct} of {total} items right, --aggregate {aggregate})"
        )
    metrics = [
        f"{name.removesuffix('_mean')}={_figure(value)}"
        for name, value in overall.items()
        if name.endswith("_mean") and f"{name.removesuffix('_mean')}_sum" in overall
    ]
    if metrics:
        console.print(f"{'  '.join(metrics)} (mean over {total} items, --aggregate {aggregate})")


def _figure(value: float | int | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
