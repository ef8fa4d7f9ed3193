"""In-memory records (the Python API's inputs): validated as a file's lines are, refused by
index and field, stored exactly as the same lines of a file would be."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import col, select

from common.db import make_engine, session_scope
from common.errors import ConfigError, InvalidInputFile, RecordError
from common.models import Item, Run
from common.runconfig import RunConfig
from producer.enqueue import create_run
from producer.inputs import InputRecord, RecordReader, Rejected
from producer.records import RecordsReader

CONFIG = RunConfig(engine="echo", models=["echo"], slice_size=4)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield engine
    engine.dispose()


def refusal(record: Any, **reader: Any) -> RecordError:
    """The error of a list whose record 2 is ``record`` (records 0 and 1 are fine)."""
    records = [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, record]
    entries = list(RecordsReader(records, **reader))
    assert all(isinstance(entry, InputRecord) for entry in entries[:2])
    rejected = entries[2]
    assert isinstance(rejected, Rejected)
    assert isinstance(rejected.error, RecordError)
    return rejected.error


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({"prompt": "no id"}, "id", "missing"),
        ({"id": "a", "prompt": "again"}, "id", "duplicate id 'a'"),
        ({"id": 3}, "prompt", "missing"),
        ({"id": 3, "prompt": "   "}, "prompt", "empty"),
        ({"id": 3, "prompt": 7}, "prompt", "must be a string"),
        ({"id": 3, "prompt": "x", "score": math.nan}, "score", "NaN"),
        ({"id": 3, "prompt": "x", "meta": {"k": ["ok", "\x00"]}}, "meta.k[1]", "NUL"),
        ({"id": 3, "prompt": "x", "note": "\ud800"}, "note", "lone surrogate"),
        (
            {"id": 3, "prompt": "x", "meta": {"when": datetime.date(2026, 1, 1)}},
            "meta.when",
            "date",
        ),
        ({"id": 3, "prompt": "x", "tags": {"a", "b"}}, "tags", "set"),
        ({"id": 3, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
    ],
)
def test_a_bad_record_is_refused_with_its_index_and_field(
    record: dict[str, Any], field: str, words: str
) -> None:
    error = refusal(record)
    assert (error.index, error.line, error.field) == (2, 3, field)
    assert words in error.message
    assert str(error).startswith(f"record 2: field '{field}': ")


def test_what_is_no_dict_is_refused_with_its_index() -> None:
    error = refusal(["id", "prompt"])
    assert (error.index, error.field) == (2, None)
    assert "expected a dict, got list" in str(error)


def test_a_record_that_holds_itself_is_refused_not_walked_forever() -> None:
    record: dict[str, Any] = {"id": 3, "prompt": "x"}
    record["self"] = record
    assert "Circular reference" in refusal(record).message


def test_the_template_and_reference_field_are_checked_as_for_a_file() -> None:
    records = [
        {"id": 0, "question": "q", "prompt": "p", "gold": "g"},
        {"id": 1, "question": "q", "prompt": "p"},
    ]
    templated = list(RecordsReader(records, template="Q: {question} A: {gold}"))
    assert isinstance(templated[0], InputRecord)
    assert templated[0].prompt == "Q: q A: g"
    assert isinstance(templated[1], Rejected)
    assert (templated[1].error.field, templated[1].error.message) == (
        "gold",
        "named by the template but missing",
    )
    referenced = list(RecordsReader(records, reference_field="gold"))
    assert isinstance(referenced[0], InputRecord)
    assert referenced[0].reference == "g"
    assert isinstance(referenced[1], Rejected)
    assert isinstance(referenced[1].error, RecordError)
    assert (referenced[1].error.index, referenced[1].error.field) == (1, "gold")


def test_records_read_as_the_same_lines_of_a_file(tmp_path: Path) -> None:
    records = [
        {"id": 1, "context": "Paris is in France.", "query": "Where is Paris?", "extra": [1.5]},
        {"id": "two", "messages": [{"role": "user", "content": "héllo"}]},
        {"id": 3, "prompt": "plain", "nested": {"a": None, "b": True}},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert list(RecordsReader(records)) == list(RecordReader(path))


def test_records_are_read_one_at_a_time() -> None:
    taken: list[int] = []

    def generate() -> Iterator[dict[str, Any]]:
        for index in range(1_000):
            taken.append(index)
            yield {"id": index, "prompt": f"p{index}"}

    reader = iter(RecordsReader(generate()))
    next(reader)
    next(reader)
    assert taken == [0, 1]


def test_a_bad_list_stores_nothing_and_names_every_bad_record(db: Engine) -> None:
    records = [{"id": n, "prompt": f"p{n}"} for n in range(10)]
    records[4] = {"id": 4}
    records[7] = {"id": 7, "prompt": "x", "v": math.inf}
    with pytest.raises(InvalidInputFile) as caught:
        create_run(db, records=records, config=CONFIG, queue="fleet")
    assert [(error.index, error.field) for error in caught.value.errors] == [
        (4, "prompt"),
        (7, "v"),
    ]
    assert all(isinstance(error, RecordError) for error in caught.value.errors)
    assert "record 4: field 'prompt'" in str(caught.value)
    with session_scope(db) as session:
        assert session.exec(select(func.count()).select_from(Run)).one() == 0


def test_skip_invalid_stores_the_rest_in_order_and_the_reject_by_position(db: Engine) -> None:
    records = [{"id": f"r{n}", "prompt": f"p{n}"} for n in range(6)]
    records[2] = {"id": "r2", "prompt": ""}
    enqueued = create_run(
        db, records=iter(records), config=CONFIG, queue="fleet", skip_invalid=True
    )
    assert (enqueued.items, enqueued.rejected) == (6, 1)
    with session_scope(db) as session:
        items = session.exec(select(Item).order_by(col(Item.seq))).all()
        run = session.exec(select(Run)).one()
    kept = [item.custom_id for item in items if item.reject_reason is None]
    assert kept == ["r0", "r1", "r3", "r4", "r5"]
    assert [item.line_no for item in items] == [1, 2, 3, 4, 5, 6]
    assert items[2].reject_reason is not None
    assert items[2].reject_reason.startswith("record 2: field 'prompt'")
    assert run.input_path == "records"


def test_records_and_an_input_file_are_not_taken_together(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "prompt": "x"}\n')
    with pytest.raises(ConfigError, match="one of them"):
        create_run(
            db, input_path=path, records=[{"id": 2, "prompt": "y"}], config=CONFIG, queue="q"
        )


def test_an_empty_list_is_refused(db: Engine) -> None:
    with pytest.raises(InvalidInputFile, match="no records"):
        create_run(db, records=[], config=CONFIG, queue="fleet")
