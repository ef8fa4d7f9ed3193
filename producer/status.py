"""Live progress read from SQL: a rich progress bar, and the list of recent runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from common.constants import WATCH_POLL_S
from common.db import session_scope
from common.models import RunStatus
from common.queries import Progress as RunProgress
from common.queries import progress, recent_runs, resolve_run

#: Run states after which nothing changes by itself.
TERMINAL = (RunStatus.completed, RunStatus.failed, RunStatus.cancelled)

#: How long a watcher keeps trying while the database is unreachable, in seconds.
DATABASE_PATIENCE_S = 300.0

#: Seconds between two reads of a run's progress right after it changed.
QUICK_POLL_S = 0.05


def read_progress(db: Engine, run_ref: str) -> tuple[str, RunProgress]:
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        return run.id, progress(session, run_id=run.id)


def read_progress_patiently(
    db: Engine, run_ref: str, *, console: Console, patience_s: float = DATABASE_PATIENCE_S
) -> tuple[str, RunProgress]:
    """``read_progress``, waiting out a database outage (a restart, a failover) with backoff.

    The workers go on without us meanwhile; after ``patience_s`` the error stands.
    """

    def complain(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        console.print(f"[yellow]database unreachable ({error}); trying again[/]")

    for attempt in Retrying(
        retry=retry_if_exception_type(OperationalError),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(patience_s),
        before_sleep=complain,
        reraise=True,
    ):
        with attempt:
            return read_progress(db, run_ref)
    raise AssertionError("unreachable: tenacity reraises the last error")


def describe(state: RunProgress) -> str:
    rate = state.done / state.elapsed_s if state.elapsed_s else 0.0
    return f"{state.status} ok {state.ok} failed {state.failed} {rate:.1f}/s"


def watch(
    db: Engine,
    run_ref: str,
    *,
    console: Console,
    poll_s: float = WATCH_POLL_S,
    check: Callable[[], None] | None = None,
) -> RunProgress:
    """Show a progress bar until the run reaches a terminal state; returns that state.

    ``check`` is called on every poll and may raise to stop watching (``fleet run``
    uses it to notice that its local workers died). The database is read every
    ``poll_s``, and ``QUICK_POLL_S`` after the run's status changed (the pause then
    doubles back to ``poll_s``): a run seen ``finalizing`` is seen ``completed`` a
    moment after, not half a second after; so with a bar and in plain lines alike.
    """
    run_id, first = read_progress(db, run_ref)
    if not console.is_terminal:
        return _watch_plain(db, run_id, first, console=console, poll_s=poll_s, check=check)
    columns = (
        TextColumn(f"[bold]{run_id}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("run", total=first.expected, detail=describe(first))
        for state in _states(db, run_id, first, console=console, poll_s=poll_s, check=check):
            bar.update(task, completed=state.done, total=state.expected, detail=describe(state))
        return state


def _states(
    db: Engine,
    run_id: str,
    state: RunProgress,
    *,
    console: Console,
    poll_s: float,
    check: Callable[[], None] | None,
) -> Iterator[RunProgress]:
    """``state``, then the run's progress as read again, to a terminal state included.

    Read every ``poll_s``, and ``QUICK_POLL_S`` after the status changed (the pause
    then doubles back to ``poll_s``). ``check`` runs before every pause.
    """
    pause = min(QUICK_POLL_S, poll_s)
    yield state
    while state.status not in TERMINAL:
        if check is not None:
            check()
        time.sleep(pause)
        seen = state.status
        _, state = read_progress_patiently(db, run_id, console=console)
        pause = min(QUICK_POLL_S, poll_s) if state.status != seen else min(poll_s, pause * 2)
        yield state


#: Seconds between two progress lines when the output is no terminal (a log, a pipe).
PLAIN_EVERY_S = 10.0


def progress_line(run_id: str, state: RunProgress) -> str:
    """``RUN done/total (pct) status ok N failed N rate/s ETA``: one line of a log."""
    share = f" ({state.done / state.expected:.0%})" if state.expected else ""
    rate = state.done / state.elapsed_s if state.elapsed_s else 0.0
    left = state.expected - state.done
    eta = f"ETA {left / rate:.0f}s" if rate and left > 0 and state.status not in TERMINAL else ""
    return f"{run_id} {state.done}/{state.expected}{share} {describe(state)} {eta}".rstrip()


def _watch_plain(
    db: Engine,
    run_id: str,
    first: RunProgress,
    *,
    console: Console,
    poll_s: float,
    check: Callable[[], None] | None,
    every_s: float = PLAIN_EVERY_S,
) -> RunProgress:
    """Plain progress lines, one every ``every_s`` and one at the end, flushed as they go."""
    printed_at: float | None = None
    for state in _states(db, run_id, first, console=console, poll_s=poll_s, check=check):
        now = time.monotonic()
        if state.status in TERMINAL or printed_at is None or now - printed_at >= every_s:
            console.print(progress_line(run_id, state), highlight=False, soft_wrap=True)
            console.file.flush()
            printed_at = now
    return state


def runs_table(db: Engine, *, limit: int = 20) -> Table:
    table = Table(title="recent runs")
    for name in ("run", "status", "created (UTC)", "items", "lanes", "done", "failed"):
        table.add_column(name)
    with session_scope(db) as session:
        for run in recent_runs(session, limit=limit):
            state = progress(session, run_id=run.id)
            table.add_row(
                run.id,
                run.status,
                f"{run.created_at:%Y-%m-%d %H:%M:%S}",
                str(run.item_count),
                str(run.lane_count),
                f"{state.done}/{state.expected}",
                str(state.failed),
            )
    return table
