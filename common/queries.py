"""Every read: run lookup, progress, a slice's open items, export rows, statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from common.constants import LATEST
from common.errors import RunNotFound
from common.models import (
    OPEN_SLICE_STATES,
    Attempt,
    Item,
    Lane,
    Receipt,
    Result,
    Run,
    RunStat,
    RunStatus,
    Slice,
    SliceStatus,
    Stat,
    WorkerBeat,
    utcnow,
)


def resolve_run(session: Session, run_ref: str) -> Run:
    """The run named by id, or the newest one for ``latest``."""
    if run_ref == LATEST:
        run = session.exec(select(Run).order_by(col(Run.created_at).desc()).limit(1)).first()
    else:
        run = session.get(Run, run_ref)
    if run is None:
        raise RunNotFound(run_ref)
    return run


def recent_runs(session: Session, *, limit: int = 20) -> list[Run]:
    return list(session.exec(select(Run).order_by(col(Run.created_at).desc()).limit(limit)))


def lanes_of(session: Session, *, run_id: str) -> list[Lane]:
    return list(session.exec(select(Lane).where(Lane.run_id == run_id).order_by(col(Lane.index))))


@dataclass(frozen=True)
class Progress:
    """Where a run stands, read from SQL."""

    status: str
    expected: int
    ok: int
    failed: int
    slices_done: int
    slices_total: int
    started_at: datetime | None
    finished_at: datetime | None = None

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def elapsed_s(self) -> float:
        """Seconds from the start to the finish, or to now while the run goes on."""
        if self.started_at is None:
            return 0.0
        return max(((self.finished_at or utcnow()) - self.started_at).total_seconds(), 0.0)


def progress(session: Session, *, run_id: str) -> Progress:
    """Read from the run's row alone: the counts its slices added as they finished,
    so a run of a million items costs what a run of ten does."""
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return Progress(
        status=run.status,
        expected=run.item_count * run.lane_count,
        ok=run.results_ok,
        failed=run.results_failed,
        slices_done=run.slices_done,
        slices_total=run.slice_count,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def failure_causes(session: Session, *, run_id: str, limit: int = 3) -> list[tuple[str, int, str]]:
    """The commonest error kinds of a run's failed results: (kind, count, one message).

    Read once, when a run ends with failures, to say why on stderr.
    """
    rows = session.execute(
        sa.select(
            col(Result.error_kind),
            sa.func.count(),
            sa.func.min(col(Result.error_message)),
        )
        .where(col(Result.run_id) == run_id, sa.not_(col(Result.ok)))
        .group_by(col(Result.error_kind))
        .order_by(sa.func.count().desc(), col(Result.error_kind))
        .limit(limit)
    ).all()
    return [(str(kind), int(count), message or "") for kind, count, message in rows]


def iter_results(
    session: Session, *, run_id: str, chunk: int = 1000
) -> Iterator[tuple[Item, int, Result | None]]:
    """Every (item, lane index, result or None) of a run in input order, streamed.

    ``chunk`` items at a time, each chunk a range of ``seq`` (0 to the run's item
    count, without gaps), and its results lane by lane as a range of item ids:
    a run's items take their ids in input order (``create_run`` inserts them so),
    so each read is one range of a unique index, whatever the planner's statistics
    say, and memory stays that of one chunk.
    """
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(run_id)
    lanes = [lane.index for lane in lanes_of(session, run_id=run_id)]
    for start in range(0, run.item_count, chunk):
        items = list(
            session.exec(
                select(Item)
                .where(Item.run_id == run_id, Item.seq >= start, Item.seq < start + chunk)
                .order_by(col(Item.seq))
            )
        )
        if not items:
            continue
        low = min(item.id or 0 for item in items)
        high = max(item.id or 0 for item in items)
        results = {
            (result.item_id, result.lane_index): result
            for lane in lanes
            for result in session.exec(
                select(Result).where(
                    Result.run_id == run_id,
                    Result.lane_index == lane,
                    Result.item_id >= low,
                    Result.item_id <= high,
                )
            )
        }
        for item in items:
            for lane in lanes:
                yield item, lane, results.get((item.id or 0, lane))


def iter_items(session: Session, *, run_id: str, chunk: int = 1000) -> Iterator[Item]:
    """Every item of a run in input order, ``chunk`` at a time (a range of ``seq`` each)."""
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotFound(run_id)
    for start in range(0, run.item_count, chunk):
        yield from session.exec(
            select(Item)
            .where(Item.run_id == run_id, Item.seq >= start, Item.seq < start + chunk)
            .order_by(col(Item.seq))
        )


def stored_stats(session: Session, *, run_id: str) -> list[Stat]:
    rows = session.exec(select(RunStat).where(RunStat.run_id == run_id).order_by(col(RunStat.id)))
    return [(row.scope, row.metric, row.value) for row in rows]


def open_items(session: Session, *, slice_row: Slice, first_claim: bool = False) -> list[Item]:
    """The slice's items that have no result in its lane yet, in input order.

    ``first_claim``: the slice was just claimed for the first time, so it holds no
    results yet (results are written only under a claim; a rejected record's result
    names the slice, but its item is not one to run): the look for them is skipped.

    Two index lookups, each bounded by the slice's own rows whatever the size of
    its run: the slice's range of items (``uq`` on (run, seq), or
    ``ix_item_run_slice_pos``), and the slice's results (``ix_result_slice``). No
    join for a planner to turn into a scan of the run's results.
    """
    # A --sort-by-length run's slices are ranges of the slicing order, not of seq.
    position = col(Item.slice_pos) if slice_row.by_length else col(Item.seq)
    items = session.exec(
        select(Item).where(
            Item.run_id == slice_row.run_id,
            position >= slice_row.seq_start,
            position < slice_row.seq_end,
            col(Item.reject_reason).is_(None),
        )
    ).all()
    answered = (
        set()
        if first_claim
        else set(session.exec(select(Result.item_id).where(Result.slice_id == slice_row.id)))
    )
    return sorted((item for item in items if item.id not in answered), key=lambda item: item.seq)


def attempt_counts(session: Session, *, slice_id: int) -> dict[int, tuple[int, str | None]]:
    """(attempts so far, last error) of a slice's items that were tried before, by item id.

    Through ``ix_attempt_slice``: the slice's own rows, in a run of any size.
    """
    rows = session.exec(
        select(Attempt.item_id, Attempt.count, Attempt.last_error).where(
            Attempt.slice_id == slice_id
        )
    )
    return {item_id: (count, last_error) for item_id, count, last_error in rows}


def run_status(session: Session, *, run_id: str) -> str:
    """The run's status; a core query (the worker asks before every batch)."""
    table = Run.__table__  # type: ignore[attr-defined]
    status = session.execute(sa.select(table.c.status).where(table.c.id == run_id)).scalar()
    if status is None:
        raise RunNotFound(run_id)
    return status


