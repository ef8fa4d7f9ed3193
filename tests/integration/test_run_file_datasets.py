"""Run files through `fleet run`: `workers`, each dataset's own template, reference field
and scorer, and with --skip-invalid bad dataset files that stop only themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import fleet, fleet_env, run_fleet

RUN_FILE = """
engine = "echo"
models = "answer_from=a"
slice_size = 1
workers = 2

[datasets.arith]
path = "arith.jsonl"
template = "Q {q} a={a}"
reference_field = "sol"
scorer = "numeric"

[datasets.caps]
path = "caps.jsonl"
template = "city a={city}"
reference_field = "capital"
scorer = "normalized"

[datasets]
missing = "nope.jsonl"
broken = "broken.jsonl"
"""


def write_inputs(folder: Path) -> Path:
    records = {
        "arith": [
            {"id": "m1", "q": "2+2", "a": "4.0", "sol": 4},
            {"id": "m2", "q": "3+3", "a": "7", "sol": 6},
        ],
        "caps": [{"id": "c1", "city": "paris!", "capital": "Paris"}],
    }
    for name, rows in records.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "broken.jsonl").write_text('{"id": "b1", \nnot json\n')
    run_file = folder / "eval.toml"
    run_file.write_text(RUN_FILE)
    return run_file


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_datasets_with_their_own_settings_and_bad_files_skipped(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    run_file = write_inputs(tmp_path)
    settings = {}
    if database == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    out = tmp_path / "out"
    shown = fleet(
        "run", str(run_file), "--skip-invalid", "-o", str(out),
        env=fleet_env(tmp_path, **settings), cwd=tmp_path,
    )  # fmt: skip
    assert "2 local worker(s)" in shown  # `workers` of the run file
    summary = json.loads((out / "summary.json").read_text())
    datasets = summary["dataset_results"]
    assert datasets["arith"] == {
        "correct": 1, "total": 2, "accuracy": 0.5, "items": 2, "rejected_items": 0
    }  # fmt: skip
    assert datasets["caps"] == {
        "correct": 1, "total": 1, "accuracy": 1.0, "items": 1, "rejected_items": 0
    }  # fmt: skip
    # Every record rejected, or the file unreadable: still in the per-dataset results.
    assert datasets["broken"]["rejected_items"] == datasets["broken"]["items"] == 2
    assert datasets["missing"]["rejected_items"] == 1
    assert datasets["broken"]["total"] == datasets["missing"]["total"] == 0
    assert summary["overall_results"]["correct"] == 2

    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_id = {line["id"]: line for line in lines if "id" in line}
    assert (by_id["m1"]["sol"], by_id["m1"]["reference"]) == (4, "4")
    assert (by_id["m1"]["answer"], by_id["m1"]["score"]) == ("4.0", 1.0)
    assert (by_id["c1"]["answer"], by_id["c1"]["score"]) == ("paris!", 1.0)
    missing = [line for line in lines if line.get("dataset") == "missing"]
    assert len(missing) == 1
    assert missing[0]["error_kind"] == "invalid_input"
    assert "nope.jsonl" in missing[0]["error"]
    assert "cannot read the file" in missing[0]["error"]


def test_a_missing_dataset_file_stops_the_run_without_skip_invalid(tmp_path: Path) -> None:
    run_file = write_inputs(tmp_path)
    done = run_fleet("run", str(run_file), env=fleet_env(tmp_path), cwd=tmp_path)
    assert done.returncode != 0
    assert "dataset 'missing'" in done.stderr
    assert "nope.jsonl" in done.stderr
    assert run_fleet("status", "latest", env=fleet_env(tmp_path), cwd=tmp_path).returncode != 0
