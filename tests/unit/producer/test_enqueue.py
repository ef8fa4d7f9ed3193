"""``producer.enqueue.create_run`` on SQLite: all of a run in one transaction, or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, SQLModel, col, select

import producer.enqueue as enqueue
from common.constants import CONTEXTS_TEMPLATE, IDENTITY
from common.db import make_engine
from common.errors import InvalidInputFile
from common.models import Item, Lane, Result, Run, Slice
from common.results import ErrorKind
from common.runconfig import RunConfig
from producer.enqueue import create_run
from producer.slicing import cut

CONFIG = RunConfig(engine="echo", models=["echo", "delay=0"], slice_size=7)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'fleet.db'}")
    yield engine
    engine.dispose()


def write_jsonl(path: Path, records: list[Any], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + tail)
    return path


def plain(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{index}", "prompt": f"prompt number {index}"} for index in range(count)]


def row_counts(db: Engine) -> dict[str, int]:
    with Session(db) as session:
        return {
            model.__name__: session.exec(select(func.count()).select_from(model)).one()
            for model in (Run, Lane, Item, Slice, Result)
        }


def assert_database_empty(db: Engine) -> None:
    assert row_counts(db) == {"Run": 0, "Lane": 0, "Item": 0, "Slice": 0, "Result": 0}


def assert_slices_cover_items(session: Session, run_id: str, count: int, lanes: int) -> None:
    """Every lane's slices are cut(count, slice_size): each item in exactly one slice per lane."""
    seqs = session.exec(select(Item.seq).where(Item.run_id == run_id).order_by(col(Item.seq))).all()
    assert list(seqs) == list(range(count))
    for lane in range(lanes):
        slices = session.exec(
            select(Slice)
            .where(Slice.run_id == run_id, Slice.lane_index == lane)
            .order_by(col(Slice.index))
        ).all()
        assert [slice_.index for slice_ in slices] == list(range(len(slices)))
        assert [(s.seq_start, s.seq_end) for s in slices] == cut(count, CONFIG.slice_size)
        assert all(slice_.status == "pending" and slice_.attempts == 0 for slice_ in slices)
        covered = [seq for s in slices for seq in range(s.seq_start, s.seq_end)]
        assert covered == list(range(count))


def test_valid_file_creates_run_lanes_items_and_slices(db: Engine, tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [*plain(20)]
    records.append({"id": 99, "query": "q?", "context": "ctx", "extra": [1, 2]})
    path = write_jsonl(tmp_path / "in.jsonl", records)

    enqueued = create_run(db, input_path=path, config=CONFIG, queue="fleet-test")

    assert (enqueued.items, enqueued.rejected, enqueued.slices) == (21, 0, 2 * 3)
    with Session(db) as session:
        run = session.get(Run, enqueued.run_id)
        assert run is not None
        assert (run.item_count, run.rejected_count, run.lane_count, run.slice_count) == (
            21,
            0,
            2,
            6,
        )
        assert (run.status, run.engine, run.queue, run.input_path) == (
            "pending",
            "echo",
            "fleet-test",
            str(path),
        )
        assert run.config == CONFIG.model_dump(mode="json")
        assert RunConfig.model_validate(run.config) == CONFIG

        lanes = session.exec(select(Lane).order_by(col(Lane.index))).all()
        assert [(lane.run_id, lane.index, lane.model, lane.permutation) for lane in lanes] == [
            (enqueued.run_id, 0, "echo", IDENTITY),
            (enqueued.run_id, 1, "delay=0", IDENTITY),
        ]

        items = session.exec(select(Item).order_by(col(Item.seq))).all()
        assert [item.custom_id for item in items] == [f"r{i}" for i in range(20)] + ["99"]
        assert [item.line_no for item in items] == list(range(1, 22))
        assert items[3].prompt == "prompt number 3"
        assert items[20].prompt == CONTEXTS_TEMPLATE.format(context="ctx", query="q?")
        assert items[20].payload == records[20]
        assert all(item.reject_reason is None for item in items)

        assert_slices_cover_items(session, enqueued.run_id, 21, lanes=2)
        assert session.exec(select(func.count()).select_from(Result)).one() == 0


@pytest.mark.parametrize("count", [1, 7, 8, 14])
def test_slice_boundaries(db: Engine, tmp_path: Path, count: int) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", plain(count))
    enqueued = create_run(db, input_path=path, config=CONFIG, queue="fleet")
    assert enqueued.slices == 2 * len(cut(count, 7))
    with Session(db) as session:
        assert_slices_cover_items(session, enqueued.run_id, count, lanes=2)


def test_template_and_reference_reach_the_items(db: Engine, tmp_path: Path) -> None:
    config = RunConfig(engine="echo", models=["echo"], template="Q: {q}", slice_size=7)
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "q": "why?", "gold": {"x": 1}}])
    enqueued = create_run(db, input_path=path, config=config, queue="fleet", reference_field="gold")
    with Session(db) as session:
        [item] = session.exec(select(Item).where(Item.run_id == enqueued.run_id)).all()
    assert (item.prompt, item.reference) == ("Q: why?", '{"x": 1}')


