"""``fleet run``: one command from an input file to exported results.

With no broker configured it starts the embedded server and SQLite under the
state directory; it spawns local workers (real ``celery -A worker worker``
processes), enqueues, shows progress, waits for finalize, exports, and stops
everything. Interrupted, it leaves the run resumable with ``fleet resume``.

While it watches, it looks after what it started: a local worker that dies is
restarted (``producer.launcher``), so is the embedded server (its append-only file
keeps the queue; the workers reconnect), and a full disk under the state directory
stops the run with those words and the ``fleet resume`` command, never a silent hang.

Order of a run: every input is validated and the run stored in SQL first
(``create_job``: a bad record, a missing file, a model that cannot be found stops
the command before anything starts), then the embedded server comes up and the
workers are spawned with the run's model to preload (``preload_env``), as many as
the run has slices and no more, while this process publishes the orders. The heavy
modules are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from common.errors import FleetError
from common.runconfig import RunConfig
from common.settings import Settings
from common.stats import Figures
from producer.diskspace import low_message, measure, naming_a_full_disk, require_space
from producer.embedded import EmbeddedBroker
from producer.launcher import LocalWorkers
from producer.valkey import private_dir

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Engine

    from producer.enqueue import Enqueued

log = logging.getLogger(__name__)

#: Times ``fleet run`` starts the embedded server again after it died, in one run.
BROKER_RESTARTS = 3

#: Engines whose model a local worker can load before its first task.
PRELOADED_ENGINES = ("hf", "echo")

#: Seconds the local workers get to say that they hold no task, at the end of a run;
#: times they are asked, and the pause between two asks.
IDLE_ASK_S = 1.0
IDLE_ASKS = 3
IDLE_ASK_PAUSE_S = 0.1


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
    #: The HTML report (``producer.report``), beside the results and the summary.
    report: Path | None = None


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
        preload: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.spawn_workers = spawn_workers
        self.queue = queue
        self.console = console
        #: ``FLEET_PRELOAD_*`` for the local workers (``preload_env``), or None.
        self.preload = preload
        self._stack = ExitStack()
        self.local: LocalWorkers | None = None
        self.broker: EmbeddedBroker | None = None
        self.broker_restarts = 0

    def __enter__(self) -> LocalFleet:
        with self._stack as stack:
            if self.settings.broker_url is None:
                self._start_broker(stack)
            if self.spawn_workers:
                self._start_workers(stack)
            # Imported here, once the workers are on their way: SQL and Celery take this
            # process a good part of a second to import, the workers much longer to start.
            from common.celery_app import create_app
            from common.db import make_engine

            self.db: Engine = make_engine(self.settings.sqlalchemy_url)
            self.app: Celery = create_app(self.settings)
            self._stack = stack.pop_all()
        return self

    def _start_workers(self, stack: ExitStack) -> None:
        settings, console = self.settings, self.console
        self.local = stack.enter_context(
            LocalWorkers(
                self.workers,
                env={**_worker_env(settings), **(self.preload or {})},
                log_dir=settings.state_dir / "logs",
                queues=[self.queue],
                say=lambda line: console.print(f"[dim]{line}[/]"),
            )
        )
        console.print(f"{self.workers} local worker(s); logs in {settings.state_dir / 'logs'}")

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
        self._stack.close()

    def finish(self, run_id: str, output_dir: Path | None) -> RunOutcome:
        """Watch the run to its end, then write its results and summary."""
        from producer.export import write_json, write_jsonl
        from producer.openai_export import write_requested
        from producer.report import write_report
        from producer.status import watch

        settings = self.settings

        resume = f"fleet resume {run_id}"

        def check() -> None:
            require_space(settings.state_dir, then=resume)
            self._tend_broker(run_id, resume)
            if self.local is None:
                return
            self.local.tend()
            if self.local.given_up():
                raise WorkersGone(
                    f"every local worker keeps exiting; see {settings.state_dir / 'logs'}; "
                    f"the run can be resumed with: {resume}"
                )

        with naming_a_full_disk(settings.state_dir, then=resume):
            final = watch(self.db, run_id, console=self.console, check=check)
        self.end_idle_workers()
        if self.broker is not None and self.local is not None and not self.local.alive():
            # Nothing of ours needs the embedded server any more: it writes its file
            # and exits while the results are written.
            self.broker.stop_soon()
        out = output_dir or settings.state_dir / "runs" / run_id
        jsonl = out / "results.jsonl"
        summary = out / "summary.json"
        records = write_jsonl(self.db, run_ref=run_id, path=jsonl)
        document = write_json(self.db, run_ref=run_id, path=summary)
        batch_output = write_requested(self.db, run_id=run_id)  # fleet batch's files
        if batch_output is not None:
            self.console.print(batch_output)
        overall = document["statistics"].get("overall", {})
        aggregate = document["overall_results"]["aggregate"]
        report = write_report(self.db, run_id, out / "report.html")
        return RunOutcome(run_id, final.status, records, jsonl, summary, overall, aggregate, report)

    def end_idle_workers(self) -> None:
        """The run is over: end the local workers at once if none holds a task.

        Asked through Celery (active and reserved tasks of each of our nodes), a few
        times: the run reads completed a moment before the finalize task's message is
        acknowledged. A worker that does not answer, or still holds anything, gets the
        warm shutdown on the way out instead.
        """
        local = self.local
        for _ in range(IDLE_ASKS):
            nodes = [] if local is None else local.nodes
            if local is None or not nodes:
                return
            idle = self._idle(nodes)
            if idle is None:
                return
            if idle:
                local.end_idle()
                return
            time.sleep(IDLE_ASK_PAUSE_S)

    def _idle(self, nodes: list[str]) -> bool | None:
        """Whether none of ``nodes`` holds a task, active or reserved; None if one is silent."""
        try:
            inspect = self.app.control.inspect(
                destination=nodes, timeout=IDLE_ASK_S, limit=len(nodes)
            )
            active, reserved = inspect.active() or {}, inspect.reserved() or {}
        except Exception:  # the broker away, a bad reply: the warm shutdown stays
            log.warning("could not ask the local workers whether they are idle", exc_info=True)
            return None
        if not all(node in active and node in reserved for node in nodes):
            return None
        return not any(active[node] or reserved[node] for node in nodes)

    def _tend_broker(self, run_id: str, resume: str) -> None:
        """Start the embedded server again if it died; BrokerGone when it keeps dying.

        Its append-only file keeps the queue up to its last second, but a worker that
        took an order just before the crash hands it back to a server that is gone, and
        the order is lost while the worker stays alive (so the reconciler would not
        step in). So once the server is back, every slice of the run still ``pending``
        gets a new order (``common.publish.publish_pending``).
        """
        from common.publish import publish_pending

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
        publish_pending(self.db, self.app, run_id=run_id)


def create_job(
    settings: Settings,
    *,
    input_path: Path | None,
    records: Iterable[Any] | None = None,
    config: RunConfig,
    queue: str,
    skip_invalid: bool = False,
    reference_field: str | None = None,
) -> Enqueued:
    """Validate every input and store the run in SQL, before the broker or a worker starts.

    A bad record, a missing file or a scorer without its reference field stops the
    command here, with nothing started and nothing stored.
    """
    from common.db import make_engine
    from producer.enqueue import create_run

    if settings.broker_url is None:
        private_dir(settings.state_dir)
    with naming_a_full_disk(settings.state_dir, then="run the command again"):
        return create_run(
            make_engine(settings.sqlalchemy_url),
            input_path=input_path,
            records=records,
            config=config,
            queue=queue,
            skip_invalid=skip_invalid,
            reference_field=reference_field,
        )


def run_job(fleet: LocalFleet, *, enqueued: Enqueued, output_dir: Path | None) -> RunOutcome:
    """Publish a stored run's slices, and see it through."""
    from common.publish import publish_run

    publish_run(fleet.db, fleet.app, run_id=enqueued.run_id)
    fleet.console.print(
        f"run {enqueued.run_id}: {enqueued.items} items ({enqueued.rejected} rejected), "
        f"{enqueued.slices} slices"
    )
    return fleet.finish(enqueued.run_id, output_dir)


