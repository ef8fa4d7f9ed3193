"""Every write to SQL. Keyword-only functions that take the session first.

The caller owns the transaction (``common.db.session_scope``); each function here
is one step of it. Writes are idempotent: results are upserted on their unique
key, state changes are compare-and-set on the row's current state.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Text,
    bindparam,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from common.errors import ForeignWorkOrder
from common.models import (
    OPEN_SLICE_STATES,
    Attempt,
    Item,
    Lane,
    Receipt,
    ReconcileTurn,
    Result,
    Run,
    RunStat,
    RunStatus,
    Slice,
    SliceStatus,
    WorkerBeat,
    utcnow,
)
from common.results import ResultRow

#: Result columns a retry may overwrite; ``attempts`` is counted separately.
_RESULT_UPDATABLE = (
    "slice_id",
    "ok",
    "answer",
    "parsed",
    "score",
    "scores",
    "prompt",
    "latency_s",
    "tokens_in",
    "tokens_out",
    "batch_size",
    "worker",
    "gpu_group",
    "error_kind",
    "error_message",
    "finish_reason",
    "created_at",
)

#: Ids per ``IN`` list: well under SQLite's and PostgreSQL's limits on bound
#: parameters (32,766 and 65,535).
ROWS_PER_STATEMENT = 500


def insert_run(session: Session, *, run: Run, lanes: Sequence[Lane]) -> None:
    session.add(run)
    session.flush()  # the lanes' foreign key needs the run row first
    session.add_all(lanes)
    session.flush()


def insert_items(session: Session, *, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk-insert item rows (dicts of Item columns, all with the same keys).

    PostgreSQL takes them through ``COPY`` in the session's transaction: one
    stream instead of a statement per row, which the server parses and plans for
    each. SQLite inserts them in process (``executemany``).
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(Item.__table__), list(rows))  # type: ignore[attr-defined]
        return
    columns = list(rows[0])
    json_columns = {name for name in columns if isinstance(Item.__table__.c[name].type, JSON)}  # type: ignore[attr-defined]
    copy_sql = f"COPY item ({', '.join(columns)}) FROM STDIN"
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(
                [json.dumps(row[name]) if name in json_columns else row[name] for name in columns]
            )


def insert_slices(session: Session, *, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(Slice.__table__), list(rows))  # type: ignore[attr-defined]


def set_run_counts(
    session: Session, *, run_id: str, item_count: int, rejected_count: int, slice_count: int
) -> None:
    session.execute(
        update(Run)
        .where(col(Run.id) == run_id)
        .values(item_count=item_count, rejected_count=rejected_count, slice_count=slice_count)
    )


def claim_slice(session: Session, *, run_id: str, slice_id: int, worker: str) -> Slice | None:
    """Mark a slice as running on ``worker``, one claim more: the slice as claimed, or
    None when it owes nothing any more (done, or its run no longer pending or running).
    A pending run becomes running.

    One statement (``_claim_statement``), a compare-and-set on the slice's row: on
    PostgreSQL the run's change is a data-modifying CTE of it, so a worker runs it as
    its own transaction, one round trip; SQLite changes the run after it, in the same
    transaction.

    Raises ``ForeignWorkOrder`` (nothing written) when the slice is not ``run_id``'s:
    an order from a broker that outlived its database must not write one run's
    items as another run's results.
    """
    now = utcnow()
    dialect = session.get_bind().dialect.name
    params = {"of_run": run_id, "of_slice": slice_id, "worker": worker, "now": now}
    claimed = session.execute(_claim_statement(dialect), params).mappings().first()
    if claimed is None:
        owner = session.execute(select(Slice.run_id).where(col(Slice.id) == slice_id)).scalar()
        if owner != run_id:
            raise ForeignWorkOrder(run_id, slice_id, owner)
        return None
    if dialect != "postgresql":
        session.execute(_run_started(), params)
    return Slice(**claimed)


@functools.cache
def _claim_statement(dialect: str) -> Any:
    """The slice set running on ``worker`` if it is open and its run pending or running,
    returning the slice's row; on PostgreSQL with the run set running if pending.
    Parameters: ``of_run``, ``of_slice``, ``worker``, ``now``."""
    slices, runs = Slice.__table__, Run.__table__  # type: ignore[attr-defined]
    open_slice = (
        slices.c.id == bindparam("of_slice", type_=slices.c.id.type),
        slices.c.run_id == bindparam("of_run"),
        slices.c.status.in_(OPEN_SLICE_STATES),
    )
    live_run = exists().where(
        runs.c.id == bindparam("of_run"),
        runs.c.status.in_((RunStatus.pending.value, RunStatus.running.value)),
    )
    claim = (
        update(slices)
        .where(*open_slice, live_run)
        .values(
            status=SliceStatus.running.value,
            attempts=slices.c.attempts + 1,
            worker=bindparam("worker"),
            started_at=bindparam("now"),
        )
        .returning(*slices.c)
    )
    if dialect != "postgresql":
        return claim
    # The parts of one statement see the rows as they were when it began: the run is
    # changed only if the slice is open, the condition the claim checks too.
    started = _run_started().where(exists().where(*open_slice)).cte("started")
    return claim.add_cte(started)


@functools.cache
def _run_started() -> Any:
    """A pending run set running (``of_run``, ``now``)."""
    runs = Run.__table__  # type: ignore[attr-defined]
    return (
        update(runs)
        .where(runs.c.id == bindparam("of_run"), runs.c.status == RunStatus.pending.value)
        .values(status=RunStatus.running.value, started_at=bindparam("now"))
    )


def save_results(session: Session, *, rows: Sequence[ResultRow]) -> None:
    """Upsert results on (run, lane, item), one statement for all rows (``_bulk_upsert``).

    An ok answer is never overwritten.
    """
    if rows:
        _bulk_upsert(session, _result_upsert, _result_columns(rows))


def _result_columns(rows: Sequence[ResultRow]) -> list[dict[str, Any]]:
    now = utcnow()
    return [{**row.columns(), "created_at": now} for row in rows]


@functools.cache
def _result_upsert(dialect: str, columns: tuple[str, ...], param: str = "rows") -> Any:
    table = Result.__table__  # type: ignore[attr-defined]
    statement = _bulk_insert(dialect, table, columns, param=param)
    return statement.on_conflict_do_update(
        index_elements=["run_id", "lane_index", "item_id"],
        set_={
            **{name: statement.excluded[name] for name in _RESULT_UPDATABLE},
            "attempts": table.c.attempts + 1,
        },
        where=table.c.ok.is_(False),
    )


def finish_slice(
    session: Session, *, run_id: str, slice_id: int, saving: Sequence[ResultRow] = ()
) -> bool:
    """Store the slice's last results (``saving``), mark it done if open, and add its
    results to its run's counts. On PostgreSQL one statement (``_finish_statement``).

    True when this closed the run's last slice by the run's count: the caller then
    tries ``begin_finalize`` once this transaction is committed. Of the slices
    finishing together, the run row's lock orders the count updates, so the one
    that brings ``slices_done`` to ``slice_count`` is the last to commit. (Should
    the count ever be short, the reconciler's pass finalizes the run instead.)

    The slice's row is updated first: of two workers finishing the same slice at
    once (the reconciler handed out a slice whose worker was only slow), the
    second waits for the first's row lock, then finds it done and adds nothing.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _finish_slice_in_one(session, run_id=run_id, slice_id=slice_id, saving=saving)
    save_results(session, rows=saving)
    ok, failed = _slice_counts(session, slice_id=slice_id)
    outcome = session.execute(
        update(Slice)
        .where(col(Slice.id) == slice_id, col(Slice.status).in_(OPEN_SLICE_STATES))
        .values(
            status=SliceStatus.done.value,
            finished_at=utcnow(),
            results_ok=ok,
            results_failed=failed,
        )
    )
    session.execute(delete(Receipt).where(col(Receipt.slice_id) == slice_id))
    if outcome.rowcount != 1:  # type: ignore[attr-defined]
        return False
    done, total = session.execute(
        update(Run)
        .where(col(Run.id) == run_id)
        .values(
            results_ok=col(Run.results_ok) + ok,
            results_failed=col(Run.results_failed) + failed,
            slices_done=col(Run.slices_done) + 1,
        )
        .returning(col(Run.slices_done), col(Run.slice_count))
    ).one()
    return bool(done >= total)


def _finish_slice_in_one(
    session: Session, *, run_id: str, slice_id: int, saving: Sequence[ResultRow]
) -> bool:
    """``finish_slice``'s steps as one PostgreSQL statement, one round trip."""
    params: dict[str, Any] = {"of_run": run_id, "of_slice": slice_id, "now": utcnow()}
    columns: tuple[str, ...] = ()
    if saving:
        results = _result_columns(saving)
        columns = tuple(results[0])
        params |= _bulk_params(results, "results")
    added = session.execute(_finish_statement(columns), params).one_or_none()
    return added is not None and bool(added[0] >= added[1])


@functools.cache
def _finish_statement(saved_columns: tuple[str, ...] = ()) -> Any:
    """Stores the slice's last results when ``saved_columns`` names their columns
    (``_result_upsert`` as a data-modifying CTE), counts the slice's results, marks
    it done (a slice already done matches nothing, as in ``finish_slice``), drops
    its receipt and adds its counts to the run's row only when the slice was marked
    here. Built once per shape: its values are bound parameters, ``of_run``,
    ``of_slice`` and ``now`` (not named like a column: the UPDATE would take a
    parameter named ``run_id`` as a value to set), and the rows' ``results``.

    The parts of one statement see the rows as they were when it began, not each
    other's writes: the counts take the results stored here from the upsert's
    RETURNING, and the slice's other results from the table (an ok result the
    upsert left alone returns nothing and is counted there).
    """
    slices, runs = Slice.__table__, Run.__table__  # type: ignore[attr-defined]
    results, receipts = Result.__table__, Receipt.__table__  # type: ignore[attr-defined]
    slice_id = bindparam("of_slice", type_=slices.c.id.type)
    stored: Any = select(results.c.ok).where(results.c.slice_id == slice_id)
    saved = _saved_results(saved_columns) if saved_columns else None
    if saved is not None:
        others = stored.where(results.c.item_id.not_in(select(saved.c.item_id)))
        stored = union_all(others, select(saved.c.ok))
    every = stored.subquery("every")
    counts = select(
        func.count().filter(every.c.ok.is_(True)).label("ok"),
        func.count().filter(every.c.ok.is_(False)).label("failed"),
    ).cte("counts")
    marked = (
        update(slices)
        .where(slices.c.id == slice_id, slices.c.status.in_(OPEN_SLICE_STATES))
        .values(
            status=SliceStatus.done.value,
            finished_at=bindparam("now", type_=slices.c.finished_at.type),
            results_ok=select(counts.c.ok).scalar_subquery(),
            results_failed=select(counts.c.failed).scalar_subquery(),
        )
        .returning(slices.c.results_ok, slices.c.results_failed)
        .cte("marked")
    )
    receipt = (
        delete(receipts)
        .where(receipts.c.slice_id == slice_id)
        .returning(receipts.c.slice_id)
        .cte("receipt")
    )
    statement = (
        update(runs)
        .where(
            runs.c.id == bindparam("of_run", type_=runs.c.id.type),
            exists(select(marked.c.results_ok)),
        )
        .values(
            results_ok=runs.c.results_ok + select(marked.c.results_ok).scalar_subquery(),
            results_failed=runs.c.results_failed
            + select(marked.c.results_failed).scalar_subquery(),
            slices_done=runs.c.slices_done + 1,
        )
        .returning(runs.c.slices_done, runs.c.slice_count)
        .add_cte(receipt)
    )
    return statement if saved is None else statement.add_cte(saved)


def _slice_counts(session: Session, *, slice_id: int) -> tuple[int, int]:
    """(ok, failed) results of one slice, through ``ix_result_slice``."""
    counts = dict(
        session.execute(
            select(Result.ok, func.count())
            .where(col(Result.slice_id) == slice_id)
            .group_by(col(Result.ok))
        ).all()
    )
    return int(counts.get(True, 0)), int(counts.get(False, 0))


def _reopen_done(session: Session, *, run_id: str, slice_ids: Sequence[int]) -> None:
    """Set done slices back to pending and take their results out of the run's counts."""
    ids = list(slice_ids)
    if not ids:
        return
    done = col(Slice.status) == SliceStatus.done.value
    taken_back = session.execute(
        select(
            func.coalesce(func.sum(Slice.results_ok), 0),
            func.coalesce(func.sum(Slice.results_failed), 0),
            func.count(),
        ).where(col(Slice.id).in_(ids), done)
    ).one()
    _back_to_pending(session, slice_ids=ids)
    session.execute(
        update(Run)
        .where(col(Run.id) == run_id)
        .values(
            results_ok=col(Run.results_ok) - taken_back[0],
            results_failed=col(Run.results_failed) - taken_back[1],
            slices_done=col(Run.slices_done) - taken_back[2],
        )
    )


def _back_to_pending(session: Session, *, slice_ids: Sequence[int]) -> None:
    """Set done slices back to ``pending``, their counts cleared (the caller's run counts)."""
    session.execute(
        update(Slice)
        .where(col(Slice.id).in_(list(slice_ids)), col(Slice.status) == SliceStatus.done.value)
        .values(status=SliceStatus.pending.value, finished_at=None, results_ok=0, results_failed=0)
    )


def begin_finalize(session: Session, *, run_id: str, by_count: bool = False) -> bool:
    """Compare-and-set the run to ``finalizing`` once no slice is open. True for the winner.

    Called after the slice's own transaction committed, so of two slices finishing
    together at least the later one sees none open, and the row update lets only
    one of them win.

    ``by_count``: trust the run's own count of done slices (``finish_slice`` keeps
    it in the transaction that closes each slice): one row read, whatever the size
    of the run; the worker's path. Otherwise look for an open slice, which reads
    the run's slice index (and the dead entries its updates left there): the
    reconciler's and ``fleet resume``'s path, and the check of a run made before
    the counts existed. ``worker.tasks.finalize`` checks every slice's results
    before it completes a run either way.
    """
    if by_count:
        settled = col(Run.slices_done) >= col(Run.slice_count)
    else:
        settled = ~exists().where(
            col(Slice.run_id) == run_id, col(Slice.status).in_(OPEN_SLICE_STATES)
        )
    outcome = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status).in_([RunStatus.pending.value, RunStatus.running.value]),
            settled,
        )
        .values(status=RunStatus.finalizing.value)
    )
    return bool(outcome.rowcount == 1)  # type: ignore[attr-defined]


