"""``common.results``: one row type for every writer of results; status columns typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import StatementError
from sqlmodel import col, select

from common.db import session_scope
from common.models import Item, Result, Run, RunStatus, Slice, SliceStatus
from common.results import MAX_ERROR_CHARS, ErrorKind, ResultRow, error_text
from common.runconfig import RunConfig
from common.store import save_results
from producer.enqueue import create_run


def make_run(db: Engine, tmp_path: Path) -> tuple[str, int, int]:
    """A one-item run: its id, its slice's id and its item's id."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": 1, "prompt": "p"}) + "\n", encoding="utf-8")
    config = RunConfig(engine="echo", models=["echo"])
    run_id = create_run(db, input_path=path, config=config, queue="fleet").run_id
    with session_scope(db) as session:
        slice_id = session.exec(select(Slice.id).where(Slice.run_id == run_id)).one()
        item_id = session.exec(select(Item.id).where(Item.run_id == run_id)).one()
    assert slice_id is not None
    assert item_id is not None
    return run_id, slice_id, item_id


def test_a_row_names_every_result_column_the_store_does_not_set() -> None:
    row = ResultRow(run_id="r", item_id=1, lane_index=0, slice_id=None)
    columns = set(Result.__table__.columns.keys())  # type: ignore[attr-defined]
    assert set(row.columns()) == columns - {"id", "created_at"}


def test_a_failure_row_is_stored_with_its_kind(db: Engine, tmp_path: Path) -> None:
    run_id, slice_id, item_id = make_run(db, tmp_path)
    with session_scope(db) as session:
        save_results(
            session,
            rows=[
                ResultRow(
                    run_id=run_id,
                    item_id=item_id,
                    lane_index=0,
                    slice_id=slice_id,
                    error_kind=ErrorKind.quarantined,
                    error_message=error_text(RuntimeError("x" * 3 * MAX_ERROR_CHARS)),
                )
            ],
        )
    with session_scope(db) as session:
        result = session.exec(select(Result).where(Result.run_id == run_id)).one()
    assert (result.ok, result.error_kind, result.attempts) == (False, "quarantined", 1)
    assert result.error_message is not None
    assert result.error_message.startswith("RuntimeError: xxx")
    assert len(result.error_message) == MAX_ERROR_CHARS


def test_status_columns_read_back_as_their_enums(db: Engine, tmp_path: Path) -> None:
    run_id, slice_id, _ = make_run(db, tmp_path)
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        slice_row = session.get(Slice, slice_id)
        assert run is not None
        assert slice_row is not None
        assert type(run.status) is RunStatus
        assert run.status is RunStatus.pending
        assert type(slice_row.status) is SliceStatus
        assert slice_row.status is SliceStatus.pending


def test_a_misspelled_status_is_refused_before_sql(db: Engine, tmp_path: Path) -> None:
    run_id, _, _ = make_run(db, tmp_path)
    misspelled = update(Run).where(col(Run.id) == run_id).values(status="runing")
    with (
        pytest.raises(StatementError, match="'runing' is not a valid RunStatus"),
        session_scope(db) as session,
    ):
        session.execute(misspelled)
