"""Sending work orders to the broker: one message per slice, ids only.

While the broker is away a publish keeps trying for a bounded time
(``FLEET_PUBLISH_RETRY_S``, kombu's own retry with backoff), then stops with
``PublishIncomplete``: how many orders went out, and that ``fleet resume RUN``
sends the rest (the run and its slices are in SQL whatever the broker did).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Engine

from common.constants import FINALIZE_TASK, SLICE_TASK
from common.db import session_scope
from common.errors import PublishIncomplete
from common.messages import FinalizeOrder, SliceOrder
from common.models import RunStatus
from common.queries import pending_slices, resolve_run, slice_queues
from common.store import begin_finalize, reopen_slices

#: How long one publish keeps trying while the broker is away, in seconds.
PUBLISH_RETRY_S = 60.0

#: Waits between two tries: 0.5 s, then 0.5 s longer each time, at most 5 s.
_FIRST_WAIT_S, _WAIT_STEP_S, _LONGEST_WAIT_S = 0.5, 0.5, 5.0


def retry_policy(retry_s: float) -> dict[str, Any]:
    """kombu's retry policy for a publish: as many backed-off tries as fit in ``retry_s``."""
    tries, waited = 0, 0.0
    while True:
        wait = min(_LONGEST_WAIT_S, _FIRST_WAIT_S + _WAIT_STEP_S * tries)
        if waited + wait > retry_s:
            break
        tries, waited = tries + 1, waited + wait
    return {
        "max_retries": tries,
        "interval_start": _FIRST_WAIT_S,
        "interval_step": _WAIT_STEP_S,
        "interval_max": _LONGEST_WAIT_S,
    }


def publish_slices(
    app: Celery,
    *,
    run_id: str,
    slice_ids: Sequence[int],
    queue: str,
    retry_s: float = PUBLISH_RETRY_S,
) -> None:
    """One ``fleet.run_slice`` message per slice, over one broker connection.

    PublishIncomplete (with the count sent) if the broker stays away ``retry_s``.
    """
    policy = retry_policy(retry_s)
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for slice_id in slice_ids:
                app.send_task(
                    SLICE_TASK,
                    args=SliceOrder(run_id, slice_id).to_args(),
                    queue=queue,
                    producer=producer,
                    retry=True,
                    retry_policy=policy,
                )
                sent += 1
    except (BrokerError, OSError) as error:
        raise _incomplete(app, run_id, sent, len(slice_ids), error) from error


def _incomplete(
    app: Celery, run_id: str, published: int, total: int, error: BaseException
) -> PublishIncomplete:
    with app.connection_for_write() as connection:
        broker = connection.as_uri()  # the password masked
    return PublishIncomplete(
        run_id, published=published, total=total, broker=broker, cause=str(error)
    )


def publish_run(db: Engine, app: Celery, *, run_id: str, retry_s: float = PUBLISH_RETRY_S) -> int:
    """Publish every slice of a freshly created run to its lane's queue."""
    with session_scope(db) as session:
        run = resolve_run(session, run_id)
        orders = slice_queues(session, run_id=run.id)
    return _publish_orders(app, run_id, orders, retry_s)


def _publish_orders(app: Celery, run_id: str, orders: dict[str, list[int]], retry_s: float) -> int:
    """Publish ``orders`` (slice ids by queue); PublishIncomplete counts the whole run's."""
    total = sum(len(slice_ids) for slice_ids in orders.values())
    sent = 0
    for queue, slice_ids in orders.items():
        try:
            publish_slices(app, run_id=run_id, slice_ids=slice_ids, queue=queue, retry_s=retry_s)
        except PublishIncomplete as incomplete:
            raise PublishIncomplete(
                run_id,
                published=sent + incomplete.published,
                total=total,
                broker=incomplete.broker,
                cause=incomplete.cause,
            ) from incomplete
        sent += len(slice_ids)
    return total


def publish_pending(
    db: Engine, app: Celery, *, run_id: str, retry_s: float = PUBLISH_RETRY_S
) -> int:
    """A new order for every slice of the run still ``pending``: after a broker lost some.

    One that still has its order runs once all the same (a claim of a done slice does
    nothing).
    """
    with session_scope(db) as session:
        pending = pending_slices(session, run_id=run_id)
        orders = slice_queues(session, run_id=run_id, slice_ids=pending) if pending else {}
    return _publish_orders(app, run_id, orders, retry_s)


def resume_run(
    db: Engine, app: Celery, *, run_ref: str, retry_s: float = PUBLISH_RETRY_S
) -> tuple[str, int]:
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
        return run_id, _publish_orders(app, run_id, orders, retry_s)
    with session_scope(db) as session:
        finalize = status == RunStatus.finalizing or begin_finalize(session, run_id=run_id)
    if finalize:
        publish_finalize(app, run_id=run_id, queue=queue, retry_s=retry_s)
        return run_id, 1
    return run_id, 0


def publish_finalize(
    app: Celery, *, run_id: str, queue: str, retry_s: float = PUBLISH_RETRY_S
) -> None:
    """The run's ``fleet.finalize`` order (for the one caller that won ``begin_finalize``)."""
    try:
        app.send_task(
            FINALIZE_TASK,
            args=FinalizeOrder(run_id).to_args(),
            queue=queue,
            retry=True,
            retry_policy=retry_policy(retry_s),
        )
    except (BrokerError, OSError) as error:
        raise _incomplete(app, run_id, 0, 1, error) from error