def complete_run(session: Session, *, run_id: str, stats: Sequence[tuple[str, str, float]]) -> bool:
    """Store the statistics and mark the run completed, once. False if already done."""
    outcome = session.execute(
        update(Run)
        .where(col(Run.id) == run_id, col(Run.status) == RunStatus.finalizing.value)
        .values(
            status=RunStatus.completed.value,
            finished_at=utcnow(),
            finalize_count=col(Run.finalize_count) + 1,
        )
    )
    if outcome.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(delete(RunStat).where(col(RunStat.run_id) == run_id))
    session.execute(
        insert(RunStat),
        [
            {"run_id": run_id, "scope": scope, "metric": metric, "value": value}
            for scope, metric, value in stats
        ],
    )
    return True


def reopen_slices(session: Session, *, run_id: str) -> list[int]:
    """Slices that still owe results, set back to pending for a new work order."""
    ids = list(
        session.exec(
            select(Slice.id).where(Slice.run_id == run_id, col(Slice.status).in_(OPEN_SLICE_STATES))
        )
    )
    if ids:
        session.execute(
            update(Slice).where(col(Slice.id).in_(ids)).values(status=SliceStatus.pending.value)
        )
    return [slice_id for slice_id in ids if slice_id is not None]


def count_attempts(
    session: Session,
    *,
    run_id: str,
    lane_index: int,
    slice_id: int,
    item_ids: Sequence[int],
    saving: Sequence[ResultRow] = (),
) -> bool:
    """Add one attempt to each item, before the engine sees it (so a death still counts).

    False, with nothing counted, when the run was cancelled: the same statement
    checks, so a cancel stops a slice before its next batch at no extra round trip.
    ``saving``: the previous batch's results, stored in the same step whatever the
    run's state (``save_results``); on PostgreSQL in the same statement, one round trip.

    On PostgreSQL this is exactly one statement, whatever the arguments, and so is
    ``finish_slice``: the worker runs each as its own transaction, without BEGIN
    (``common.db.single_statements``). A second statement here would not be atomic
    with the first there.
    """
    if not item_ids:
        save_results(session, rows=saving)
        return True
    rows = [
        {
            "run_id": run_id,
            "lane_index": lane_index,
            "slice_id": slice_id,
            "item_id": item_id,
            "count": 1,
        }
        for item_id in item_ids
    ]
    if not saving or session.get_bind().dialect.name != "postgresql":
        save_results(session, rows=saving)
        return _bulk_upsert(session, _attempt_upsert, rows) > 0
    results = _result_columns(saving)
    statement = _results_then_attempts(tuple(results[0]), tuple(rows[0]))
    counted = session.execute(
        statement,
        {**_bulk_params(results, "results"), **_bulk_params(rows, "attempts")},
        execution_options=_KEEP_ROWCOUNT,
    )
    return int(counted.rowcount) > 0  # type: ignore[attr-defined]


