"""What a failed slice task does next: retry (with or without a limit) or quarantine."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, NoResultFound, OperationalError
from sqlmodel import select

from common.db import session_scope
from common.messages import SliceOrder
from common.models import Slice
from common.runconfig import RunConfig
from common.settings import Settings
from common.store import claim_slice
from producer.enqueue import create_run
from worker.failures import (
    RETRIES_UNCLAIMED,
    RetryLater,
    database_away,
    retry_delay,
    settle_failure,
)
from worker.pipeline import SliceOutcome
from worker.runtime import WorkerRuntime


def refused() -> OperationalError:
    """What SQLAlchemy raises when PostgreSQL refuses or drops the connection."""
    return OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))


def test_an_unreachable_database_is_told_apart() -> None:
    assert database_away(refused())
    assert database_away(psycopg.OperationalError("server closed the connection"))
    assert database_away(sqlite3.OperationalError("database is locked"))
    wrapped = RuntimeError("while loading the slice")
    wrapped.__cause__ = refused()
    assert database_away(wrapped)
    assert not database_away(ValueError("unknown option"))
    assert not database_away(IntegrityError("INSERT", {}, Exception("duplicate")))
    assert not database_away(NoResultFound("no run"))


def test_the_slice_task_has_no_retry_limit_of_celerys_own() -> None:
    # In a process of its own: the app reads its settings once, on first use.
    code = "from worker.tasks import run_slice; print(run_slice.max_retries)"
    env = {**os.environ, "FLEET_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["None"]  # Celery's default would be 3


def make_slice(db: Engine, tmp_path: Path, *, max_attempts: int) -> SliceOrder:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": n, "prompt": f"p{n}"}) + "\n" for n in range(4)))
    config = RunConfig(engine="echo", models=["echo"], slice_size=4, max_attempts=max_attempts)
    run_id = create_run(db, input_path=path, config=config, queue="fleet").run_id
    with session_scope(db) as session:
        slice_id = session.exec(select(Slice.id).where(Slice.run_id == run_id)).one()
    assert slice_id is not None
    return SliceOrder(run_id, slice_id)


def settle(db: Engine, order: SliceOrder, error: BaseException) -> SliceOutcome | RetryLater:
    runtime = WorkerRuntime(settings=Settings(), db=db)
    return settle_failure(order, error, worker="w1", retries=2, runtime=lambda: runtime)


def test_an_outage_is_retried_without_limit_even_on_a_used_up_slice(
    db: Engine, tmp_path: Path
) -> None:
    order = make_slice(db, tmp_path, max_attempts=1)
    with session_scope(db) as session:
        claim_slice(session, run_id=order.run_id, slice_id=order.slice_id, worker="w1")
    assert settle(db, order, refused()) == RetryLater(retry_delay(2), limit=None)


def test_a_runtime_that_cannot_be_built_while_the_database_is_away_is_retried(
    db: Engine, tmp_path: Path
) -> None:
    order = make_slice(db, tmp_path, max_attempts=1)

    def unreachable() -> WorkerRuntime:
        raise refused()

    settled = settle_failure(order, ValueError("x"), worker="w", retries=0, runtime=unreachable)
    assert settled == RetryLater(1, limit=None)


def test_other_errors_are_retried_while_the_slice_has_claims_left(
    db: Engine, tmp_path: Path
) -> None:
    order = make_slice(db, tmp_path, max_attempts=2)
    with session_scope(db) as session:
        claim_slice(session, run_id=order.run_id, slice_id=order.slice_id, worker="w1")
    assert settle(db, order, ValueError("model will not load")) == RetryLater(4, limit=None)


def test_other_errors_on_a_used_up_slice_quarantine_its_items(db: Engine, tmp_path: Path) -> None:
    order = make_slice(db, tmp_path, max_attempts=1)
    with session_scope(db) as session:
        claim_slice(session, run_id=order.run_id, slice_id=order.slice_id, worker="w1")
    settled = settle(db, order, ValueError("model will not load"))
    assert settled == SliceOutcome(processed=4, finalize=True, queue="fleet")


@pytest.mark.parametrize("claimed", [False, True])
def test_other_errors_on_a_slice_not_running_are_retried_a_few_times(
    db: Engine, tmp_path: Path, claimed: bool
) -> None:
    order = make_slice(db, tmp_path, max_attempts=3)
    if claimed:  # its work settled: the error came after
        with session_scope(db) as session:
            claim_slice(session, run_id=order.run_id, slice_id=order.slice_id, worker="w1")
            session.get(Slice, order.slice_id).status = "done"  # type: ignore[union-attr]
    else:  # an order naming no slice at all
        order = SliceOrder(order.run_id, order.slice_id + 1000)
    assert settle(db, order, ValueError("x")) == RetryLater(4, limit=RETRIES_UNCLAIMED)
