"""Sending work orders to the broker: one message per slice, ids only."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from sqlalchemy import Engine

from common.constants import FINALIZE_TASK, SLICE_TASK
from common.db import session_scope
from common.messages import FinalizeOrder, SliceOrder
from common.models import RunStatus
from common.queries import resolve_run, slice_queues
from common.store import begin_finalize, reopen_slices

#: How long a publish keeps trying while the broker is away: about a minute.
PUBLISH_RETRY_POLICY = {
    "max_retries": 20,
    "interval_start": 0.5,
    "interval_step": 0.5,
    "interval_max": 5.0,
}


def publish_slices(app: Celery, *, run_id: str, slice_ids: Sequence[int], queue: str) -> None:
    """One ``fleet.run_slice`` message per slice, over one broker connection."""
    with app.producer_or_acquire() as producer:
        for slice_id in slice_ids:
            app.send_task(
                SLICE_TASK,
                args=SliceOrder(run_id, slice_id).to_args(),
                queue=queue,
                producer=producer,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )


def publish_run(db: Engine, app: Celery, *, run_id: str) -> int:
    """Publish every slice of a freshly created run to its lane's queue."""
    with session_scope(db) as session:
        run = resolve_run(session, run_id)
        orders = slice_queues(session, run_id=run.id)
    for queue, slice_ids in orders.items():
        publish_slices(app, run_id=run_id, slice_ids=slice_ids, queue=queue)
    return sum(len(slice_ids) for slice_ids in orders.values())


def resume_run(db: Engine, app: Celery, *, run_ref: str) -> tuple[str, int]:
    """Rebuild a run's work orders from SQL; returns (run id, orders sent).

    Slices not done are published again (a redelivered slice only does what is
    missing); a run whose slices are all done gets its finalize order instead.
    """
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        if run.status in (RunStatus.completed, RunStatus.cancelled):
            return run.id, 0
        reopened = reopen_slices(session, run_id=run.id)
        run_id, queue, status = run.id, run.queue, run.status
        orders = slice_queues(session, run_id=run_id, slice_ids=reopened) if reopened else {}
    if reopened:
        for lane_queue, slice_ids in orders.items():
            publish_slices(app, run_id=run_id, slice_ids=slice_ids, queue=lane_queue)
        return run_id, len(reopened)
    with session_scope(db) as session:
        finalize = status == RunStatus.finalizing or begin_finalize(session, run_id=run_id)
    if finalize:
        publish_finalize(app, run_id=run_id, queue=queue)
        return run_id, 1
    return run_id, 0


def publish_finalize(app: Celery, *, run_id: str, queue: str) -> None:
    """The run's ``fleet.finalize`` order (for the one caller that won ``begin_finalize``)."""
    app.send_task(
        FINALIZE_TASK,
        args=FinalizeOrder(run_id).to_args(),
        queue=queue,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )
