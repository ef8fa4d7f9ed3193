"""``fleet run``: one command from an input file to exported results.

With no broker configured it starts the embedded server and SQLite under the
state directory; it spawns local workers (real ``celery -A worker worker``
processes), enqueues, shows progress, waits for finalize, exports, and stops
everything. Interrupted, it leaves the run resumable with ``fleet resume``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from common.db import make_engine
from common.errors import FleetError
from common.runconfig import RunConfig
from common.settings import Settings
from producer.embedded import EmbeddedBroker, LocalWorkers
from producer.enqueue import create_run
from producer.export import write_json, write_jsonl
from producer.publish import publish_run
from producer.status import watch
from worker.app import create_app


class WorkersGone(FleetError):
    """Every local worker process exited while the run still had work."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    records: int
    jsonl: Path
    summary: Path


def run_job(
    settings: Settings,
    *,
    input_path: Path,
    config: RunConfig,
    workers: int,
    spawn_workers: bool,
    output_dir: Path | None,
    queue: str,
    skip_invalid: bool = False,
    reference_field: str | None = None,
    console: Console,
) -> RunOutcome:
    with ExitStack() as stack:
        if settings.broker_url is None:
            url = stack.enter_context(EmbeddedBroker(settings.state_dir / "broker"))
            settings = settings.model_copy(update={"broker_url": url})
            console.print(f"embedded broker at {url} (data in {settings.state_dir / 'broker'})")
        db = make_engine(settings.sqlalchemy_url)
        app = create_app(settings)
        local: LocalWorkers | None = None
        if spawn_workers:
            local = stack.enter_context(
                LocalWorkers(
                    workers,
                    env=_worker_env(settings),
                    log_dir=settings.state_dir / "logs",
                    queues=[queue],
                )
            )
            console.print(f"{workers} local worker(s); logs in {settings.state_dir / 'logs'}")
        enqueued = create_run(
            db,
            input_path=input_path,
            config=config,
            queue=queue,
            skip_invalid=skip_invalid,
            reference_field=reference_field,
        )
        publish_run(db, app, run_id=enqueued.run_id)
        console.print(
            f"run {enqueued.run_id}: {enqueued.items} items ({enqueued.rejected} rejected), "
            f"{enqueued.slices} slices"
        )

        def check_workers() -> None:
            if local is not None and local.alive() == 0:
                raise WorkersGone(
                    f"every local worker exited; see {settings.state_dir / 'logs'}; "
                    f"the run can be resumed with: fleet resume {enqueued.run_id}"
                )

        final = watch(db, enqueued.run_id, console=console, check=check_workers)
        out = output_dir or settings.state_dir / "runs" / enqueued.run_id
        jsonl = out / "results.jsonl"
        summary = out / "summary.json"
        records = write_jsonl(db, run_ref=enqueued.run_id, path=jsonl)
        write_json(db, run_ref=enqueued.run_id, path=summary)
        return RunOutcome(enqueued.run_id, final.status, records, jsonl, summary)
    raise AssertionError("unreachable")  # pragma: no cover  (ExitStack does not swallow)


def _worker_env(settings: Settings) -> dict[str, str]:
    """What a local worker needs to reach the same broker and database."""
    env = {
        "FLEET_BROKER_URL": settings.broker_url or "",
        "FLEET_DATABASE_URL": settings.sqlalchemy_url,
        "FLEET_STATE_DIR": str(settings.state_dir.resolve()),
        "FLEET_SLICE_TIME_LIMIT": str(settings.slice_time_limit),
    }
    if settings.torch_threads:
        env["FLEET_TORCH_THREADS"] = str(settings.torch_threads)
    return env