def _abandoned_by(worker: Any, since: Any, silent_since: datetime) -> Any:
    """SQL: ``worker``, which took something at ``since``, is gone.

    Gone: its last beat is older than ``silent_since``, or it booted again after
    ``since``; or it never beat at all although ``since`` is older than
    ``silent_since`` (killed before its first beat).
    """
    beats = select(WorkerBeat.name).where(WorkerBeat.name == worker)
    live = beats.where(
        col(WorkerBeat.seen_at) >= silent_since, col(WorkerBeat.booted_at) <= since
    ).exists()
    return ~live & (beats.exists() | (since < silent_since))


def stuck_slices(
    session: Session, *, lease_cutoff: datetime, silent_since: datetime | None
) -> list[tuple[int, int, str, str]]:
    """(slice id, attempts, run id, queue) of abandoned ``running`` slices of live runs.

    Abandoned: claimed before ``lease_cutoff``; or held by a worker that is gone
    (``_abandoned_by``). ``silent_since`` None: heartbeats are off, only the lease
    counts.
    """
    abandoned = col(Slice.started_at) < lease_cutoff
    if silent_since is not None:
        abandoned = abandoned | (
            col(Slice.worker).is_not(None)
            & _abandoned_by(Slice.worker, Slice.started_at, silent_since)
        )
    rows = session.execute(
        select(Slice.id, Slice.attempts, Slice.run_id, Run.queue)
        .join(Run, col(Run.id) == col(Slice.run_id))
        .where(
            Slice.status == SliceStatus.running.value,
            abandoned,
            col(Run.status).in_([RunStatus.pending.value, RunStatus.running.value]),
        )
        .order_by(col(Slice.id))
    )
    return [(slice_id, attempts, run_id, queue) for slice_id, attempts, run_id, queue in rows]


