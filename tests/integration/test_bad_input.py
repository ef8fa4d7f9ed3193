"""Bad input through the enqueue path on SQLite and on PostgreSQL: the same verdict.

Values one database stores and the other refuses (a NUL, a lone surrogate, NaN) or
that no export can write (Infinity), nesting deeper than a parser goes, a line too
long to read, empty prompts: each is refused at enqueue naming file, line and field;
``--skip-invalid`` records each as an ``invalid_input`` reject and the rest runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import col, select

from common.db import session_scope
from common.errors import InvalidInputFile
from common.models import Item, Result, Run
from common.results import ErrorKind
from common.runconfig import RunConfig
from producer.enqueue import create_run
from producer.export import write_jsonl
from producer.inputs import MAX_DEPTH

#: Bytes allowed per line here (the default is 16 MiB; the check is the same).
LINE_LIMIT = 200_000

#: Where a record nested 150 levels deep in ``m`` crosses the limit.
DEEPEST = "m" + "[0]" * (MAX_DEPTH - 1)

#: (line, the field the error names or None, a fragment of the message)
BAD_LINES: list[tuple[str, str | None, str]] = [
    ('{"id": "deep", "prompt": "p", "m": ' + "[" * 100_000, None, "nested deeper"),
    ('{"id": "deep2", "prompt": "p", "m": ' + "[" * 150 + "]" * 150 + "}", DEEPEST, "nested"),
    ('{"id": "sur", "prompt": "x \\ud800 y"}', "prompt", "lone surrogate"),
    ('{"id": "nul", "prompt": "x \\u0000 y"}', "prompt", "NUL"),
    ('{"id": "nulkey", "prompt": "p", "a\\u0000b": 1}', "a\\u0000b", "NUL"),
    ('{"id": "nan", "prompt": "p", "score": NaN}', "score", "not a JSON number"),
    ('{"id": "inf", "prompt": "p", "w": [Infinity]}', "w[0]", "not a JSON number"),
    ('{"id": "huge", "prompt": "' + "x" * (2 * LINE_LIMIT) + '"}', None, "over the limit"),
    ('{"id": "empty", "prompt": ""}', "prompt", "empty"),
    ('{"id": "blank", "prompt": " \\n\\t "}', "prompt", "whitespace"),
]


def write_corpus(tmp_path: Path) -> Path:
    """Good lines 1, 3, 5 ...; each bad line between two good ones."""
    lines: list[str] = []
    for n, (bad, _, _) in enumerate(BAD_LINES):
        lines += [json.dumps({"id": f"ok{n}", "prompt": f"fine {n}"}), bad]
    lines.append(json.dumps({"id": "last", "prompt": "fine"}))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def config() -> RunConfig:
    return RunConfig(engine="echo", models=["echo"], slice_size=8, max_line_bytes=LINE_LIMIT)


def run_count(db: Engine) -> int:
    with session_scope(db) as session:
        return session.execute(select(func.count()).select_from(Run)).scalar_one()


def test_each_bad_line_is_refused_naming_file_line_and_field(db: Engine, tmp_path: Path) -> None:
    path = write_corpus(tmp_path)
    before = run_count(db)
    with pytest.raises(InvalidInputFile) as refused:
        create_run(db, input_path=path, config=config(), queue="fleet")
    message = str(refused.value)
    for n, (_, field, fragment) in enumerate(BAD_LINES):
        where = f"{path}:{2 * n + 2}: " + (f"field '{field}': " if field else "")
        shown = [line for line in message.splitlines() if line.strip().startswith(where)]
        assert len(shown) == 1, (where, message)
        assert fragment in shown[0], (fragment, shown[0])
    assert f"{len(BAD_LINES)} invalid record(s); nothing was enqueued" in message
    assert run_count(db) == before


def test_skip_invalid_records_each_as_a_reject_and_the_rest_exports(
    db: Engine, tmp_path: Path
) -> None:
    path = write_corpus(tmp_path)
    enqueued = create_run(db, input_path=path, config=config(), queue="fleet", skip_invalid=True)
    assert (enqueued.items, enqueued.rejected) == (2 * len(BAD_LINES) + 1, len(BAD_LINES))
    with session_scope(db) as session:
        rejects = list(
            session.exec(
                select(Item.line_no, Item.reject_reason, Result.error_kind)
                .join(Result, col(Result.item_id) == col(Item.id))
                .where(Item.run_id == enqueued.run_id, col(Item.reject_reason).is_not(None))
                .order_by(col(Item.line_no))
            )
        )
    assert [line_no for line_no, _, _ in rejects] == [2 * n + 2 for n in range(len(BAD_LINES))]
    assert {kind for _, _, kind in rejects} == {ErrorKind.invalid_input}
    for (_, reason, _), (_, field, fragment) in zip(rejects, BAD_LINES, strict=True):
        assert reason is not None
        assert fragment in reason
        assert (f"field '{field}'" in reason) if field else ("field" not in reason)
    out = tmp_path / "results.jsonl"
    write_jsonl(db, run_ref=enqueued.run_id, path=out)

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the export: not JSON")

    exported = [json.loads(line, parse_constant=no_constants) for line in out.open()]
    assert len(exported) == 2 * len(BAD_LINES) + 1
