"""Per-item aggregation across lanes, in SQL, against a hand-computed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from common.db import session_scope
from common.evaluation import evaluation_statistics
from common.models import Item, Run, Slice
from common.results import ResultRow
from common.runconfig import RunConfig
from common.stats import nest
from common.store import save_results
from producer.enqueue import create_run

#: Scores per item and lane; lanes are (m1, identity), (m1, cd@1), (m2, identity), (m2, cd@1).
#: None is a failed answer (no score): it counts as wrong.
TABLE = {
    "a": [1.0, 1.0, 1.0, 1.0],
    "b": [1.0, 0.0, 0.0, 0.0],
    "c": [1.0, 1.0, 0.0, None],
    "d": [0.0, 0.0, 0.0, 0.0],
}

#: Item score per aggregate, by hand: any = OR, all = AND, majority = more than 2 of 4.
EXPECTED_OVERALL = {"any": 3.0, "all": 1.0, "majority": 1.0, "mean": 1.75}


def scored_run(db: Engine, tmp_path: Path, aggregate: str) -> str:
    for name, ids in (("ds1", "ab"), ("ds2", "cd")):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": i, "prompt": f"p {i}", "ref": "1"}) + "\n" for i in ids)
        )
    config = RunConfig(
        engine="echo",
        models=["m1", "m2"],
        permutations=["identity", "cyclic-digits@1"],
        slice_size=2,
        scorer="exact",
        reference_field="ref",
        aggregate=aggregate,  # type: ignore[arg-type]
        datasets={"ds1": str(tmp_path / "ds1.jsonl"), "ds2": str(tmp_path / "ds2.jsonl")},
    )
    run_id = create_run(db, config=config, queue="q").run_id
    with session_scope(db) as session:
        items = {item.custom_id: item for item in session.exec(of_run(Item, run_id))}
        slices = {(s.lane_index, s.seq_start): s.id for s in session.exec(of_run(Slice, run_id))}
        save_results(
            session,
            rows=[
                ResultRow(
                    run_id=run_id,
                    item_id=items[custom_id].id or 0,
                    lane_index=lane,
                    # slices of 2 items: the slice that answered the item in this lane
                    slice_id=slices[(lane, items[custom_id].seq // 2 * 2)],
                    ok=score is not None,
                    score=score,
                )
                for custom_id, scores in TABLE.items()
                for lane, score in enumerate(scores)
            ],
        )
    return run_id


def of_run(table: Any, run_id: str) -> Any:
    return select(table).where(table.run_id == run_id)


def statistics(db: Engine, run_id: str) -> dict[str, dict[str, float]]:
    with Session(db) as session:
        run = session.get(Run, run_id)
        assert run is not None
        return nest(evaluation_statistics(session, run=run))


@pytest.mark.parametrize(("aggregate", "correct"), EXPECTED_OVERALL.items())
def test_each_aggregate_matches_the_hand_table(
    db: Engine, tmp_path: Path, aggregate: str, correct: float
) -> None:
    stats = statistics(db, scored_run(db, tmp_path, aggregate))
    # four items, whatever the number of lanes: counted per item, never per lane
    assert stats["overall"] == {"correct": correct, "total": 4.0, "accuracy": correct / 4}


def test_every_scope_of_an_or_run(db: Engine, tmp_path: Path) -> None:
    stats = statistics(db, scored_run(db, tmp_path, "any"))
    assert {f"lane:{i}": stats[f"lane:{i}"]["correct"] for i in range(4)} == {
        "lane:0": 3.0,
        "lane:1": 2.0,
        "lane:2": 1.0,
        "lane:3": 1.0,
    }
    assert stats["model:m1"]["correct"] == 3.0  # a, b, c
    assert stats["model:m2"]["correct"] == 1.0  # a
    assert stats["permutation:identity"]["correct"] == 3.0  # a, b, c
    assert stats["permutation:cyclic-digits@1"]["correct"] == 2.0  # a, c
    assert stats["dataset:ds1"] == {
        "correct": 2.0, "total": 2.0, "accuracy": 1.0, "items": 2, "rejected_items": 0
    }  # fmt: skip
    assert stats["dataset:ds2"] == {
        "correct": 1.0, "total": 2.0, "accuracy": 0.5, "items": 2, "rejected_items": 0
    }  # fmt: skip
    assert stats["batch:0"]["correct"] == 2.0  # slice 0 holds a and b
    assert stats["batch:1"]["correct"] == 1.0
    assert stats["batch:1"]["time_seconds"] == 0.0  # slices never ran


def test_a_run_without_scorer_has_no_accuracy(db: Engine, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "x"}\n')
    run_id = create_run(
        db, input_path=source, config=RunConfig(engine="echo", models=["m"]), queue="q"
    ).run_id
    assert statistics(db, run_id) == {}
