"""The Celery tasks: thin wiring from a message to the pipeline and back to the broker."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from common.constants import FINALIZE_TASK, SLICE_TASK
from common.db import session_scope
from common.messages import FinalizeOrder, SliceOrder
from common.models import RunStatus
from common.publish import publish_slices
from common.queries import run_status, slice_queues
from common.stats import run_statistics
from common.store import complete_run, reopen_incomplete
from worker.app import app
from worker.failures import RetryLater, database_away, retry_delay, settle_failure
from worker.pipeline import process_slice
from worker.runtime import current_runtime

log = logging.getLogger(__name__)


@app.task(name=SLICE_TASK, bind=True, max_retries=None)
def run_slice(self: Task[Any, Any], run_id: str, slice_id: int) -> dict[str, Any]:
    """Run one slice; the worker that finishes a run's last slice enqueues finalize.

    ``max_retries=None``: no retry limit of Celery's own (its default is 3); each
    failure's limit comes from ``settle_failure`` (none while the database is away).
    """
    order = SliceOrder.decode([run_id, slice_id])
    worker = self.request.hostname or "unknown"
    try:
        outcome = process_slice(current_runtime(), order, worker=worker)
    except Exception as error:
        settled = settle_failure(order, error, worker=worker, retries=self.request.retries)
        if isinstance(settled, RetryLater):
            log.warning(
                "run %s slice %s failed (%s: %s); retry %d in %ss",
                run_id, slice_id, type(error).__name__, error,
                self.request.retries + 1, settled.delay,
            )  # fmt: skip
            raise self.retry(
                exc=error, countdown=settled.delay, max_retries=settled.limit
            ) from error
        log.warning("run %s slice %s quarantined after repeated failures", run_id, slice_id)
        outcome = settled
    if outcome.finalize:
        finalize.apply_async(args=tuple(FinalizeOrder(run_id).to_args()), queue=outcome.queue)
        log.info("run %s: last slice done, finalize enqueued", run_id)
    return {"run_id": run_id, "slice_id": slice_id, "processed": outcome.processed}


@app.task(name=FINALIZE_TASK, bind=True, max_retries=None)
def finalize(self: Task[Any, Any], run_id: str) -> dict[str, Any]:
    """Compute the run's statistics in SQL and mark it completed, once.

    Only a run with a result for every item in every lane completes. A slice
    marked done that is short of results (written under another run by a bad work
    order, or lost by hand) is reopened and sent out again instead. While the
    database is away the task waits it out with backoff, however long it takes.
    """
    order = FinalizeOrder.decode([run_id])
    try:
        return _finalize(order)
    except Exception as error:
        if not database_away(error):
            raise
        delay = retry_delay(self.request.retries)
        log.warning(
            "run %s: finalize waits for the database (%s); again in %ss", run_id, error, delay
        )
        raise self.retry(exc=error, countdown=delay) from error


def _finalize(order: FinalizeOrder) -> dict[str, Any]:
    run_id = order.run_id
    with session_scope(current_runtime().db) as session:
        if run_status(session, run_id=order.run_id) != RunStatus.finalizing:
            reopened: dict[str, list[int]] = {}
        else:
            reopened = slice_queues(
                session,
                run_id=order.run_id,
                slice_ids=reopen_incomplete(session, run_id=order.run_id),
            )
        completed = not reopened and complete_run(
            session,
            run_id=order.run_id,
            stats=run_statistics(session, run_id=order.run_id),
        )
    for queue, slice_ids in reopened.items():
        log.error(
            "run %s: slices %s are done but short of results; reopened and sent out again",
            run_id,
            slice_ids,
        )
        publish_slices(app, run_id=run_id, slice_ids=slice_ids, queue=queue)
    log.info("run %s: finalize %s", run_id, "done" if completed else "skipped")
    return {"run_id": run_id, "completed": completed}
