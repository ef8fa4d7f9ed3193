"""A slice task that raised: try it again later, or, after ``max_attempts`` claims, give up.

Without this, a slice whose task raises (the database away, a model that cannot
load, a soft time limit) would stay ``running`` under a live worker until its
lease ran out. Instead the task is retried with backoff (Celery's own retry: a
new message, the old one acknowledged):

- while the database cannot be reached, for as long as it takes (an outage is
  nobody's item's fault, and SQL still owes the slice): every minute at most;
- after any other error, while the slice has claims left; a slice that already
  used its run's ``max_attempts`` claims has its open items quarantined with the
  error, so the run can finish with them failed rather than loop;
- after an error that came when the slice was no longer running (its work was
  settled, or it is not there at all), a few times (``RETRIES_UNCLAIMED``).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlmodel import select

from common.db import session_scope
from common.messages import SliceOrder
from common.models import Run, Slice, SliceStatus
from common.queries import open_items
from common.results import ErrorKind, ResultRow, error_text
from common.runconfig import RunConfig
from common.store import begin_finalize, finish_slice, save_results
from worker.pipeline import SliceOutcome
from worker.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)

#: Longest wait before a failed slice task runs again, in seconds.
MAX_RETRY_DELAY_S = 60

#: Retries of a task whose error came when its slice was not running (Celery counts
#: every retry of the message, those through an outage included).
RETRIES_UNCLAIMED = 3


@dataclass(frozen=True)
class RetryLater:
    """Run the slice task again in ``delay`` s; ``limit``: most retries, None for no limit."""

    delay: int
    limit: int | None


def retry_delay(retries: int) -> int:
    """Exponential backoff: 1, 2, 4 ... seconds, at most a minute."""
    return int(min(MAX_RETRY_DELAY_S, 2 ** min(retries, 16)))


def database_away(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the database cannot be reached now.

    A refused or reset connection, a server shutting down, a lock or deadlock that
    a later try gets past: SQLAlchemy's ``OperationalError`` and disconnects, and
    the drivers' own operational errors when they surface unwrapped (a pool's
    pre-ping, a table creation at start).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    driver_errors = _driver_errors()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OperationalError, DisconnectionError)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, driver_errors):
            return True
        current = current.__cause__ or current.__context__
    return False


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The operational errors of the drivers this process loaded: psycopg is imported
    by SQLAlchemy only for a PostgreSQL database (a worker on SQLite, the embedded
    default, starts without it), and a driver never loaded raised nothing."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return (sqlite3.OperationalError,)
    return (sqlite3.OperationalError, psycopg.OperationalError)


def settle_failure(
    order: SliceOrder,
    error: BaseException,
    *,
    worker: str,
    retries: int,
    runtime: Callable[[], WorkerRuntime] = current_runtime,
) -> SliceOutcome | RetryLater:
    """What to do about a slice task that raised ``error`` after ``retries`` retries.

    A SliceOutcome: the slice's open items were quarantined (its claims are used up).
    ``runtime`` is called only here, inside the guard: building it needs the database.
    """
    delay = retry_delay(retries)
    if database_away(error):
        return RetryLater(delay, limit=None)
    try:
        return _quarantine_exhausted(runtime(), order, error, worker, delay)
    except Exception as settle_error:  # noqa: BLE001  (whatever it is, the slice is retried)
        if database_away(settle_error):
            log.warning("cannot settle slice %s (database away): retrying", order.slice_id)
            return RetryLater(delay, limit=None)
        log.warning("cannot settle slice %s: %s", order.slice_id, settle_error)
        return RetryLater(delay, limit=RETRIES_UNCLAIMED)


def _quarantine_exhausted(
    runtime: WorkerRuntime, order: SliceOrder, error: BaseException, worker: str, delay: int
) -> SliceOutcome | RetryLater:
    message = error_text(error)
    with session_scope(runtime.db) as session:
        slice_row = session.get(Slice, order.slice_id)
        run = session.get(Run, order.run_id)
        if slice_row is None or run is None or slice_row.status != SliceStatus.running:
            # Whatever failed came after the slice's work (or there is no such slice).
            return RetryLater(delay, limit=RETRIES_UNCLAIMED)
        max_attempts = RunConfig.model_validate(run.config).max_attempts
        if slice_row.attempts < max_attempts:
            return RetryLater(delay, limit=None)  # its claims bound the retries
        items = open_items(session, slice_row=slice_row)
        save_results(
            session,
            rows=[
                ResultRow(
                    run_id=order.run_id,
                    item_id=item.id or 0,
                    lane_index=slice_row.lane_index,
                    slice_id=order.slice_id,
                    worker=worker,
                    gpu_group=runtime.gpu_group,
                    attempts=slice_row.attempts,
                    error_kind=ErrorKind.quarantined,
                    error_message=(
                        f"its slice failed {slice_row.attempts} times "
                        f"(max attempts {max_attempts}); last error: {message}"
                    ),
                )
                for item in items
            ],
        )
        finish_slice(session, run_id=order.run_id, slice_id=order.slice_id)
    with session_scope(runtime.db) as session:
        finalize = begin_finalize(session, run_id=order.run_id)
        queue = session.exec(select(Run.queue).where(Run.id == order.run_id)).one()
    return SliceOutcome(len(items), finalize, queue)
