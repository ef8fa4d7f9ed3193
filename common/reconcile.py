"""The reconciler: hand out again what a dead worker or a lost message left behind.

Two things can stall a run although SQL says exactly what it still owes:

- a slice stays ``running`` after its worker was killed (``kill -9``, a lost
  machine): Redis would redeliver its message only after the visibility timeout,
  and not at all if the broker lost it. The reconciler takes the slice over (by
  compare-and-set on its claim count) and publishes a new work order as soon as
  its worker stopped beating (``WorkerBeat``: silent for three heartbeat
  intervals, or booted again since the claim), and in any case past the slice
  lease (the hard time limit plus a margin: no live worker can still hold it);
- a slice stays ``pending`` although a worker took its message, because that
  worker was killed before its pool process claimed the slice: Redis keeps the
  message unacknowledged until the visibility timeout. The worker noted the
  receipt (``Receipt``) as it took the message; once that worker is silent, the
  reconciler drops the receipt (compare-and-set) and publishes a new work order;
- every slice is done but nobody finalized (the last worker died between its
  slice and the hand-off, or the finalize order was lost): the reconciler does
  the compare-and-set itself and publishes the finalize order.

Both are safe to run from many places at once: the compare-and-set picks one
winner, a redelivered slice runs only items without a result, and finalize
completes a run once. ``fleet reconcile`` runs one pass; every worker runs a pass
every ``FLEET_RECONCILE_INTERVAL`` seconds (``worker.upkeep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import Engine

from common.db import session_scope
from common.models import RunStatus, utcnow
from common.publish import publish_finalize, publish_slices
from common.queries import orphaned_receipts, runs_owing_finalize, stuck_slices
from common.store import begin_finalize, release_receipt, renew_lease


@dataclass
class Reconciled:
    """What one pass did: slices handed out again, runs sent to finalize."""

    requeued: list[tuple[str, int]] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)


def reconcile(
    db: Engine,
    app: Celery,
    *,
    lease_s: int,
    heartbeat_timeout_s: int,
    now: datetime | None = None,
) -> Reconciled:
    """One pass over every run in the database.

    ``heartbeat_timeout_s`` 0 means heartbeats are off: only the lease counts.
    """
    done = Reconciled()
    now = now or utcnow()
    silent_since = now - timedelta(seconds=heartbeat_timeout_s) if heartbeat_timeout_s else None
    with session_scope(db) as session:
        stuck = stuck_slices(
            session, lease_cutoff=now - timedelta(seconds=lease_s), silent_since=silent_since
        )
    for slice_id, attempts, run_id, queue in stuck:
        with session_scope(db) as session:
            won = renew_lease(session, slice_id=slice_id, attempts=attempts)
        if won:
            done.requeued.append(_hand_out(app, run_id, slice_id, queue))
    if silent_since is not None:
        with session_scope(db) as session:
            orphans = orphaned_receipts(session, silent_since=silent_since)
        for slice_id, worker, received_at, run_id, queue in orphans:
            with session_scope(db) as session:
                won = release_receipt(
                    session, slice_id=slice_id, worker=worker, received_at=received_at
                )
            if won:
                done.requeued.append(_hand_out(app, run_id, slice_id, queue))
    with session_scope(db) as session:
        owing = runs_owing_finalize(session)
    for run_id, queue, status in owing:
        if status != RunStatus.finalizing:
            with session_scope(db) as session:
                if not begin_finalize(session, run_id=run_id):
                    continue
        publish_finalize(app, run_id=run_id, queue=queue)
        done.finalized.append(run_id)
    return done


def _hand_out(app: Celery, run_id: str, slice_id: int, queue: str) -> tuple[str, int]:
    """Publish a new work order for a slice the caller took over; what to report."""
    publish_slices(app, run_id=run_id, slice_ids=[slice_id], queue=queue)
    return run_id, slice_id
