"""Work orders that do not match SQL: refused, or caught by finalize, on real workers.

A slice order names a run and a slice. An order whose slice belongs to another run
(a broker kept across a reset database, a buggy client) is refused whole: nothing
written for either run. And a run completes only when every slice holds a result
for each of its items: a slice marked done without them is reopened by finalize
and run again, never reported ``completed``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import Engine, func, update
from sqlmodel import col, select

from common.celery_app import create_app
from common.constants import SLICE_TASK
from common.db import session_scope
from common.messages import SliceOrder
from common.models import Result, Run, RunStatus, Slice
from common.publish import publish_run, publish_slices
from common.runconfig import RunConfig
from common.settings import Settings
from producer.enqueue import create_run
from tests.integration.conftest import WorkerStarter


def make_run(db: Engine, folder: Path, name: str, items: int = 8, slice_size: int = 4) -> str:
    path = folder / f"{name}.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"{name}-{i}", "prompt": f"say {i} now"}) + "\n" for i in range(items)
        )
    )
    config = RunConfig(engine="echo", models=["echo"], slice_size=slice_size)
    return create_run(db, input_path=path, config=config, queue="fleet").run_id


def slices_of(db: Engine, run_id: str) -> list[int]:
    with session_scope(db) as session:
        rows = session.exec(select(Slice.id).where(Slice.run_id == run_id).order_by(col(Slice.id)))
        return [slice_id for slice_id in rows if slice_id is not None]


def result_count(db: Engine, run_id: str) -> int:
    with session_scope(db) as session:
        return int(
            session.exec(
                select(func.count()).select_from(Result).where(Result.run_id == run_id)
            ).one()
        )


def wait_completed(db: Engine, run_id: str, timeout_s: float = 60.0) -> Run:
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(db) as session:
            run = session.get(Run, run_id)
            assert run is not None
            if run.status == RunStatus.completed or time.monotonic() > deadline:
                return run
        time.sleep(0.2)


def test_an_order_naming_another_runs_slice_is_refused_and_writes_nothing(
    db: Engine, tmp_path: Path, embedded_broker: str, start_workers: WorkerStarter
) -> None:
    pool = start_workers(1, broker_url=embedded_broker, database_url=str(db.url))
    app = create_app(Settings(broker_url=embedded_broker))
    run_a = make_run(db, tmp_path, "a")
    run_b = make_run(db, tmp_path, "b")
    foreign = slices_of(db, run_b)[0]

    app.send_task(SLICE_TASK, args=SliceOrder(run_a, foreign).to_args(), queue="fleet")
    app.send_task(SLICE_TASK, args=SliceOrder(run_a, 999_999).to_args(), queue="fleet")
    logs = tmp_path / "logs"
    deadline = time.monotonic() + 60
    while "order refused" not in "".join(p.read_text() for p in logs.glob("*.log")):
        assert time.monotonic() < deadline, "the worker never said it refused the order"
        time.sleep(0.2)
    time.sleep(1.0)  # the second order too

    assert result_count(db, run_a) == 0
    assert result_count(db, run_b) == 0
    with session_scope(db) as session:
        untouched = session.get(Slice, foreign)
        assert untouched is not None
        assert (untouched.status, untouched.attempts) == ("pending", 0)
        statuses = {
            run.status for run in session.exec(select(Run).where(col(Run.id).in_([run_a, run_b])))
        }
        assert statuses == {RunStatus.pending}
    log = "".join(p.read_text() for p in logs.glob("*.log"))
    assert f"slice {foreign} belongs to run {run_b}, not to run {run_a}" in log
    assert "slice 999999 does not exist" in log

    for run_id in (run_a, run_b):  # both runs still run whole afterwards
        publish_run(db, app, run_id=run_id)
        run = wait_completed(db, run_id)
        assert (run.status, run.finalize_count) == ("completed", 1)
        assert result_count(db, run_id) == 8
    assert pool.alive()


def test_a_done_slice_short_of_results_is_reopened_by_finalize_not_completed(
    db: Engine, tmp_path: Path, embedded_broker: str, start_workers: WorkerStarter
) -> None:
    start_workers(1, broker_url=embedded_broker, database_url=str(db.url))
    app = create_app(Settings(broker_url=embedded_broker))
    run_id = make_run(db, tmp_path, "short")
    hollow, real = slices_of(db, run_id)
    with session_scope(db) as session:  # what a bad order used to leave: done, no results
        session.execute(update(Slice).where(col(Slice.id) == hollow).values(status="done"))
        session.execute(update(Run).where(col(Run.id) == run_id).values(slices_done=1))

    publish_slices(app, run_id=run_id, slice_ids=[real], queue="fleet")
    run = wait_completed(db, run_id)

    assert (run.status, run.finalize_count) == ("completed", 1)
    assert result_count(db, run_id) == 8
    assert (run.results_ok, run.results_failed, run.slices_done) == (8, 0, 2)
    with session_scope(db) as session:
        reopened = session.get(Slice, hollow)
        assert reopened is not None
        assert (reopened.status, reopened.attempts, reopened.results_ok) == ("done", 1, 4)
