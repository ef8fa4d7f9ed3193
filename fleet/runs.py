"""``fleet.Run``: a stored run, by id, from Python: watch it, read its results, act on it.

Every method reads or writes SQL through the same functions as the ``fleet``
commands (``producer.jobs``, ``producer.status``, ``producer.export``); a Run keeps
the Settings it was made with, so ``resume`` and ``retry`` find the same database,
state directory and broker as the run itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.constants import LATEST, WATCH_POLL_S
from common.errors import FleetError
from common.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas
    from rich.console import Console
    from sqlalchemy import Engine

    from common.queries import Progress


class WaitTimeout(FleetError):
    """``Run.wait(timeout_s=...)`` ran out before the run ended."""


class Run:
    """A run in the fleet's database: ``Run(run_id)``, or ``Run.latest()``.

    ``settings``: the ``FLEET_*`` settings to find it with; by default those of the
    environment, read once here.
    """

    def __init__(self, run_id: str, *, settings: Settings | None = None) -> None:
        from common.db import make_engine, session_scope
        from common.queries import resolve_run

        self.settings = settings if settings is not None else load_settings()
        self._db: Engine = make_engine(self.settings.sqlalchemy_url)
        with session_scope(self._db) as session:
            #: The run's id (``latest`` resolved once, here).
            self.id: str = resolve_run(session, run_id).id

    @classmethod
    def latest(cls, *, settings: Settings | None = None) -> Run:
        """The newest run in the database."""
        return cls(LATEST, settings=settings)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> Progress:
        """Where the run stands now: status, results ok and failed, slices done."""
        from producer.status import read_progress

        return read_progress(self._db, self.id)[1]

    def wait(
        self, progress: bool = True, *, timeout_s: float | None = None, poll_s: float = WATCH_POLL_S
    ) -> Progress:
        """Until the run is completed, failed or cancelled; its last state.

        ``progress`` shows a progress bar (plain lines when the output is no
        terminal). WaitTimeout after ``timeout_s`` seconds, the run going on.
        Someone must be running it: the fleet's workers, or a ``fleet run`` or
        ``Run.resume()`` elsewhere (an interrupted embedded run waits for its resume).
        """
        import time

        from producer.status import watch

        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        def check() -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(
                    f"run {self.id} is still {self.status().status} after {timeout_s} s"
                )

        return watch(self._db, self.id, console=console_for(progress), poll_s=poll_s, check=check)

    def results(self) -> Iterator[dict[str, Any]]:
        """One dict per item and lane, in input order: the records of ``fleet export``.

        Streamed from SQL while iterated; a running run gives ``error_kind``
        ``pending`` for what has no result yet.
        """
        from producer.export import iter_records

        return iter_records(self._db, run_ref=self.id)

    def to_pandas(self) -> pandas.DataFrame:
        """``results()`` as a pandas DataFrame, one row per record (needs ``fleet[pandas]``)."""
        try:
            import pandas
        except ImportError as error:
            raise FleetError("Run.to_pandas needs pandas: pip install 'fleet[pandas]'") from error
        return pandas.DataFrame.from_records(list(self.results()))

    def summary(self) -> dict[str, Any]:
        """The run, its config, lanes and statistics: ``summary.json`` (live while it runs)."""
        from producer.export import summary

        return summary(self._db, run_ref=self.id)

    def report(self, path: str | Path) -> Path:
        """Write the run's HTML report to ``path``; the path written."""
        try:
            report = importlib.import_module("producer.report")
        except ModuleNotFoundError as error:
            if error.name != "producer.report":
                raise
            raise FleetError(
                "this installation of fleet has no HTML report (producer.report is missing)"
            ) from error
        written: Path = report.write_report(self._db, self.id, Path(path))
        return written

    def resume(
        self, *, workers: int = 1, output: str | Path | None = None, progress: bool = True
    ) -> Run:
        """Send the work orders the run still owes (after a crash or an interrupt).

        Without ``FLEET_BROKER_URL`` the embedded server and ``workers`` local workers
        run it to the end and write its results (under ``output``, or the state
        directory's ``runs/RUN``), as ``fleet resume`` does; on a fleet the fleet's
        workers take the orders, and ``wait()`` follows them.
        """
        from producer.jobs import continue_run

        continue_run(
            self.settings,
            run_ref=self.id,
            workers=workers,
            output=None if output is None else Path(output),
            console=console_for(progress),
        )
        return self

    def retry(
        self,
        kinds: Iterable[str] | None = None,
        *,
        workers: int = 1,
        output: str | Path | None = None,
        progress: bool = True,
    ) -> Run:
        """Run the failed items again (only those of error ``kinds``, if given), as ``resume``.

        Rejected input records are never retried. FleetError unless the run is
        running or finished.
        """
        from producer.jobs import reopen_failures

        _, reopened = reopen_failures(self.settings, run_ref=self.id, kinds=kinds)
        if reopened:
            self.resume(workers=workers, output=output, progress=progress)
        return self

    def cancel(self) -> Run:
        """Stop handing out the run's slices; batches in flight finish; results stay readable.

        FleetError unless the run is pending or running.
        """
        from producer.jobs import cancel_job

        cancel_job(self.settings, run_ref=self.id)
        return self


def console_for(progress: bool) -> Console:
    """Where a call's progress and notes go: standard error, or nowhere."""
    from rich.console import Console

    return Console(stderr=True) if progress else Console(quiet=True)
