"""The figures a user reads: rates named for what they count, over the time the run had
work in flight, integer counts, null latency when nothing succeeded, the start time."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import col, select

from common.db import session_scope
from common.models import Result, Run, Slice, utcnow
from common.queries import progress
from common.stats import nest, run_statistics
from tests.integration.helpers import fleet, fleet_env
from tests.unit.common.test_evaluation import scored_run


def test_rates_use_the_active_time_not_the_idle_gap(db: Engine, tmp_path: Path) -> None:
    """A run that ran 10 s, sat idle for 8 minutes, then ran 5 s more (a retry)."""
    run_id = scored_run(db, tmp_path, "any")
    now = utcnow()
    start = now - timedelta(seconds=600)
    with session_scope(db) as session:
        session.execute(update(Run).where(col(Run.id) == run_id).values(started_at=start))
        session.execute(
            update(Slice)
            .where(col(Slice.run_id) == run_id)
            .values(started_at=start, finished_at=start + timedelta(seconds=10))
        )
        last = max(session.exec(select(Slice.id).where(Slice.run_id == run_id)))
        session.execute(
            update(Slice)
            .where(col(Slice.id) == last)
            .values(started_at=now - timedelta(seconds=5), finished_at=now)
        )
        session.execute(update(Result).where(col(Result.run_id) == run_id).values(tokens_out=3))
        overall = nest(run_statistics(session, run_id=run_id))["overall"]
    assert (overall["wall_time_s"] or 0) >= 599
    assert overall["active_time_s"] == pytest.approx(15.0)
    assert overall["results_per_s"] == pytest.approx(16 / 15)  # 4 items x 4 lanes
    assert overall["items_per_s"] == pytest.approx(4 / 15)
    assert overall["tokens_per_s"] == pytest.approx(16 * 3 / 15)
    assert isinstance(overall["results"], int)
    assert isinstance(overall["correct"], int)


def test_status_rate_stops_at_the_finish(db: Engine, tmp_path: Path) -> None:
    run_id = scored_run(db, tmp_path, "any")
    now = utcnow()
    with session_scope(db) as session:
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(started_at=now - timedelta(seconds=20), finished_at=now - timedelta(seconds=10))
        )
        assert progress(session, run_id=run_id).elapsed_s == pytest.approx(10.0)


def test_fleet_run_reports_items_and_results_per_second_and_integer_counts(
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"id": f"i{n}", "prompt": f"a=x{n} b=y{n}", "ref": f"x{n}"}) + "\n"
            for n in range(4)
        )
    )
    env = fleet_env(tmp_path)
    out = fleet(
        "run", str(inputs), "--engine", "echo", "--model", "answer_from=a",
        "--model", "answer_from=b", "--reference-field", "ref", "--scorer", "exact",
        "--aggregate", "mean", "--slice-size", "2", "-o", str(tmp_path / "out"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert "accuracy=0.5 (mean score of 4 items; scores sum to 2)" in " ".join(out.split())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    overall = summary["statistics"]["overall"]
    assert overall["results"] == 8
    assert overall["items"] == 4
    assert overall["results_per_s"] == pytest.approx(8 / overall["active_time_s"])
    assert overall["items_per_s"] == pytest.approx(4 / overall["active_time_s"])
    assert overall["active_time_s"] <= overall["wall_time_s"] + 1e-6
    for name in ("items", "results", "results_ok", "tokens_out", "correct", "total"):
        assert type(overall[name]) is int, name
    assert all(type(batch["total"]) is int for batch in summary["batch_results"])
    assert "overlap" in summary["batch_results_time"]
    assert summary["config"]["start_time"] == summary["run"]["started_at"] is not None

    first = fleet("status", "latest", env=env, cwd=tmp_path)
    time.sleep(1.2)
    assert fleet("status", "latest", env=env, cwd=tmp_path) == first  # the rate stays put
