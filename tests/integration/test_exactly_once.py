"""Exactly-once on a real database: finalize once under a race; redelivery runs what is missing."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import select

from common.db import session_scope
from common.messages import SliceOrder
from common.models import Item, Receipt, Result, Run, Slice, utcnow
from common.results import ErrorKind, ResultRow
from common.runconfig import RunConfig
from common.settings import Settings
from common.store import begin_finalize, complete_run, finish_slice, save_results
from producer.enqueue import create_run
from worker.pipeline import process_slice
from worker.runtime import WorkerRuntime


def make_run(db: Engine, tmp_path: Path, items: int = 20, slice_size: int = 5) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": f"say {i} now"}) + "\n" for i in range(items))
    )
    config = RunConfig(engine="echo", models=["echo"], slice_size=slice_size)
    return create_run(db, input_path=path, config=config, queue="fleet").run_id


def test_finalize_wins_once_when_slices_finish_together(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path)
    with session_scope(db) as session:
        slice_ids = list(session.exec(select(Slice.id).where(Slice.run_id == run_id)))
    barrier = threading.Barrier(len(slice_ids))
    winners: list[bool] = []

    def finish(slice_id: int) -> None:
        with session_scope(db) as session:
            finish_slice(session, run_id=run_id, slice_id=slice_id)
        barrier.wait()
        with session_scope(db) as session:
            winners.append(begin_finalize(session, run_id=run_id))

    threads = [threading.Thread(target=finish, args=(slice_id,)) for slice_id in slice_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners.count(True) == 1

    outcomes = []
    for _ in range(3):
        with session_scope(db) as session:
            outcomes.append(complete_run(session, run_id=run_id, stats=[("overall", "x", 1.0)]))
    assert outcomes == [True, False, False]
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert (run.status, run.finalize_count) == ("completed", 1)


def test_open_slices_block_finalize(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path)
    with session_scope(db) as session:
        first = session.exec(select(Slice.id).where(Slice.run_id == run_id)).first()
        assert first is not None
        finish_slice(session, run_id=run_id, slice_id=first)
    with session_scope(db) as session:
        assert begin_finalize(session, run_id=run_id) is False


def test_redelivered_slice_runs_only_what_is_missing(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path, items=12, slice_size=12)
    runtime = WorkerRuntime(settings=Settings(), db=db)
    with session_scope(db) as session:
        slice_row = session.exec(select(Slice).where(Slice.run_id == run_id)).one()
        assert slice_row.id is not None
        order = SliceOrder(run_id, slice_row.id)
        # A worker died after storing part of the slice: drop half its results.
    first = process_slice(runtime, order, worker="w1")
    assert first.processed == 12
    assert first.finalize is True
    with session_scope(db) as session:
        doomed = list(session.exec(select(Result).where(Result.run_id == run_id)))[6:]
        for result in doomed:
            session.delete(result)
        session.get(Slice, order.slice_id).status = "running"  # type: ignore[union-attr]
        session.get(Run, run_id).status = "running"  # type: ignore[union-attr]
    again = process_slice(runtime, order, worker="w2")
    assert again.processed == 6
    with session_scope(db) as session:
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Result.item_id))).where(
                Result.run_id == run_id
            )
        ).one()
        workers = set(session.exec(select(Result.worker).where(Result.run_id == run_id)))
    assert rows == distinct == 12
    assert workers == {"w1", "w2"}
    # Delivered once more after completion: nothing to do, nothing written.
    assert process_slice(runtime, order, worker="w3").processed == 0


def test_finishing_a_slice_twice_counts_it_once(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path, items=10, slice_size=5)
    with session_scope(db) as session:
        first, second = list(session.exec(select(Slice).where(Slice.run_id == run_id)))
        assert first.id is not None
        assert second.id is not None
        items = list(session.exec(select(Item.id).where(Item.run_id == run_id).order_by(Item.seq)))
        session.add(Receipt(slice_id=first.id, worker="w1", received_at=utcnow()))
    rows = [
        ResultRow(run_id=run_id, item_id=item_id or 0, lane_index=0, slice_id=first.id, ok=ok)
        for item_id, ok in zip(items[:5], [True, True, False, True, False], strict=True)
    ]
    with session_scope(db) as session:
        save_results(session, rows=rows)
        assert finish_slice(session, run_id=run_id, slice_id=first.id) is False
    with session_scope(db) as session:
        assert finish_slice(session, run_id=run_id, slice_id=first.id) is False
        assert session.exec(select(Receipt).where(Receipt.slice_id == first.id)).all() == []
        marked = session.get(Slice, first.id)
        run = session.get(Run, run_id)
        assert marked is not None
        assert run is not None
        assert (marked.status, marked.results_ok, marked.results_failed) == ("done", 3, 2)
        assert (run.results_ok, run.results_failed, run.slices_done) == (3, 2, 1)
    with session_scope(db) as session:
        # The run's last slice: True for the one that closes it.
        assert finish_slice(session, run_id=run_id, slice_id=second.id) is True


def test_finishing_with_the_last_results_counts_each_item_once(db: Engine, tmp_path: Path) -> None:
    """The slice's last results stored by the finish itself (one statement on
    PostgreSQL) are counted with those already stored, each item once: a failed one
    answered now counts as ok, an ok one a late failure leaves alone stays ok."""
    run_id = make_run(db, tmp_path, items=5, slice_size=5)
    with session_scope(db) as session:
        (piece,) = list(session.exec(select(Slice).where(Slice.run_id == run_id)))
        items = list(session.exec(select(Item.id).where(Item.run_id == run_id).order_by(Item.seq)))

    def row(item_id: int | None, ok: bool) -> ResultRow:
        return ResultRow(
            run_id=run_id, item_id=item_id or 0, lane_index=0, slice_id=piece.id, ok=ok
        )

    with session_scope(db) as session:
        # Stored by earlier batches: item 0 failed, item 1 answered, item 2 failed.
        save_results(
            session, rows=[row(items[0], False), row(items[1], True), row(items[2], False)]
        )
    with session_scope(db) as session:
        last = [
            row(items[0], True),
            row(items[1], False),
            row(items[3], True),
            row(items[4], False),
        ]
        assert finish_slice(session, run_id=run_id, slice_id=piece.id or 0, saving=last) is True
    with session_scope(db) as session:
        marked = session.get(Slice, piece.id)
        run = session.get(Run, run_id)
        of_run = select(Result.item_id, Result.ok).where(Result.run_id == run_id)
        stored = {item_id: ok for item_id, ok in session.exec(of_run)}
    assert stored == {
        items[0]: True,
        items[1]: True,
        items[2]: False,
        items[3]: True,
        items[4]: False,
    }
    assert marked is not None
    assert run is not None
    assert (marked.status, marked.results_ok, marked.results_failed) == ("done", 3, 2)
    assert (run.results_ok, run.results_failed, run.slices_done) == (3, 2, 1)


def test_results_keep_values_json_cannot_hold(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path, items=4, slice_size=4)
    with session_scope(db) as session:
        items = list(session.exec(select(Item.id).where(Item.run_id == run_id).order_by(Item.seq)))
    scores = [math.nan, math.inf, -math.inf, 0.5]
    rows = [
        ResultRow(
            run_id=run_id,
            item_id=item_id or 0,
            lane_index=0,
            slice_id=None,
            ok=True,
            answer='say "it"\n\\ now',
            score=score,
            parsed={"list": [1, "two", None], "nested": {"x": 1.5}},
            scores={"exact": 1.0},
            error_kind=ErrorKind.engine,
        )
        for item_id, score in zip(items, scores, strict=True)
    ]
    with session_scope(db) as session:
        save_results(session, rows=rows)
    with session_scope(db) as session:
        stored = list(session.exec(select(Result).where(Result.run_id == run_id)))
    stored.sort(key=lambda result: result.item_id)
    # SQLite has no NaN: it stores NULL. PostgreSQL keeps it.
    assert stored[0].score is None or math.isnan(stored[0].score)
    assert [result.score for result in stored[1:]] == [math.inf, -math.inf, 0.5]
    for result in stored:
        assert result.answer == 'say "it"\n\\ now'
        assert result.parsed == {"list": [1, "two", None], "nested": {"x": 1.5}}
        assert result.scores == {"exact": 1.0}
        assert result.error_kind == "engine"
        assert result.created_at is not None