@functools.cache
def _results_then_attempts(results: tuple[str, ...], attempts: tuple[str, ...]) -> Any:
    """PostgreSQL: upsert results (a data-modifying CTE), then count attempts; the
    statement's row count is the attempts'."""
    return _attempt_upsert("postgresql", attempts, "attempts").add_cte(_saved_results(results))


def _saved_results(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: the results' upsert (rows bound as ``results``) as a data-modifying
    CTE, ``saved``, returning each row it stored: its item and whether it is ok."""
    table = Result.__table__  # type: ignore[attr-defined]
    upsert = _result_upsert("postgresql", columns, "results")
    return upsert.returning(table.c.item_id, table.c.ok).cte("saved")


@functools.cache
def _attempt_upsert(dialect: str, columns: tuple[str, ...], param: str = "rows") -> Any:
    table = Attempt.__table__  # type: ignore[attr-defined]
    statement = _bulk_insert(dialect, table, columns, live_run_only=True, param=param)
    return statement.on_conflict_do_update(
        index_elements=["run_id", "lane_index", "item_id"],
        set_={"count": table.c.count + 1},
    )


def record_attempt_error(
    session: Session, *, run_id: str, lane_index: int, item_ids: Sequence[int], error: str
) -> None:
    """Keep the error that ended an attempt, to quote if the item is quarantined."""
    for chunk in _chunks(item_ids, ROWS_PER_STATEMENT):
        session.execute(
            update(Attempt)
            .where(
                col(Attempt.run_id) == run_id,
                col(Attempt.lane_index) == lane_index,
                col(Attempt.item_id).in_(chunk),
            )
            .values(last_error=error)
        )


def renew_lease(session: Session, *, slice_id: int, attempts: int) -> bool:
    """Compare-and-set: take over an abandoned ``running`` slice, unless claimed since.

    ``attempts`` is the claim count the caller saw: a claim in between changes it.
    The slice stays ``running`` with a fresh ``started_at`` and no worker, so if
    the new work order is lost too, the next pass after the lease finds it again.
    True for the winner.
    """
    outcome = session.execute(
        update(Slice)
        .where(
            col(Slice.id) == slice_id,
            col(Slice.status) == SliceStatus.running.value,
            col(Slice.attempts) == attempts,
        )
        .values(started_at=utcnow(), worker=None)
    )
    return bool(outcome.rowcount == 1)  # type: ignore[attr-defined]


def cancel_run(session: Session, *, run_id: str) -> bool:
    """Compare-and-set a pending or running run to ``cancelled`` and close its open slices.

    Workers refuse to claim its slices from now on and stop a slice they hold
    before its next batch; the batch in flight still stores its results.

    The slices are updated before the run, in the order ``finish_slice`` takes the
    two rows, so a cancel and a slice finishing at once cannot deadlock. A run
    whose status forbids the cancel has no open slice, so the first step changed
    nothing.
    """
    session.execute(
        update(Slice)
        .where(col(Slice.run_id) == run_id, col(Slice.status).in_(OPEN_SLICE_STATES))
        .values(status=SliceStatus.cancelled.value, finished_at=utcnow())
    )
    outcome = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status).in_([RunStatus.pending.value, RunStatus.running.value]),
        )
        .values(status=RunStatus.cancelled.value, finished_at=utcnow())
    )
    return bool(outcome.rowcount == 1)  # type: ignore[attr-defined]


def reopen_failed(session: Session, *, run_id: str, kinds: Sequence[str] | None) -> int:
    """Forget the failed results of a run (of ``kinds``, or all) so their items run again.

    Rejected input records are never reopened: nothing about them can change.
    Their attempt counts start again (a retry asked for by hand is a fresh
    chance, quarantined items included), the slices holding them go back to
    ``pending`` and the run to ``running``. Returns how many results were reopened.
    """
    failed = (
        select(Result.id, Result.item_id, Result.lane_index, Result.slice_id)
        .join(Item, col(Item.id) == col(Result.item_id))
        .where(
            Result.run_id == run_id,
            col(Result.ok).is_(False),
            col(Item.reject_reason).is_(None),
        )
    )
    if kinds:
        failed = failed.where(col(Result.error_kind).in_(list(kinds)))
    rows = list(session.execute(failed))
    if not rows:
        return 0
    # The slice that wrote a result is the one holding its item in that lane (by
    # input order or, with --sort-by-length, by prompt length). Its counts leave
    # the run's before its results go.
    slice_ids = sorted({row[3] for row in rows if row[3] is not None})
    for chunk in _chunks(slice_ids, ROWS_PER_STATEMENT):
        _reopen_done(session, run_id=run_id, slice_ids=chunk)
        session.execute(
            update(Slice)
            .where(col(Slice.id).in_(chunk))
            .values(status=SliceStatus.pending.value, finished_at=None)
        )
    for chunk in _chunks(rows, ROWS_PER_STATEMENT):
        session.execute(delete(Result).where(col(Result.id).in_([row[0] for row in chunk])))
        by_lane: dict[int, list[int]] = {}
        for _, item_id, lane_index, _ in chunk:
            by_lane.setdefault(lane_index, []).append(item_id)
        for lane_index, item_ids in by_lane.items():
            session.execute(
                delete(Attempt).where(
                    col(Attempt.run_id) == run_id,
                    col(Attempt.lane_index) == lane_index,
                    col(Attempt.item_id).in_(item_ids),
                )
            )
    session.execute(
        update(Run)
        .where(col(Run.id) == run_id)
        .values(status=RunStatus.running.value, finished_at=None)
    )
    return len(rows)


def beat(session: Session, *, name: str, booted_at: datetime) -> None:
    """Upsert a worker's sign of life."""
    _put(session, WorkerBeat, "name", name=name, booted_at=booted_at, seen_at=utcnow())


def note_receipt(session: Session, *, slice_id: int, worker: str) -> None:
    """Upsert who holds a slice's work order now (a redelivery moves it).

    Written by the worker's main process as each order arrives, in its event loop.
    """
    _put(session, Receipt, "slice_id", slice_id=slice_id, worker=worker, received_at=utcnow())


def release_receipt(session: Session, *, slice_id: int, worker: str, received_at: datetime) -> bool:
    """Compare-and-set: drop the receipt the caller saw, unless received again since.

    True for the winner, who then publishes a new work order for the slice.
    """
    outcome = session.execute(
        delete(Receipt).where(
            col(Receipt.slice_id) == slice_id,
            col(Receipt.worker) == worker,
            col(Receipt.received_at) == received_at,
        )
    )
    return bool(outcome.rowcount == 1)  # type: ignore[attr-defined]


def order_items_by_length(session: Session, *, run_id: str) -> None:
    """Give every item of the run its ``slice_pos``: longest prompt first (characters),
    ties in input order. One statement, run in the enqueue transaction."""
    ranked = (
        select(
            col(Item.id).label("item_id"),
            (
                func.row_number().over(
                    order_by=(func.length(func.coalesce(Item.prompt, "")).desc(), col(Item.seq))
                )
                - 1
            ).label("position"),
        )
        .where(Item.run_id == run_id)
        .subquery()
    )
    session.execute(
        update(Item).where(col(Item.id) == ranked.c.item_id).values(slice_pos=ranked.c.position)
    )


def take_reconcile_turn(session: Session, *, worker: str, interval_s: float) -> bool:
    """Compare-and-set: this worker runs the fleet's next reconciler pass. True for the winner.

    Wins when the last pass started at least ``interval_s`` (less a tenth, for the
    passes' jitter) ago; every other worker offering a pass meanwhile is told no.
    """
    now = utcnow()
    insert_once = _upsert(session, ReconcileTurn).values(
        name="reconcile", worker=worker, started_at=now - timedelta(seconds=interval_s)
    )
    session.execute(insert_once.on_conflict_do_nothing(index_elements=["name"]))
    outcome = session.execute(
        update(ReconcileTurn)
        .where(
            col(ReconcileTurn.name) == "reconcile",
            col(ReconcileTurn.started_at) <= now - timedelta(seconds=interval_s * 0.9),
        )
        .values(worker=worker, started_at=now)
    )
    return bool(outcome.rowcount == 1)  # type: ignore[attr-defined]


def reopen_incomplete(session: Session, *, run_id: str) -> list[int]:
    """Slices of a run that hold fewer results than items: done ones set back to pending.

    Finalize's last check before ``completed`` (``worker.tasks.finalize``): a run
    only completes when every item has a result in every lane. Counts results by
    slice, once per run. When a slice is short, the run goes back to ``running``
    and its counts are taken again from its slices, so that whatever put them out
    of step (an order of another run's, a hand in the database) is undone too.
    Returns the reopened slice ids, for new work orders.
    """
    written = (
        select(col(Result.slice_id).label("slice_id"), func.count().label("results"))
        .where(col(Result.run_id) == run_id)
        .group_by(col(Result.slice_id))
        .subquery()
    )
    short = session.execute(
        select(Slice.id, Slice.status)
        .outerjoin(written, written.c.slice_id == col(Slice.id))
        .where(
            col(Slice.run_id) == run_id,
            func.coalesce(written.c.results, 0) < col(Slice.seq_end) - col(Slice.seq_start),
        )
        .order_by(col(Slice.id))
    ).all()
    if not short:
        return []
    reopened = [slice_id for slice_id, status in short if status == SliceStatus.done]
    for chunk in _chunks(reopened, ROWS_PER_STATEMENT):
        _back_to_pending(session, slice_ids=chunk)
    done = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Slice.results_ok), 0),
            func.coalesce(func.sum(Slice.results_failed), 0),
        ).where(col(Slice.run_id) == run_id, col(Slice.status) == SliceStatus.done.value)
    ).one()
    session.execute(
        update(Run)
        .where(col(Run.id) == run_id)
        .values(
            status=RunStatus.running.value,
            finished_at=None,
            slices_done=done[0],
            results_ok=done[1],
            results_failed=done[2],
        )
    )
    return reopened


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _put(session: Session, table: type[SQLModel], key: str, **values: Any) -> None:
    """Insert the row, or overwrite the other columns of the row with the same ``key``.

    The statement is built once per table and columns, its values bound at execution:
    building it each time cost a worker's main process about a millisecond per
    receipt (SQLAlchemy computing the new statement's cache key).
    """
    statement = _put_statement(session.get_bind().dialect.name, table, key, tuple(values))
    session.execute(statement, values)


