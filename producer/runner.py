"""``fleet run``: one command from an input file to exported results.

With no broker configured it starts the embedded server and SQLite under the
state directory; it spawns local workers (real ``celery -A worker worker``
processes), enqueues, shows progress, waits for finalize, exports, and stops
everything. Interrupted, it leaves the run resumable with ``fleet resume``.

While it watches, it looks after what it started: a local worker that dies is
restarted (``producer.launcher``), so is the embedded server (its append-only file
keeps the queue; the workers reconnect), and a full disk under the state directory
stops the run with those words and the ``fleet resume`` command, never a silent hang.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from common.celery_app import create_app
from common.db import make_engine
from common.errors import FleetError
from common.publish import publish_run, resume_run
from common.runconfig import RunConfig
from common.settings import Settings
from common.stats import Figures
from producer.diskspace import low_message, measure, naming_a_full_disk, require_space
from producer.embedded import EmbeddedBroker
from producer.enqueue import Enqueued, create_run
from producer.export import write_json, write_jsonl
from producer.launcher import LocalWorkers
from producer.status import watch
from producer.valkey import private_dir

#: Times ``fleet run`` starts the embedded server again after it died, in one run.
BROKER_RESTARTS = 3


class WorkersGone(FleetError):
    """Every local worker process exited while the run still had work."""


class BrokerGone(FleetError):
    """The embedded server keeps dying, or cannot be started again."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) while a run was watched: the run it left, to report and resume."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    records: int
    jsonl: Path
    summary: Path
    #: The ``overall`` statistics as written to ``summary``.
    overall: Figures
    #: How an item's lanes combine (``--aggregate``): says what ``correct`` counts.
    aggregate: str


