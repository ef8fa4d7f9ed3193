"""The bad input corpus through ``fleet enqueue``: a clear message, nothing enqueued.

The reader's own tests check each case in detail; here every case goes through the
command a user types, and the database is checked to hold no run afterwards. The
broker URL points nowhere: a bad file must fail before anything is published.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from typer.testing import CliRunner

from common.db import make_engine
from common.errors import ConfigError, FleetError, InvalidInputFile
from common.models import Item, Run
from producer.cli import app

runner = CliRunner()

GOOD = json.dumps({"id": "a", "prompt": "fine"}) + "\n"

#: Nesting deeper than Python's parser goes (it raises RecursionError).
DEEP = b'{"id": "a", "prompt": "p", "m": ' + b"[" * 100_000 + b"\n"

#: (case, file bytes, substrings the message must hold)
CORPUS: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("malformed JSON", (GOOD + '{"id": "b", "prompt": }\n').encode(), (":2:", "not valid JSON")),
    ("truncated last line", (GOOD + '{"id": "b", "pro').encode(), (":2:", "truncated")),
    ("missing id", b'{"prompt": "no id"}\n', (":1:", "field 'id'", "missing")),
    ("duplicate ids", (GOOD + GOOD).encode(), (":2:", "field 'id'", "duplicate id 'a'")),
    ("non-UTF-8 bytes", GOOD.encode() + b'{"id": "b", "prompt": "\xff"}\n', (":2:", "UTF-8")),
    ("wrong field type", b'{"id": "a", "prompt": 12}\n', (":1:", "field 'prompt'", "string")),
    ("id of wrong type", b'{"id": [1], "prompt": "x"}\n', (":1:", "field 'id'")),
    ("not an object", b'["a", "b"]\n', (":1:", "JSON object")),
    ("BOM in the middle", (GOOD + "\ufeff" + GOOD.replace('"a"', '"b"')).encode(), (":2:",)),
    ("deep nesting", DEEP, (":1:", "nested")),
    ("lone surrogate", b'{"id": "a", "prompt": "\\ud800"}\n', (":1:", "'prompt'", "surrogate")),
    ("escaped NUL", b'{"id": "a", "prompt": "a\\u0000"}\n', (":1:", "field 'prompt'", "NUL")),
    ("NaN", b'{"id": "a", "prompt": "p", "x": NaN}\n', (":1:", "field 'x'", "not a JSON number")),
    ("Infinity", b'{"id": "a", "prompt": "p", "x": Infinity}\n', (":1:", "field 'x'", "inf")),
    ("empty prompt", b'{"id": "a", "prompt": ""}\n', (":1:", "field 'prompt'", "empty")),
    ("blank prompt", b'{"id": "a", "prompt": "  \\t"}\n', (":1:", "field 'prompt'", "whitespace")),
]  # fmt: skip


def enqueue(tmp_path: Path, content: bytes, *extra: str) -> tuple[BaseException | None, int]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    state = tmp_path / "state"
    result = runner.invoke(
        app,
        ["enqueue", str(source), "--engine", "echo", "--model", "echo", *extra],
        env={"FLEET_BROKER_URL": "redis://127.0.0.1:1/0", "FLEET_STATE_DIR": str(state)},
    )
    db = make_engine(f"sqlite:///{state / 'fleet.db'}")
    with Session(db) as session:
        runs = session.exec(select(func.count()).select_from(Run)).one()
        items = session.exec(select(func.count()).select_from(Item)).one()
    db.dispose()
    return result.exception, runs + items


@pytest.mark.parametrize(("case", "content", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_file_names_file_line_and_field_and_enqueues_nothing(
    tmp_path: Path, case: str, content: bytes, expected: tuple[str, ...]
) -> None:
    error, stored = enqueue(tmp_path, content)
    assert isinstance(error, InvalidInputFile), case
    message = str(error)
    assert str(tmp_path / "in.jsonl") in message
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"
    assert "nothing was enqueued" in message
    assert stored == 0


@pytest.mark.parametrize("content", [b"", b"\n \n"], ids=["empty", "blank lines only"])
def test_file_without_records_enqueues_nothing(tmp_path: Path, content: bytes) -> None:
    error, stored = enqueue(tmp_path, content)
    assert isinstance(error, FleetError)
    assert str(tmp_path / "in.jsonl") in str(error)
    assert stored == 0


def test_template_naming_a_missing_field_names_it(tmp_path: Path) -> None:
    content = b'{"id": "a", "question": "why"}\n'
    error, stored = enqueue(tmp_path, content, "--template", "Q: {question} C: {context}")
    assert isinstance(error, InvalidInputFile)
    assert ":1:" in str(error)
    assert "context" in str(error)
    assert stored == 0


@pytest.mark.parametrize("model", ["./no/such/checkpoint", "/models/missing", "a/b/c"])
def test_unknown_model_path_is_a_config_error(tmp_path: Path, model: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(GOOD)
    result = runner.invoke(
        app,
        ["enqueue", str(source), "--model", model],
        env={"FLEET_BROKER_URL": "redis://127.0.0.1:1/0", "FLEET_STATE_DIR": str(tmp_path)},
    )
    assert isinstance(result.exception, ConfigError)
    assert model in str(result.exception)
    assert "no such checkpoint" in str(result.exception)


def test_folder_without_config_is_no_checkpoint(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(GOOD)
    (tmp_path / "empty-model").mkdir()
    result = runner.invoke(
        app,
        ["enqueue", str(source), "--model", str(tmp_path / "empty-model")],
        env={"FLEET_BROKER_URL": "redis://127.0.0.1:1/0", "FLEET_STATE_DIR": str(tmp_path)},
    )
    assert isinstance(result.exception, ConfigError)
    assert "config.json" in str(result.exception)


def test_a_line_over_max_line_bytes_is_refused_and_the_option_raises_the_limit(
    tmp_path: Path,
) -> None:
    line = json.dumps({"id": "a", "prompt": "x" * 3000}) + "\n"
    error, stored = enqueue(tmp_path, line.encode(), "--max-line-bytes", "1000")
    assert isinstance(error, InvalidInputFile)
    assert f":1: line of {len(line) - 1:,} bytes is over the limit of 1,000" in str(error)
    assert stored == 0
    error, stored = enqueue(tmp_path, line.encode(), "--max-line-bytes", "4000")
    assert not isinstance(error, InvalidInputFile)  # stored, then the publish fails
    assert stored == 2  # the run and its item
