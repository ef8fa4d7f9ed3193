"""Commands that repair or stop a run: ``reconcile``, ``retry``, ``cancel``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.constants import LATEST
from common.errors import ConfigError
from producer.cli.app import app, console, errors, load_settings

RunRef = Annotated[str, typer.Argument(help="Run id, or 'latest'.")]


@app.command()
def reconcile() -> None:
    """One reconciler pass: re-enqueue slices of dead workers, finalize finished runs.

    Workers run the same pass every FLEET_RECONCILE_INTERVAL seconds on their own.
    """
    from common.celery_app import create_app
    from common.db import make_engine
    from common.reconcile import reconcile as reconcile_pass

    settings = load_settings()
    if settings.broker_url is None:
        raise ConfigError("FLEET_BROKER_URL is not set: reconcile publishes to the fleet's broker")
    done = reconcile_pass(
        make_engine(settings.sqlalchemy_url),
        create_app(settings),
        lease_s=settings.slice_lease,
        heartbeat_timeout_s=settings.heartbeat_timeout,
    )
    errors.print(
        f"{len(done.requeued)} stuck slice(s) re-enqueued, {len(done.finalized)} run(s) sent "
        "to finalize"
    )
    for run_id, slice_id in done.requeued:
        console.print(f"requeued {run_id} slice {slice_id}")
    for run_id in done.finalized:
        console.print(f"finalize {run_id}")


@app.command()
def retry(
    run_ref: RunRef = LATEST,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="Only failures of this error kind (oom, engine, quarantined...); repeat."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for results.jsonl/summary.json.")
    ] = None,
    max_failures: Annotated[
        str | None,
        typer.Option(help="Exit 1 when more results than this fail: a count (10) or a share (5%)."),
    ] = None,
) -> None:
    """Run a run's failed items again (their results are replaced), then finalize it again.

    Rejected input records are not retried. With FLEET_BROKER_URL set the fleet's
    workers take the work; without it the embedded broker and local workers do.
    """
    from producer.cli.jobs import see_through
    from producer.jobs import reopen_failures
    from producer.verdict import parse_limit

    settings = load_settings()
    limit = parse_limit(max_failures)
    run_id, reopened = reopen_failures(settings, run_ref=run_ref, kinds=kind)
    errors.print(f"run {run_id}: {reopened} failed result(s) reopened")
    if not reopened:
        return
    see_through(settings, run_ref=run_id, workers=workers, output=output, limit=limit)


@app.command()
def cancel(run_ref: RunRef = LATEST) -> None:
    """Stop handing out a run's slices; batches in flight finish; results so far stay exportable."""
    from producer.jobs import cancel_job

    run_id = cancel_job(load_settings(), run_ref=run_ref)
    errors.print(f"run {run_id} cancelled")
