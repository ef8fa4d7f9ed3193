"""Starting, continuing and stopping runs: what the CLI and the Python API both call.

``fleet enqueue``, ``run``, ``resume``, ``retry`` and ``cancel`` (``producer.cli``)
and ``fleet.enqueue``, ``fleet.run`` and a ``fleet.Run``'s methods are thin layers
over these functions. Each entry point builds the Settings once and passes them
down; the layers differ only in how they say what happened (lines and exit codes
on a terminal; objects and exceptions in Python).

The inputs of a job are a JSONL file, a run file (``.toml``/``.yaml``, holding the
options as well), or any iterable of dicts (``producer.records``), validated alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.constants import DEFAULT_QUEUE
from common.errors import ConfigError, FleetError
from common.runconfig import RunConfig
from common.settings import Settings
from producer.cli.options import JobOptions, run_config

if TYPE_CHECKING:
    from rich.console import Console

    from producer.enqueue import Enqueued
    from producer.runfile import RunFile
    from producer.runner import RunOutcome

#: What a job reads: a file, any iterable of dicts, or nothing (``--dataset``, ``--from-run``).
Inputs = str | os.PathLike[str] | Iterable[Mapping[str, Any]] | None


@dataclass(frozen=True)
class StoredJob:
    """A run validated and stored in SQL, with the config and queue it was stored with."""

    enqueued: Enqueued
    config: RunConfig
    queue: str
    #: ``workers`` of a run file (``fleet run --workers``); None when it does not say.
    file_workers: int | None = None

    @property
    def run_id(self) -> str:
        return self.enqueued.run_id


@dataclass(frozen=True)
class OrdersSent:
    """A run continued on a fleet: the work orders sent to the fleet's workers."""

    run_id: str
    sent: int


def store_job(settings: Settings, *, inputs: Inputs, options: JobOptions) -> StoredJob:
    """Check the models and every input, and store the run, before anything starts.

    A bad record, a missing file or a model that cannot be found stops here, with
    nothing started and nothing stored (``producer.runner.create_job``).
    """
    from producer.runner import create_job

    job = _checked_job(settings, inputs, options)
    input_path, records, run_file, config = job.input_path, job.records, job.run_file, job.config
    options = run_file.options
    enqueued = create_job(
        settings,
        input_path=input_path,
        records=records,
        config=config,
        queue=options.queue,
        skip_invalid=options.skip_invalid,
        reference_field=options.reference_field,
    )
    return StoredJob(enqueued, config, options.queue, run_file.workers)


def enqueue_job(
    settings: Settings, *, inputs: Inputs, options: JobOptions, model_queues: bool = False
) -> StoredJob:
    """Validate and store a run, and publish one work order per slice to the fleet's broker.

    If the broker stays away, PublishIncomplete says how many orders went out and
    that ``fleet resume RUN`` sends the rest: the run is in SQL already.
    """
    from common.celery_app import create_app
    from common.db import make_engine
    from common.publish import publish_run
    from producer.enqueue import create_run

    if settings.broker_url is None:
        raise ConfigError("FLEET_BROKER_URL is not set (use `fleet run` for the embedded mode)")
    job = _checked_job(settings, inputs, options)
    input_path, records, run_file, config = job.input_path, job.records, job.run_file, job.config
    options = run_file.options
    db = make_engine(settings.sqlalchemy_url)
    enqueued = create_run(
        db,
        input_path=input_path,
        records=records,
        config=config,
        queue=options.queue,
        skip_invalid=options.skip_invalid,
        reference_field=options.reference_field,
        model_queues=model_queues,
    )
    publish_run(db, create_app(settings), run_id=enqueued.run_id, retry_s=settings.publish_retry_s)
    return StoredJob(enqueued, config, options.queue)


def run_stored(
    settings: Settings,
    job: StoredJob,
    *,
    workers: int,
    local_workers: bool | None,
    output: Path | None,
    console: Console,
) -> RunOutcome:
    """See a stored run through: the embedded server and local workers unless a broker is set.

    Local workers are spawned by default only without a broker (``local_workers``
    says otherwise), and never more than the run has slices. Ctrl-C or SIGTERM, at
    any moment from here on, raises ``producer.runner.RunInterrupted``, the run left
    resumable.
    """
    from producer.runner import LocalFleet, interruptible, preload_env, run_job

    spawn = local_workers if local_workers is not None else settings.broker_url is None
    with (
        interruptible(job.run_id),
        LocalFleet(
            settings,
            workers=max(1, min(workers, job.enqueued.slices)),
            spawn_workers=spawn,
            queue=job.queue,
            console=console,
            preload=preload_env(job.config),
        ) as fleet,
    ):
        return run_job(fleet, enqueued=job.enqueued, output_dir=output)


