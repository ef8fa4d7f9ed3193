"""``fleet run`` on the example file: embedded server, SQLite, real worker processes."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func
from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result, Run
from tests.integration.helpers import fleet, fleet_env, run_fleet

EXAMPLE = Path(__file__).parents[2] / "examples" / "contexts.jsonl"


def test_run_example_file_with_demo_model(tmp_path: Path, demo_model: Path) -> None:
    """Every item gets exactly one result, in input order; statistics recount the rows.

    The first 120 records of the example file (its full 300 are ``make demo``'s).
    """
    out = tmp_path / "out"
    example = tmp_path / "contexts.jsonl"
    example.write_text("".join(EXAMPLE.read_text().splitlines(keepends=True)[:120]))
    fleet(
        "run",
        str(example),
        "--model",
        str(demo_model),
        "--workers",
        "2",
        "--max-new-tokens",
        "8",
        "--slice-size",
        "30",
        "--output",
        str(out),
        env=fleet_env(tmp_path),
        cwd=tmp_path,
    )
    inputs = [json.loads(line) for line in example.read_text().splitlines()]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in inputs]
    # The inputs carry a `success` of their own: it stays, the fleet's moves under `fleet`.
    assert all(r["fleet"]["success"] and r["answer"] is not None for r in records)
    assert [r["success"] for r in records] == [r["success"] for r in inputs]
    assert {r["query"] for r in records} == {r["query"] for r in inputs}  # fields pass through
    assert len({r["worker"] for r in records}) == 2  # both local workers took slices

    summary = json.loads((out / "summary.json").read_text())
    overall = summary["statistics"]["overall"]
    assert summary["run"]["status"] == "completed"
    assert summary["run"]["finalize_count"] == 1
    assert overall["results"] == overall["results_ok"] == len(inputs)

    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    with session_scope(db) as session:
        run = session.exec(select(Run)).one()
        per_item = session.execute(
            select(Result.item_id, Result.lane_index, func.count())
            .where(Result.run_id == run.id)
            .group_by(Result.item_id, Result.lane_index)
        ).all()
        tokens_out = session.execute(
            select(func.sum(Result.tokens_out)).where(Result.run_id == run.id)
        ).scalar_one()
    assert len(per_item) == len(inputs)
    assert all(count == 1 for *_, count in per_item)
    assert overall["tokens_out"] == tokens_out
    workers = {k: v for k, v in summary["statistics"].items() if k.startswith("worker:")}
    assert sum(block["processed"] for block in workers.values()) == len(inputs)


def test_run_rejects_bad_file_and_enqueues_nothing(tmp_path: Path) -> None:
    """A malformed line stops the run before anything is created, naming file and line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "fine"}\n{"id": "b", "prompt": \n')
    done = run_fleet(
        "run",
        str(bad),
        "--engine",
        "echo",
        "--model",
        "echo",
        env=fleet_env(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert f"{bad}:2" in done.stderr
    assert "nothing was enqueued" in done.stderr
    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    with session_scope(db) as session:
        assert session.exec(select(Run)).all() == []
