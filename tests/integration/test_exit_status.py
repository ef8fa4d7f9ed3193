"""``fleet run``'s exit status: a run in which everything failed, or more than
``--max-failures``, exits 1 with the cause on stderr (the embedded default, echo engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import fleet_env, run_fleet


def write_inputs(path: Path, poisoned: int, total: int) -> Path:
    lines = [
        {"id": f"i{n}", "prompt": f"{'POISON ' if n < poisoned else ''}item {n}"}
        for n in range(total)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_every_result_failed_exits_1_naming_the_cause(tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", poisoned=4, total=4)
    done = run_fleet(
        "run", str(inputs), "--engine", "echo", "--model", "fail_marker=POISON",
        "-o", str(tmp_path / "out"), env=fleet_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "every result failed (4 of 4)" in done.stderr
    assert "4 x engine" in done.stderr
    assert "fail marker" in done.stderr
    assert (tmp_path / "out" / "results.jsonl").exists()  # the results are written all the same
    overall = json.loads((tmp_path / "out" / "summary.json").read_text())["statistics"]["overall"]
    assert overall["latency_mean_s"] is None  # no answer succeeded: no latency, not 0
    assert overall["latency_p95_s"] is None
    assert "latency_mean_s=n/a" in done.stdout


@pytest.mark.parametrize(
    ("limit", "status"), [("1", 1), ("40%", 0), ("39%", 1)], ids=["count", "share", "share-over"]
)
def test_max_failures_makes_the_exit_status_stricter(
    tmp_path: Path, limit: str, status: int
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", poisoned=2, total=5)
    done = run_fleet(
        "run", str(inputs), "--engine", "echo", "--model", "fail_marker=POISON",
        "--batch-size", "1", "--max-failures", limit, env=fleet_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == status, done.stdout + done.stderr
    if status:
        assert f"2 of 5 results failed, more than --max-failures {limit}" in done.stderr


def test_a_bad_max_failures_is_refused_before_anything_starts(tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", poisoned=0, total=1)
    done = run_fleet(
        "run", str(inputs), "--engine", "echo", "--model", "echo", "--max-failures", "lots",
        env=fleet_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--max-failures lots" in done.stderr
    assert not (tmp_path / ".fleet" / "fleet.db").exists()
