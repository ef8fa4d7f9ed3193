"""``fleet retry`` and ``fleet cancel`` from the command line, on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result, Run
from common.runconfig import RunConfig
from producer.enqueue import create_run
from tests.integration.helpers import fleet, fleet_env, run_fleet


def write_inputs(path: Path, count: int, poison: set[int]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"i{n}", "prompt": f"item {n} {'POISON' if n in poison else ''}"})
            + "\n"
            for n in range(count)
        )
    )
    return path


def test_retry_reruns_failed_items_of_the_kind_asked(tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 20, poison={3, 11})
    env = fleet_env(tmp_path)
    fleet("run", str(inputs), "--engine", "echo", "--model", "fail_marker=POISON",
          "--slice-size", "5", env=env, cwd=tmp_path)  # fmt: skip
    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    with session_scope(db) as session:
        before = {row.item_id: row.id for row in session.exec(select(Result))}

    done = run_fleet("retry", "latest", "--kind", "oom", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "0 failed result(s) reopened" in done.stderr

    fleet("retry", "latest", "--kind", "engine", "-o", str(tmp_path / "out"), env=env, cwd=tmp_path)
    with session_scope(db) as session:
        run = session.exec(select(Run)).one()
        after = {row.item_id: row for row in session.exec(select(Result))}
    assert (run.status, run.finalize_count) == ("completed", 2)
    assert len(after) == 20
    rerun = {item_id for item_id, row in after.items() if row.id != before[item_id]}
    failed = {item_id for item_id, row in after.items() if not row.ok}
    assert rerun == failed  # exactly the two failed items ran again (and failed again)
    assert len(failed) == 2
    records = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(records) == 20
    db.dispose()


def test_cancel_a_pending_run_then_export_its_partial_results(tmp_path: Path) -> None:
    env = fleet_env(tmp_path)
    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    config = RunConfig(engine="echo", models=["echo"], slice_size=5)
    run_id = create_run(
        db, input_path=write_inputs(tmp_path / "in.jsonl", 10, set()), config=config, queue="fleet"
    ).run_id
    fleet("cancel", run_id, env=env, cwd=tmp_path)
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.status == "cancelled"

    again = run_fleet("cancel", run_id, env=env, cwd=tmp_path)
    assert again.returncode == 2
    assert f"run {run_id} is cancelled" in again.stderr

    out = tmp_path / "partial.jsonl"
    fleet("export", run_id, "-o", str(out), env=env, cwd=tmp_path)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 10
    assert not any(record["success"] for record in records)
    db.dispose()
