"""A slice task that raised: try it again later, or, after ``max_attempts`` claims, give up.

Without this, a slice whose task raises (the database away for a moment, a model
that cannot load, a soft time limit) would stay ``running`` under a live worker
until its lease ran out. Instead the task is retried with backoff (Celery's own
retry: a new message, the old one acknowledged), and a slice that already used
its run's ``max_attempts`` claims has its open items quarantined with the error,
so the run can finish with them failed rather than loop.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from common.db import session_scope
from common.messages import SliceOrder
from common.models import Run, Slice, SliceStatus
from common.queries import open_items
from common.runconfig import RunConfig
from common.store import begin_finalize, finish_slice, save_results
from worker.attempts import MAX_ERROR_CHARS, QUARANTINED
from worker.pipeline import SliceOutcome
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: Longest wait before a failed slice task runs again, in seconds.
MAX_RETRY_DELAY_S = 60


def retry_delay(retries: int) -> int:
    """Exponential backoff: 1, 2, 4 ... seconds, at most a minute."""
    return int(min(MAX_RETRY_DELAY_S, 2 ** min(retries, 16)))


def give_up_if_exhausted(
    runtime: WorkerRuntime, order: SliceOrder, error: BaseException, *, worker: str
) -> SliceOutcome | None:
    """Quarantine the slice's open items if it was claimed ``max_attempts`` times.

    None means "retry": the slice still has attempts left, or is not ``running``
    any more (whatever failed came after its work, e.g. the finalize check).
    """
    try:
        return _quarantine_exhausted(runtime, order, error, worker)
    except SQLAlchemyError:
        log.warning("cannot settle slice %s (database away): retrying", order.slice_id)
        return None


def _quarantine_exhausted(
    runtime: WorkerRuntime, order: SliceOrder, error: BaseException, worker: str
) -> SliceOutcome | None:
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    with session_scope(runtime.db) as session:
        slice_row = session.get(Slice, order.slice_id)
        run = session.get(Run, order.run_id)
        if slice_row is None or run is None or slice_row.status != SliceStatus.running:
            return None
        max_attempts = RunConfig.model_validate(run.config).max_attempts
        if slice_row.attempts < max_attempts:
            return None
        items = open_items(session, slice_row=slice_row)
        save_results(
            session,
            rows=[
                {
                    "run_id": order.run_id,
                    "item_id": item.id,
                    "lane_index": slice_row.lane_index,
                    "slice_id": order.slice_id,
                    "ok": False,
                    "worker": worker,
                    "gpu_group": runtime.gpu_group,
                    "attempts": slice_row.attempts,
                    "error_kind": QUARANTINED,
                    "error_message": (
                        f"its slice failed {slice_row.attempts} times "
                        f"(max attempts {max_attempts}); last error: {message}"
                    ),
                }
                for item in items
            ],
        )
        finish_slice(session, run_id=order.run_id, slice_id=order.slice_id)
    with session_scope(runtime.db) as session:
        finalize = begin_finalize(session, run_id=order.run_id)
        queue = session.exec(select(Run.queue).where(Run.id == order.run_id)).one()
    return SliceOutcome(len(items), finalize, queue)