@functools.cache
def _put_statement(
    dialect: str, table: type[SQLModel], key: str, columns: tuple[str, ...]
) -> postgresql.Insert | sqlite.Insert:
    # The table, not the class: an INSERT of the class takes the ORM's bulk path.
    statement = _insert_for(dialect, table.__table__)  # type: ignore[attr-defined]
    others = {name: statement.excluded[name] for name in columns if name != key}
    return statement.on_conflict_do_update(index_elements=[key], set_=others)


def _bulk_upsert(
    session: Session,
    statement_for: Callable[[str, tuple[str, ...]], Any],
    rows: Sequence[dict[str, Any]],
) -> int:
    """Many rows (dicts with the same keys) in one statement, in one round trip; the
    number of rows inserted or updated.

    On PostgreSQL the rows travel as one JSON document that the statement reads back
    with ``json_to_recordset``: one parameter, serialized by the json module's C
    encoder, a short statement prepared once per connection, however many rows.
    SQLite runs the same INSERT for every row in process (``executemany``), which
    costs no round trip at all.
    """
    dialect = session.get_bind().dialect.name
    columns = tuple(rows[0])
    statement = statement_for(dialect, columns)
    params = _bulk_params(rows, "rows") if dialect == "postgresql" else list(rows)
    outcome = session.execute(statement, params, execution_options=_KEEP_ROWCOUNT)
    return int(outcome.rowcount)  # type: ignore[attr-defined]


