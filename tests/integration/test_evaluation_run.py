"""Evaluation runs end to end through real workers: models x permutations scored, and a pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session

from common.db import make_engine
from common.models import Run
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import fleet, fleet_env

#: (solution, a, b, c): checkpoint "a" answers field a, "b" field b, "c" the number c.
#: Fields a and b are text, relabelled with the input like the solution, so their
#: checkpoints are right under every permutation or none; c is a number, never
#: relabelled, so checkpoint "c" is right only where the inverse shift maps c onto the
#: solution: item 3 under cyclic-digits@1 (123 -> 912), item 4 under @0.
PUZZLES = {
    "easy": [
        ("123", "123", "999", 555),  # right by a
        ("456", "111", "456", 111),  # right by b
        ("912", "111", "222", 123),  # right by c, only under cyclic-digits@1
        ("789", "111", "222", 789),  # right by c, only under cyclic-digits@0
    ],
    "hard": [
        ("555", "111", "222", 111),  # wrong everywhere
        ("333", "1", "2", 3),  # wrong everywhere
    ],
}

RUN_FILE = """
engine = "echo"
models = ["answer_from=a", "answer_from=b", "answer_from=c"]
permutation = "cyclic-digits"
permutations = 3
template = "puzzle {puzzle} a={a} b={b} c={c}"
reference_field = "solution"
scorer = "exact"
aggregate = "any"
slice_size = 2

[datasets]
easy = "easy.jsonl"
hard = "hard.jsonl"
"""


def write_puzzles(folder: Path) -> None:
    for name, rows in PUZZLES.items():
        with (folder / f"{name}.jsonl").open("w") as out:
            for number, (solution, a, b, c) in enumerate(rows):
                record = {"id": f"{name}-{number}", "puzzle": "0120", "solution": solution}
                out.write(json.dumps({**record, "a": a, "b": b, "c": c}) + "\n")


def test_checkpoints_times_permutations_or_accuracy(tmp_path: Path) -> None:
    """3 checkpoints x 3 permutations: OR accuracy per item equals the hand count."""
    write_puzzles(tmp_path)
    (tmp_path / "eval.toml").write_text(RUN_FILE)
    out = tmp_path / "out"
    fleet(
        "run",
        str(tmp_path / "eval.toml"),
        "--workers",
        "2",
        "--output",
        str(out),
        env=fleet_env(tmp_path),
        cwd=tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall_results"]["correct"] == 4  # items 1-4; never 6 + ... summed per lane
    assert summary["overall_results"]["total"] == 6
    assert summary["overall_results"]["accuracy"] == 4 / 6
    assert set(summary["overall_results"]) >= {"elapsed_time", "end_time"}
    assert summary["config"]["permutations"] == [f"cyclic-digits@{k}" for k in range(3)]
    assert [
        (batch["batch_idx"], batch["correct"], batch["total"]) for batch in summary["batch_results"]
    ] == [(0, 2, 2), (1, 2, 2), (2, 0, 2)]
    assert all(batch["time_seconds"] >= 0 for batch in summary["batch_results"])
    models = {name: block["correct"] for name, block in summary["model_results"].items()}
    assert models == {"answer_from=a": 1, "answer_from=b": 1, "answer_from=c": 2}
    perms = {name: block["correct"] for name, block in summary["permutation_results"].items()}
    assert perms == {"cyclic-digits@0": 3, "cyclic-digits@1": 3, "cyclic-digits@2": 2}
    assert summary["dataset_results"]["easy"]["accuracy"] == 1.0
    assert summary["dataset_results"]["hard"]["correct"] == 0
    assert len(summary["lane_results"]) == 9

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 * 9  # one result per item and lane
    assert len({(r["id"], r["lane"]) for r in records}) == 6 * 9
    by_lane = {(r["id"], r["model"], r["permutation"]): r for r in records}
    shifted = by_lane[("easy-2", "answer_from=c", "cyclic-digits@1")]
    # answer: mapped back to the item's digits (what was scored); raw_answer: as generated
    assert (shifted["answer"], shifted["raw_answer"], shifted["score"]) == ("912", "123", 1.0)
    relabelled = by_lane[("easy-0", "answer_from=a", "cyclic-digits@2")]
    assert (relabelled["answer"], relabelled["raw_answer"]) == ("123", "345")  # input shifted
    assert relabelled["score"] == 1.0


def wait_completed(database_url: str, run_id: str, timeout_s: float = 120) -> Run:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with Session(engine) as session:
                run = session.get(Run, run_id)
                if run is not None and run.status in ("completed", "failed", "cancelled"):
                    return run
            time.sleep(0.3)
    finally:
        engine.dispose()
    raise AssertionError(f"run {run_id} did not finish in {timeout_s}s")


def test_two_stage_pipeline_answer_then_judge(
    tmp_path: Path, redis_url: str, start_workers: WorkerStarter
) -> None:
    """Stage 1 answers; stage 2 reads stage 1's answers (--from-run) and judges them."""
    database_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    start_workers(2, broker_url=redis_url, database_url=database_url)
    env = fleet_env(tmp_path, broker_url=redis_url, database_url=database_url)
    questions: list[dict[str, Any]] = [
        {"id": "q1", "question": "2+2", "guess": "4", "other": "5", "expected": "4"},
        {"id": "q2", "question": "3+3", "guess": "7", "other": "6", "expected": "6"},
        {"id": "q3", "question": "1+1", "guess": "3", "other": "3", "expected": "2"},
    ]
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps(q) + "\n" for q in questions))
    first = fleet(
        "enqueue",
        str(source),
        "--engine",
        "echo",
        "--model",
        "answer_from=guess",
        "--model",
        "answer_from=other",
        "--template",
        "Q: {question} guess={guess} other={other}",
        "--reference-field",
        "expected",
        "--scorer",
        "exact",
        env=env,
        cwd=tmp_path,
    ).strip()
    assert wait_completed(database_url, first).status == "completed"

    second = fleet(
        "enqueue",
        "--from-run",
        first,
        "--engine",
        "echo",
        "--model",
        "answer_from=verdict",
        "--template",
        "Judge {question}: proposed={answer} by {model} verdict={answer}",
        "--reference-field",
        "reference",
        "--scorer",
        "exact",
        env=env,
        cwd=tmp_path,
    ).strip()
    run = wait_completed(database_url, second)
    assert run.status == "completed"
    assert run.item_count == 6  # 3 questions x 2 stage-1 lanes
    assert run.config["from_run"] == first

    out = tmp_path / "stage2.jsonl"
    fleet("export", second, "--output", str(out), env=env, cwd=tmp_path)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {f"{q['id']}@{lane}" for q in questions for lane in (0, 1)}
    assert records["q1@0"]["source_id"] == "q1"
    assert records["q1@0"]["source_model"] == "answer_from=guess"
    assert records["q1@0"]["model"] == "answer_from=verdict"  # the stage's own lane
    assert records["q2@1"]["source_answer"] == records["q2@1"]["answer"] == "6"
    right = sorted(key for key, record in records.items() if record["score"] == 1.0)
    assert right == ["q1@0", "q2@1"]  # exactly the stage-1 answers that were right