def continue_run(
    settings: Settings, *, run_ref: str, workers: int, output: Path | None, console: Console
) -> RunOutcome | OrdersSent:
    """Send the work orders a run still owes; without a broker, also run them to the end.

    With FLEET_BROKER_URL set, the fleet's workers take them (OrdersSent). Without
    it, the embedded server and ``workers`` local workers are started, the run is
    seen through and its results written (RunOutcome); Ctrl-C or SIGTERM then raises
    ``producer.runner.RunInterrupted`` carrying ``run_ref``, as in ``run_stored``.
    """
    from common.celery_app import create_app
    from common.db import make_engine
    from common.publish import resume_run
    from producer.runner import LocalFleet, interruptible, resume_job

    if settings.broker_url is not None:
        db = make_engine(settings.sqlalchemy_url)
        run_id, sent = resume_run(
            db, create_app(settings), run_ref=run_ref, retry_s=settings.publish_retry_s
        )
        return OrdersSent(run_id, sent)
    with (
        interruptible(run_ref),
        LocalFleet(
            settings, workers=workers, spawn_workers=True, queue=DEFAULT_QUEUE, console=console
        ) as fleet,
    ):
        return resume_job(fleet, run_ref=run_ref, output_dir=output)


def reopen_failures(
    settings: Settings, *, run_ref: str, kinds: Iterable[str] | None
) -> tuple[str, int]:
    """Forget a run's failed results (of ``kinds``, or all) so they run again.

    Returns (run id, results reopened); FleetError unless the run is running or finished.
    ``continue_run`` then sends their work orders.
    """
    from common.db import make_engine, session_scope
    from common.models import RunStatus
    from common.queries import resolve_run
    from common.store import reopen_failed

    with session_scope(make_engine(settings.sqlalchemy_url)) as session:
        run = resolve_run(session, run_ref)
        if run.status not in (RunStatus.running, RunStatus.completed, RunStatus.failed):
            raise FleetError(
                f"run {run.id} is {run.status}: only a running or finished run retries"
            )
        run_id = run.id
        reopened = reopen_failed(session, run_id=run_id, kinds=list(kinds or []) or None)
    return run_id, reopened


def cancel_job(settings: Settings, *, run_ref: str) -> str:
    """Stop handing out a run's slices; its id. FleetError unless it is pending or running."""
    from common.db import make_engine, session_scope
    from common.queries import resolve_run
    from common.store import cancel_run

    with session_scope(make_engine(settings.sqlalchemy_url)) as session:
        run = resolve_run(session, run_ref)
        run_id, status = run.id, run.status
        cancelled = cancel_run(session, run_id=run_id)
    if not cancelled:
        raise FleetError(
            f"run {run_id} is {status}: only a pending or running run can be cancelled"
        )
    return run_id


@dataclass(frozen=True)
class _CheckedJob:
    input_path: Path | None
    records: Iterable[Mapping[str, Any]] | None
    run_file: RunFile
    config: RunConfig


def _checked_job(settings: Settings, inputs: Inputs, options: JobOptions) -> _CheckedJob:
    """The job's inputs and config, its models checked (config and tokenizer, offline first)."""
    from producer.model_check import check_run_models

    input_path, records, run_file = _read_inputs(inputs, options)
    config = run_config(settings, run_file.options, run_file.dataset_options)
    check_run_models(config)
    return _CheckedJob(input_path, records, run_file, config)


def _read_inputs(
    inputs: Inputs, options: JobOptions
) -> tuple[Path | None, Iterable[Mapping[str, Any]] | None, RunFile]:
    """(input file, records, the run file): a run file's INPUT and options, the given on top."""
    from producer.runfile import RunFile, is_run_file, read

    if inputs is None:
        return None, None, RunFile(options, None)
    if isinstance(inputs, (str, os.PathLike)):
        path = Path(inputs)
        if not path.is_file():
            raise ConfigError(f"input {path}: no such file")
        if not is_run_file(path):
            return path, None, RunFile(options, path)
        run_file = read(path, options)
        return run_file.input_path, None, run_file
    if isinstance(inputs, Mapping):
        raise ConfigError("inputs: give a path or a list (any iterable) of dicts, not one dict")
    if isinstance(inputs, bytes):
        raise ConfigError("inputs: give a path or a list (any iterable) of dicts, not bytes")
    return None, inputs, RunFile(options, None)