def resume_job(fleet: LocalFleet, *, run_ref: str, output_dir: Path | None) -> RunOutcome:
    """Re-publish what a run still owes (from SQL) and see it through."""
    from common.publish import resume_run

    run_id, sent = resume_run(fleet.db, fleet.app, run_ref=run_ref)
    fleet.console.print(f"run {run_id}: {sent} work order(s) sent")
    return fleet.finish(run_id, output_dir)


def preload_env(config: RunConfig) -> dict[str, str]:
    """``FLEET_PRELOAD_*`` for workers that will take ``config``'s first lane first.

    The worker's pool process then loads that model as it starts, while the run's
    orders are published, and its first slice finds the model in hand
    (``worker.runtime``). Empty when the preloaded model could not be the one the
    run asks for (options the preload does not know), or the engine loads nothing.
    """
    if (
        config.engine not in PRELOADED_ENGINES
        or config.attn_implementation is not None
        or config.trust_remote_code
    ):
        return {}
    model, _ = config.lanes()[0]
    return {
        "FLEET_PRELOAD_MODEL": model,
        "FLEET_PRELOAD_ENGINE": config.engine,
        "FLEET_DTYPE": config.dtype,
    }


def _count_lines(path: Path) -> int:
    """Lines of ``path``, a last one without its newline included."""
    count, last = 0, b"\n"
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


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


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt in the block, whatever we inherited.

    A process started in the background by a script or a CI runner (``fleet run ... &``)
    inherits SIGINT ignored, and Python leaves an ignored SIGINT ignored: Ctrl-C and
    ``kill -INT`` would go unheard and the run would go on to its end. SIGTERM (systemd,
    Kubernetes, ``timeout``) would end Python on the spot, leaving the embedded server
    and the workers to their own devices. Both handlers are ours for the block and the
    previous ones come back after it. Off the main thread, where handlers cannot be
    set, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, where Python cannot put it back
                signal.signal(sig, handler)


@contextmanager
def interruptible(run_id: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM anywhere in the block raises RunInterrupted(run_id).

    The block is everything a stored run goes through (the server and workers
    starting, the orders published, the watch, the export, the workers stopping),
    so the command says how far the run got and how to resume it at any of those
    moments. A second Ctrl-C while the workers get their warm shutdown ends it at
    once (``producer.launcher.Supervisor.stop``) and still arrives here.
    """
    with stop_signals():
        try:
            yield
        except RunInterrupted:
            raise
        except KeyboardInterrupt as stop:
            raise RunInterrupted(run_id) from stop


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