#: SQLAlchemy keeps an INSERT's row count only when asked to. Asked per execution, not
#: with ``statement.execution_options``: that copies the statement, and a copy computes
#: its cache key again (a walk over the whole statement, each time).
_KEEP_ROWCOUNT = {"preserve_rowcount": True}


def _bulk_params(rows: Sequence[dict[str, Any]], param: str) -> dict[str, Any]:
    """The bound parameters of a PostgreSQL ``_bulk_insert`` named ``param``: the rows
    as one JSON document, and the run they all name."""
    return {param: _rows_document(rows), f"{param}_run_id": rows[0]["run_id"]}


#: How PostgreSQL reads a float that JSON cannot hold (``float8`` input takes these).
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _rows_document(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as one JSON array of objects; a datetime as ISO 8601 text, a float
    JSON cannot hold (NaN, infinity) as the text PostgreSQL reads it back from."""
    try:
        return json.dumps(rows, default=_iso, allow_nan=False)
    except ValueError:  # a non-finite float: only a column's own value can be one
        finite = [{name: _as_json(value) for name, value in row.items()} for row in rows]
        return json.dumps(finite, default=_iso, allow_nan=False)


def _as_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE[repr(value)]
    return value


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _bulk_insert(
    dialect: str,
    table: Any,
    columns: tuple[str, ...],
    *,
    live_run_only: bool = False,
    param: str = "rows",
) -> Any:
    """``INSERT INTO table (columns)``: of one row's values on SQLite, of every row's
    on PostgreSQL (``SELECT ... FROM json_to_recordset(the rows)``, each column read
    as its own type).

    ``live_run_only``: a row is inserted only while the run its ``run_id`` names is
    not cancelled, checked in the same statement. ``param``: the name of the rows'
    bound parameters on PostgreSQL (``_bulk_params``), distinct per statement when
    two are joined in one.
    """
    if dialect == "postgresql":
        record = (
            func.json_to_recordset(cast(bindparam(param, type_=Text), postgresql.JSON))
            .table_valued(*[column(name, table.c[name].type) for name in columns])
            .render_derived(with_types=True)
        )
        source = select(*[record.c[name] for name in columns])
        # Every row names the same run: one lookup in the run's primary key.
        run_id: Any = bindparam(f"{param}_run_id", type_=table.c.run_id.type)
    else:
        if not live_run_only:
            return _insert_for(dialect, table)
        source = select(*[bindparam(name, type_=table.c[name].type) for name in columns])
        run_id = bindparam("run_id", type_=table.c.run_id.type)
    if live_run_only:
        runs = Run.__table__  # type: ignore[attr-defined]
        source = source.where(
            exists().where(runs.c.id == run_id, runs.c.status != RunStatus.cancelled.value)
        )
    return _insert_for(dialect, table).from_select(list(columns), source)


def _upsert(session: Session, table: type[SQLModel]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of ``table`` in the session's dialect, the kind that takes ON CONFLICT."""
    return _insert_for(session.get_bind().dialect.name, table)


def _insert_for(dialect: str, table: Any) -> postgresql.Insert | sqlite.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