def orphaned_receipts(
    session: Session, *, silent_since: datetime
) -> list[tuple[int, str, datetime, str, str]]:
    """(slice id, worker, received at, run id, queue) of work orders that were lost.

    The slice is still ``pending`` (never claimed), its run is live, and either the
    worker that received the message is gone (``_abandoned_by``): the message waits
    in the broker's unacked set for the visibility timeout, and nobody else would run
    the slice before that; or that worker has claimed another slice since: a worker
    holds one order at a time (prefetch 1, late acks), so it no longer holds this
    one. That is an order it handed back to a broker that had just died (Celery
    restores its unacknowledged messages as the connection drops), lost with it.
    """
    later = aliased(Slice)
    moved_on = (
        sa.select(col(later.id))
        .where(
            col(later.worker) == col(Receipt.worker),
            col(later.started_at) > col(Receipt.received_at),
        )
        .exists()
    )
    rows = session.execute(
        # sqlalchemy's select: sqlmodel's is typed for at most four columns.
        sa.select(
            col(Receipt.slice_id),
            col(Receipt.worker),
            col(Receipt.received_at),
            col(Slice.run_id),
            col(Run.queue),
        )
        .join(Slice, col(Slice.id) == col(Receipt.slice_id))
        .join(Run, col(Run.id) == col(Slice.run_id))
        .where(
            col(Slice.status) == SliceStatus.pending.value,
            _abandoned_by(Receipt.worker, Receipt.received_at, silent_since) | moved_on,
            col(Run.status).in_([RunStatus.pending.value, RunStatus.running.value]),
        )
        .order_by(col(Receipt.slice_id))
    )
    return [
        (slice_id, worker, received_at, run_id, queue)
        for slice_id, worker, received_at, run_id, queue in rows
    ]


def runs_owing_finalize(session: Session) -> list[tuple[str, str, str]]:
    """(run id, queue, status) of runs with no open slice that are not completed yet.

    A ``pending``/``running`` one lost the finalize hand-off (the last worker died
    between its slice and the compare-and-set); a ``finalizing`` one may have lost
    its finalize order.
    """
    open_slice = (
        select(Slice.id)
        .where(Slice.run_id == Run.id, col(Slice.status).in_(OPEN_SLICE_STATES))
        .exists()
    )
    rows = session.execute(
        select(Run.id, Run.queue, Run.status).where(
            col(Run.status).in_(
                [RunStatus.pending.value, RunStatus.running.value, RunStatus.finalizing.value]
            ),
            ~open_slice,
        )
    )
    return [(run_id, queue, status) for run_id, queue, status in rows]


def slice_queues(
    session: Session, *, run_id: str, slice_ids: Sequence[int] | None = None
) -> dict[str, list[int]]:
    """Slice ids of a run (all, or ``slice_ids``) by their lane's queue, lane-then-range order."""
    query = (
        select(Lane.queue, Slice.id)
        .join(
            Lane,
            sa.and_(
                col(Lane.run_id) == col(Slice.run_id), col(Lane.index) == col(Slice.lane_index)
            ),
        )
        .where(Slice.run_id == run_id)
        .order_by(col(Slice.lane_index), col(Slice.index))
    )
    if slice_ids is not None:
        query = query.where(col(Slice.id).in_(list(slice_ids)))
    orders: dict[str, list[int]] = {}
    for queue, slice_id in session.exec(query):
        if slice_id is not None:
            orders.setdefault(queue, []).append(slice_id)
    return orders


def pending_slices(session: Session, *, run_id: str) -> list[int]:
    """Ids of the run's slices that no worker has claimed (``ix_slice_run_status``)."""
    rows = session.exec(
        select(Slice.id).where(Slice.run_id == run_id, Slice.status == SliceStatus.pending)
    )
    return [slice_id for slice_id in rows if slice_id is not None]