def test_two_runs_of_one_file_are_independent(db: Engine, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", plain(3))
    first = create_run(db, input_path=path, config=CONFIG, queue="fleet")
    second = create_run(db, input_path=path, config=CONFIG, queue="fleet")
    assert first.run_id != second.run_id
    assert row_counts(db) == {"Run": 2, "Lane": 4, "Item": 6, "Slice": 4, "Result": 0}


def test_bad_lines_raise_with_every_error_and_leave_nothing(db: Engine, tmp_path: Path) -> None:
    records: list[Any] = [*plain(10), {"prompt": "no id"}, *plain(15)[10:]]
    path = write_jsonl(tmp_path / "in.jsonl", records, tail='{"id": "t", "prompt": ')

    with pytest.raises(InvalidInputFile) as caught:
        create_run(db, input_path=path, config=CONFIG, queue="fleet")

    error = caught.value
    assert (error.path, error.total) == (str(path), 2)
    assert [(e.line, e.field) for e in error.errors] == [(11, "id"), (17, None)]
    assert "truncated" in error.errors[1].message
    message = str(error)
    assert "2 invalid record(s)" in message
    assert "nothing was enqueued" in message
    assert f"{path}:11: field 'id': missing" in message
    assert f"{path}:17: not valid JSON" in message
    assert_database_empty(db)


def test_rollback_covers_items_already_flushed(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items inserted in earlier chunks, before the bad line is read, are rolled back too."""
    monkeypatch.setattr(enqueue, "INSERT_CHUNK", 4)
    path = write_jsonl(tmp_path / "in.jsonl", plain(30), tail="not json\n")
    with pytest.raises(InvalidInputFile):
        create_run(db, input_path=path, config=CONFIG, queue="fleet")
    assert_database_empty(db)


def test_error_list_is_capped_but_total_is_counted(db: Engine, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [[index] for index in range(25)])
    with pytest.raises(InvalidInputFile) as caught:
        create_run(db, input_path=path, config=CONFIG, queue="fleet")
    assert caught.value.total == 25
    assert len(caught.value.errors) == enqueue.ERRORS_SHOWN
    assert "... and 5 more" in str(caught.value)
    assert_database_empty(db)


def test_skip_invalid_enqueues_valid_records_and_fails_rejects(db: Engine, tmp_path: Path) -> None:
    records: list[Any] = [*plain(5), [1, 2], *plain(12)[5:], {"id": "r0", "prompt": "dup"}]
    path = write_jsonl(tmp_path / "in.jsonl", records)

    enqueued = create_run(db, input_path=path, config=CONFIG, queue="fleet", skip_invalid=True)

    # Rejects are stored as items too (so they are counted and exported), never run.
    assert (enqueued.items, enqueued.rejected) == (14, 2)
    with Session(db) as session:
        run = session.get(Run, enqueued.run_id)
        assert run is not None
        assert (run.item_count, run.rejected_count, run.slice_count) == (14, 2, enqueued.slices)

        items = session.exec(select(Item).order_by(col(Item.seq))).all()
        valid = [item for item in items if item.reject_reason is None]
        rejects = [item for item in items if item.reject_reason is not None]
        assert [item.custom_id for item in valid] == [f"r{i}" for i in range(12)]
        assert all(item.prompt for item in valid)
        assert [(item.seq, item.line_no, item.custom_id) for item in rejects] == [
            (5, 6, "line-6"),
            (13, 14, "line-14"),
        ]
        assert all(item.prompt is None for item in rejects)
        assert rejects[0].payload == {"raw": "[1, 2]\n"}
        assert "expected a JSON object" in (rejects[0].reject_reason or "")
        assert "duplicate id 'r0' (first on line 1)" in (rejects[1].reject_reason or "")

        results = session.exec(
            select(Result).order_by(col(Result.item_id), col(Result.lane_index))
        ).all()
        assert [(r.item_id, r.lane_index) for r in results] == [
            (rejects[0].id, 0),
            (rejects[0].id, 1),
            (rejects[1].id, 0),
            (rejects[1].id, 1),
        ]
        for result in results:
            assert result.ok is False
            assert result.error_kind == ErrorKind.invalid_input == "invalid_input"
            assert result.answer is None
            assert result.attempts == 0
        assert results[0].error_message == rejects[0].reject_reason

        assert_slices_cover_items(session, enqueued.run_id, 14, lanes=2)


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
@pytest.mark.parametrize("skip_invalid", [False, True])
def test_file_without_records_is_invalid(
    db: Engine, tmp_path: Path, content: str, skip_invalid: bool
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    with pytest.raises(InvalidInputFile, match="no records in the file"):
        create_run(db, input_path=path, config=CONFIG, queue="fleet", skip_invalid=skip_invalid)
    assert_database_empty(db)


def test_make_engine_creates_every_table(db: Engine) -> None:
    with db.connect() as connection:
        names = set(db.dialect.get_table_names(connection))
    assert set(SQLModel.metadata.tables) <= names
    with db.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    assert (mode, foreign_keys) == ("wal", 1)
