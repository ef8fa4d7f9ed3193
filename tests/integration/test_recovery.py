"""Attempts, quarantine, cancel, retry and the reconciler on a real database (and Redis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from common.celery_app import create_app
from common.db import session_scope
from common.messages import SliceOrder
from common.models import Attempt, Item, Receipt, Result, Run, Slice, WorkerBeat, utcnow
from common.queries import iter_results
from common.reconcile import reconcile
from common.results import ErrorKind
from common.runconfig import RunConfig
from common.settings import Settings
from common.store import (
    beat,
    cancel_run,
    claim_slice,
    count_attempts,
    note_receipt,
    reopen_failed,
)
from producer.enqueue import create_run
from worker.pipeline import process_slice
from worker.runtime import WorkerRuntime


def make_run(
    db: Engine,
    tmp_path: Path,
    *,
    items: int = 8,
    slice_size: int = 8,
    model: str = "echo",
    max_attempts: int = 3,
    poison: tuple[int, ...] = (),
) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "prompt": f"say {i} {'POISON' if i in poison else ''}"}) + "\n"
            for i in range(items)
        )
    )
    config = RunConfig(
        engine="echo", models=[model], slice_size=slice_size, max_attempts=max_attempts
    )
    return create_run(db, input_path=path, config=config, queue="fleet").run_id


def slice_ids(db: Engine, run_id: str) -> list[int]:
    with session_scope(db) as session:
        rows = session.exec(select(Slice.id).where(Slice.run_id == run_id).order_by(col(Slice.id)))
        return [slice_id for slice_id in rows if slice_id is not None]


def results(db: Engine, run_id: str) -> dict[int, Result]:
    """Results by item seq (lane 0)."""
    with session_scope(db) as session:
        return {
            item.seq: result
            for item, _, result in iter_results(session, run_id=run_id)
            if result is not None
        }


def die_on(db: Engine, run_id: str, seqs: list[int], times: int) -> None:
    """What a worker that died while running these items leaves behind: its claim of
    their slice and their attempt counts."""
    with session_scope(db) as session:
        item_ids = [
            item_id
            for item_id in session.exec(
                select(Item.id).where(Item.run_id == run_id, col(Item.seq).in_(seqs))
            )
            if item_id is not None
        ]
        slice_id = session.exec(
            select(Slice.id).where(Slice.run_id == run_id, Slice.lane_index == 0)
        ).first()
        assert slice_id is not None  # these runs have one slice per lane
        for _ in range(times):
            count_attempts(
                session, run_id=run_id, lane_index=0, slice_id=slice_id, item_ids=item_ids
            )
        session.execute(
            update(Slice)
            .where(col(Slice.run_id) == run_id, col(Slice.lane_index) == 0)
            .values(attempts=col(Slice.attempts) + times)
        )


def test_attempts_are_counted_per_item(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path)
    runtime = WorkerRuntime(settings=Settings(), db=db)
    process_slice(runtime, SliceOrder(run_id, slice_ids(db, run_id)[0]), worker="w1")
    with session_scope(db) as session:
        counts = list(session.exec(select(Attempt.count).where(Attempt.run_id == run_id)))
        slice_row = session.exec(select(Slice).where(Slice.run_id == run_id)).one()
    assert counts == [1] * 8
    assert slice_row.attempts == 1


def test_item_tried_max_times_is_quarantined_and_the_rest_answered(
    db: Engine, tmp_path: Path
) -> None:
    run_id = make_run(db, tmp_path, max_attempts=3)
    die_on(db, run_id, [2], times=3)  # three deaths on item 2
    die_on(db, run_id, [5], times=1)  # one on item 5: a suspect, not yet poison
    runtime = WorkerRuntime(settings=Settings(), db=db)
    outcome = process_slice(runtime, SliceOrder(run_id, slice_ids(db, run_id)[0]), worker="w1")
    assert outcome.finalize is True
    got = results(db, run_id)
    assert sorted(got) == list(range(8))
    assert got[2].ok is False
    assert got[2].error_kind == ErrorKind.quarantined
    assert "tried 3 times" in (got[2].error_message or "")
    assert all(got[seq].ok for seq in range(8) if seq != 2)
    # The suspect ran alone: its batch had one prompt.
    assert got[5].batch_size == 1
    assert got[4].batch_size == 6


def test_quarantine_quotes_the_last_recorded_error(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path, max_attempts=1)
    die_on(db, run_id, [0], times=1)
    with session_scope(db) as session:
        session.execute(update(Attempt).values(last_error="SoftTimeLimitExceeded: too slow"))
    runtime = WorkerRuntime(settings=Settings(), db=db)
    process_slice(runtime, SliceOrder(run_id, slice_ids(db, run_id)[0]), worker="w1")
    assert "SoftTimeLimitExceeded: too slow" in (results(db, run_id)[0].error_message or "")


def test_slice_claimed_too_often_without_reaching_items_is_quarantined(
    db: Engine, tmp_path: Path
) -> None:
    run_id = make_run(db, tmp_path, max_attempts=2)
    slice_id = slice_ids(db, run_id)[0]
    for _ in range(2):  # two workers died after the claim, before any batch
        with session_scope(db) as session:
            claim_slice(session, run_id=run_id, slice_id=slice_id, worker="dead")
    runtime = WorkerRuntime(settings=Settings(), db=db)
    process_slice(runtime, SliceOrder(run_id, slice_id), worker="w1")
    got = results(db, run_id)
    assert len(got) == 8
    assert {result.error_kind for result in got.values()} == {ErrorKind.quarantined}


def test_cancel_stops_claims_and_keeps_partial_results(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path, items=12, slice_size=4)
    first, second, third = slice_ids(db, run_id)
    runtime = WorkerRuntime(settings=Settings(), db=db)
    process_slice(runtime, SliceOrder(run_id, first), worker="w1")
    with session_scope(db) as session:
        claim_slice(
            session, run_id=run_id, slice_id=second, worker="w2"
        )  # in flight when cancelled
        assert cancel_run(session, run_id=run_id) is True
    with session_scope(db) as session:
        assert cancel_run(session, run_id=run_id) is False
    assert process_slice(runtime, SliceOrder(run_id, third), worker="w1").processed == 0
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        statuses = list(
            session.exec(select(Slice.status).where(Slice.run_id == run_id).order_by(Slice.index))
        )
    assert run is not None
    assert run.status == "cancelled"
    assert statuses == ["done", "cancelled", "cancelled"]
    assert sorted(results(db, run_id)) == [0, 1, 2, 3]


def test_slice_in_flight_stops_before_its_next_batch_when_cancelled(
    db: Engine, tmp_path: Path
) -> None:
    run_id = make_run(db, tmp_path, items=8, slice_size=8)
    slice_id = slice_ids(db, run_id)[0]
    with session_scope(db) as session:
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(config={**session.get(Run, run_id).config, "batching": {"batch_size": 2}})  # type: ignore[union-attr]
        )
    runtime = WorkerRuntime(settings=Settings(), db=db)
    from worker import attempts

    begin = attempts.AttemptGuard.begin
    calls = []

    def cancel_after_two(
        self: attempts.AttemptGuard, session: Session, indexes: list[int], **kwargs: Any
    ) -> bool:
        calls.append(indexes)
        if len(calls) == 3:  # the cancel committed just before the third batch's check
            cancel_run(session, run_id=run_id)
        return begin(self, session, indexes, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attempts.AttemptGuard, "begin", cancel_after_two)
        process_slice(runtime, SliceOrder(run_id, slice_id), worker="w1")
    assert sorted(results(db, run_id)) == [0, 1, 2, 3]


def test_retry_reopens_failed_items_of_a_kind_and_reruns_them(db: Engine, tmp_path: Path) -> None:
    run_id = make_run(db, tmp_path, model="fail_marker=POISON", poison=(1, 6))
    slice_id = slice_ids(db, run_id)[0]
    runtime = WorkerRuntime(settings=Settings(), db=db)
    assert process_slice(runtime, SliceOrder(run_id, slice_id), worker="w1").finalize
    with session_scope(db) as session:
        session.execute(update(Run).where(col(Run.id) == run_id).values(status="completed"))
    failed = {seq for seq, result in results(db, run_id).items() if not result.ok}
    assert failed == {1, 6}
    with session_scope(db) as session:
        assert reopen_failed(session, run_id=run_id, kinds=["oom"]) == 0
    with session_scope(db) as session:
        assert reopen_failed(session, run_id=run_id, kinds=["engine"]) == 2
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        slice_row = session.get(Slice, slice_id)
        attempts_left = session.execute(
            select(func.count()).select_from(Attempt).where(Attempt.run_id == run_id)
        ).scalar_one()
    assert run is not None
    assert slice_row is not None
    assert (run.status, slice_row.status) == ("running", "pending")
    assert attempts_left == 6  # the reopened items start counting again
    assert sorted(results(db, run_id)) == [0, 2, 3, 4, 5, 7]
    # The second go runs only the reopened items (they fail again: the marker is still there).
    assert process_slice(runtime, SliceOrder(run_id, slice_id), worker="w2").processed == 2
    assert sorted(results(db, run_id)) == list(range(8))


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


def test_reconcile_requeues_abandoned_slices_and_finalizes_finished_runs(
    db: Engine, tmp_path: Path, redis_url: str, broker: redis.Redis
) -> None:
    app = create_app(Settings(broker_url=redis_url))
    stuck_run = make_run(db, tmp_path, items=20, slice_size=4)
    past_lease, silent, rebooted, alive, unknown = slice_ids(db, stuck_run)
    now = utcnow()
    with session_scope(db) as session:
        for slice_id, worker in [
            (past_lease, "w-unknown"),
            (silent, "w-silent"),
            (rebooted, "w-rebooted"),
            (alive, "w-alive"),
            (unknown, "w-unknown"),
        ]:
            claim_slice(session, run_id=stuck_run, slice_id=slice_id, worker=worker)
        session.execute(
            update(Slice)
            .where(col(Slice.id) == past_lease)
            .values(started_at=now - timedelta(seconds=100))
        )
        beat(session, name="w-silent", booted_at=now - timedelta(seconds=200))
        beat(session, name="w-rebooted", booted_at=now + timedelta(seconds=1))
        beat(session, name="w-alive", booted_at=now - timedelta(seconds=200))
        session.execute(
            update(WorkerBeat)
            .where(col(WorkerBeat.name) == "w-silent")
            .values(seen_at=now - timedelta(seconds=30))
        )
    done_run = make_run(db, tmp_path, items=4, slice_size=4)
    with session_scope(db) as session:
        session.execute(update(Slice).where(col(Slice.run_id) == done_run).values(status="done"))
        session.execute(update(Run).where(col(Run.id) == done_run).values(status="running"))

    # (The PostgreSQL database is shared by the session: other tests' runs may show up too.)
    outcome = reconcile(db, app, lease_s=60, heartbeat_timeout_s=15, now=now + timedelta(seconds=2))
    assert sorted(entry for entry in outcome.requeued if entry[0] == stuck_run) == sorted(
        [(stuck_run, past_lease), (stuck_run, silent), (stuck_run, rebooted)]
    )
    assert done_run in outcome.finalized
    queued = [json.loads(message)["headers"] for message in broker.lrange("fleet", 0, -1)]
    orders = {(headers["task"], headers["argsrepr"]) for headers in queued}
    assert ("fleet.run_slice", repr([stuck_run, silent])) in orders
    assert ("fleet.finalize", repr([done_run])) in orders
    with session_scope(db) as session:
        assert session.get(Run, done_run).status == "finalizing"  # type: ignore[union-attr]
        taken = session.get(Slice, silent)
        assert taken is not None
        assert (taken.status, taken.worker) == ("running", None)
    # A second pass at once finds the leases renewed: nothing more to hand out.
    again = reconcile(db, app, lease_s=60, heartbeat_timeout_s=15, now=now + timedelta(seconds=2))
    assert [entry for entry in again.requeued if entry[0] == stuck_run] == []


def test_reconcile_hands_out_orders_a_worker_took_and_died_with_before_claiming(
    db: Engine, tmp_path: Path, redis_url: str, broker: redis.Redis
) -> None:
    app = create_app(Settings(broker_url=redis_url))
    run_id = make_run(db, tmp_path, items=28, slice_size=4)
    silent_holder, alive_holder, never_beat, done_already, claimed_never_beat, lost, taken = (
        slice_ids(db, run_id)
    )
    now = utcnow()
    # Names of this test's own: the session's PostgreSQL database holds other tests' slices.
    names = ("w-silent", "w-alive", "w-never", "w-never-either", "w-moved-on")
    w = {name: f"{name}-{run_id}" for name in names}
    with session_scope(db) as session:
        for slice_id, worker in [
            (silent_holder, w["w-silent"]),
            (alive_holder, w["w-alive"]),
            (never_beat, w["w-never"]),
            (done_already, w["w-silent"]),
            # A live worker that took an order, lost it (handed back to a broker that had
            # just died), and has claimed another slice since.
            (lost, w["w-moved-on"]),
        ]:
            note_receipt(session, slice_id=slice_id, worker=worker)
        session.execute(
            update(Receipt)
            .where(
                col(Receipt.slice_id).in_(
                    [silent_holder, alive_holder, never_beat, done_already, lost]
                )
            )
            .values(received_at=now - timedelta(seconds=20))
        )
        claim_slice(session, run_id=run_id, slice_id=taken, worker=w["w-moved-on"])
        session.execute(
            update(Slice)
            .where(col(Slice.id) == taken)
            .values(started_at=now - timedelta(seconds=5))
        )
        beat(session, name=w["w-moved-on"], booted_at=now - timedelta(seconds=200))
        session.execute(update(Slice).where(col(Slice.id) == done_already).values(status="done"))
        claim_slice(session, run_id=run_id, slice_id=claimed_never_beat, worker=w["w-never-either"])
        session.execute(
            update(Slice)
            .where(col(Slice.id) == claimed_never_beat)
            .values(started_at=now - timedelta(seconds=20))
        )
        beat(session, name=w["w-silent"], booted_at=now - timedelta(seconds=200))
        beat(session, name=w["w-alive"], booted_at=now - timedelta(seconds=200))
        session.execute(
            update(WorkerBeat)
            .where(col(WorkerBeat.name) == w["w-silent"])
            .values(seen_at=now - timedelta(seconds=16))
        )

    outcome = reconcile(db, app, lease_s=600, heartbeat_timeout_s=15, now=now)
    assert sorted(entry for entry in outcome.requeued if entry[0] == run_id) == sorted(
        [
            (run_id, silent_holder),
            (run_id, never_beat),
            (run_id, claimed_never_beat),
            (run_id, lost),
        ]
    )
    queued = [json.loads(message)["headers"] for message in broker.lrange("fleet", 0, -1)]
    orders = {(headers["task"], headers["argsrepr"]) for headers in queued}
    assert ("fleet.run_slice", repr([run_id, silent_holder])) in orders
    assert ("fleet.run_slice", repr([run_id, never_beat])) in orders
    with session_scope(db) as session:
        left = set(session.exec(select(Receipt.slice_id)))
    assert silent_holder not in left
    assert never_beat not in left
    assert alive_holder in left
    # The receipts were released by compare-and-set: a second pass hands out nothing.
    again = reconcile(db, app, lease_s=600, heartbeat_timeout_s=15, now=now)
    assert [entry for entry in again.requeued if entry[0] == run_id] == []