class LocalFleet:
    """Broker (embedded unless configured), database, Celery app and local workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int,
        spawn_workers: bool,
        queue: str,
        console: Console,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.spawn_workers = spawn_workers
        self.queue = queue
        self.console = console
        self._stack = ExitStack()
        self._previous_sigterm: signal.Handlers | Callable[..., Any] | int | None = None
        self.local: LocalWorkers | None = None
        self.broker: EmbeddedBroker | None = None
        self.broker_restarts = 0

    def __enter__(self) -> LocalFleet:
        settings, console = self.settings, self.console
        with self._stack as stack:
            if settings.broker_url is None:
                self._start_broker(stack)
                settings = self.settings
            self.db = make_engine(settings.sqlalchemy_url)
            self.app = create_app(settings)
            if self.spawn_workers:
                self.local = stack.enter_context(
                    LocalWorkers(
                        self.workers,
                        env=_worker_env(settings),
                        log_dir=settings.state_dir / "logs",
                        queues=[self.queue],
                        say=lambda line: console.print(f"[dim]{line}[/]"),
                    )
                )
                console.print(
                    f"{self.workers} local worker(s); logs in {settings.state_dir / 'logs'}"
                )
            self._stack = stack.pop_all()
        self._previous_sigterm = _stop_on_sigterm()
        return self

    def _start_broker(self, stack: ExitStack) -> None:
        """The embedded server under an owner-only state directory with room to work."""
        state_dir = private_dir(self.settings.state_dir)
        require_space(state_dir, then="run the command again")
        warning = low_message(measure(state_dir))
        if warning:
            self.console.print(f"[yellow]{warning}[/]")
        self.broker = EmbeddedBroker(state_dir / "broker")
        url = stack.enter_context(self.broker)
        self.settings = self.settings.model_copy(update={"broker_url": url})
        self.console.print(
            f"embedded broker on {self.broker.socket} (owner only; data in "
            f"{self.broker.data_dir}, URL with its password in {self.broker.url_path})"
        )

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._stack.close()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def finish(self, run_id: str, output_dir: Path | None) -> RunOutcome:
        """Watch the run to its end, then write its results and summary."""
        settings = self.settings

        resume = f"fleet resume {run_id}"

        def check() -> None:
            require_space(settings.state_dir, then=resume)
            self._tend_broker(resume)
            if self.local is None:
                return
            self.local.tend()
            if self.local.given_up():
                raise WorkersGone(
                    f"every local worker keeps exiting; see {settings.state_dir / 'logs'}; "
                    f"the run can be resumed with: {resume}"
                )

        try:
            with naming_a_full_disk(settings.state_dir, then=resume):
                final = watch(self.db, run_id, console=self.console, check=check)
        except KeyboardInterrupt as stop:
            raise RunInterrupted(run_id) from stop
        out = output_dir or settings.state_dir / "runs" / run_id
        jsonl = out / "results.jsonl"
        summary = out / "summary.json"
        records = write_jsonl(self.db, run_ref=run_id, path=jsonl)
        document = write_json(self.db, run_ref=run_id, path=summary)
        overall = document["statistics"].get("overall", {})
        aggregate = document["overall_results"]["aggregate"]
        return RunOutcome(run_id, final.status, records, jsonl, summary, overall, aggregate)

    def _tend_broker(self, resume: str) -> None:
        """Start the embedded server again if it died; BrokerGone when it keeps dying."""
        broker = self.broker
        code = None if broker is None else broker.exit_code()
        if broker is None or code is None:
            return
        what = f"the embedded valkey-server exited with {code}"
        if self.broker_restarts >= BROKER_RESTARTS:
            raise BrokerGone(
                f"{what}, for the {self.broker_restarts + 1}th time; {broker.log_path} ends "
                f"with:\n{broker.log_tail()}\nthe run can be resumed with: {resume}"
            )
        self.broker_restarts += 1
        self.console.print(
            f"[yellow]{what}; starting it again (its append-only file keeps the queue)[/]"
        )
        try:
            broker.restart()
        except FleetError as error:
            raise BrokerGone(
                f"{what} and did not start again: {error}\nthe run can be resumed with: {resume}"
            ) from error


def create_job(
    settings: Settings,
    *,
    input_path: Path | None,
    config: RunConfig,
    queue: str,
    skip_invalid: bool = False,
    reference_field: str | None = None,
) -> Enqueued:
    """Validate every input and store the run in SQL, before the broker or a worker starts.

    A bad record, a missing file or a scorer without its reference field stops the
    command here, with nothing started and nothing stored.
    """
    if settings.broker_url is None:
        private_dir(settings.state_dir)
    with naming_a_full_disk(settings.state_dir, then="run the command again"):
        return create_run(
            make_engine(settings.sqlalchemy_url),
            input_path=input_path,
            config=config,
            queue=queue,
            skip_invalid=skip_invalid,
            reference_field=reference_field,
        )


def run_job(fleet: LocalFleet, *, enqueued: Enqueued, output_dir: Path | None) -> RunOutcome:
    """Publish a stored run's slices, and see it through."""
    publish_run(fleet.db, fleet.app, run_id=enqueued.run_id)
    fleet.console.print(
        f"run {enqueued.run_id}: {enqueued.items} items ({enqueued.rejected} rejected), "
        f"{enqueued.slices} slices"
    )
    return fleet.finish(enqueued.run_id, output_dir)


def resume_job(fleet: LocalFleet, *, run_ref: str, output_dir: Path | None) -> RunOutcome:
    """Re-publish what a run still owes (from SQL) and see it through."""
    run_id, sent = resume_run(fleet.db, fleet.app, run_ref=run_ref)
    fleet.console.print(f"run {run_id}: {sent} work order(s) sent")
    return fleet.finish(run_id, output_dir)


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


def _stop_on_sigterm() -> signal.Handlers | Callable[..., Any] | int | None:
    """SIGTERM (systemd, Kubernetes, ``timeout``) stops the fleet as Ctrl-C does.

    Without this, Python dies on the spot and leaves the embedded server and the
    local workers running. Returns the previous handler (None off the main thread,
    where handlers cannot be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)
