"""The Python API as a notebook uses it: ``fleet.run`` on a list of dicts (embedded default,
real worker processes), the results read back in order and as a DataFrame, an interrupted
run resumed, failures retried, a fleet's run enqueued, waited for and cancelled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

import fleet
from common.db import make_engine, session_scope
from common.models import Result
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import fleet_env
from tests.integration.test_interrupt_resume import heed_sigint, processes_in, results_stored

EXAMPLE = Path(__file__).parents[2] / "examples" / "contexts.jsonl"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook's environment: its own working folder and state directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLEET_STATE_DIR", str(tmp_path / ".fleet"))
    monkeypatch.setenv("FLEET_TORCH_THREADS", "1")
    return tmp_path / ".fleet"


def numbered(count: int, poison: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    return [
        {"id": f"i{n}", "prompt": f"item {n}" + (" POISON" if n in poison else "")}
        for n in range(count)
    ]


def test_a_list_of_dicts_runs_and_reads_back_in_order(state_dir: Path, demo_model: Path) -> None:
    records = [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:12]]
    run = fleet.run(records, model=str(demo_model), max_new_tokens=4, slice_size=4, progress=False)

    state = run.status()
    assert (state.status, state.ok, state.failed) == ("completed", 12, 0)
    rows = list(run.results())
    assert [row["id"] for row in rows] == [record["id"] for record in records]
    assert [row["query"] for row in rows] == [record["query"] for record in records]
    assert all(row["success"] and row["answer"] is not None for row in rows)
    exported = state_dir / "runs" / run.id / "results.jsonl"
    assert rows == [json.loads(line) for line in exported.read_text().splitlines()]

    frame = run.to_pandas()
    assert list(frame["id"]) == [record["id"] for record in records]
    assert list(frame.columns) == list(rows[0])
    overall = run.summary()["statistics"]["overall"]
    assert int(frame["tokens_out"].sum()) == overall["tokens_out"]
    assert overall["results_ok"] == len(frame) == 12
    assert run.summary()["run"]["status"] == "completed"
    assert fleet.Run.latest() == run == fleet.Run(run.id)


def test_bad_dicts_raise_with_index_and_field_and_start_nothing(state_dir: Path) -> None:
    records = numbered(5)
    records[1] = {"id": "i1", "prompt": "   "}
    records[3] = {"id": "i3", "prompt": "x", "meta": {"seen": {1, 2}}}
    with pytest.raises(fleet.InvalidInputFile) as caught:
        fleet.run(records, model="echo", engine="echo")
    errors = caught.value.errors
    found = [(e.index, e.field) for e in errors if isinstance(e, fleet.RecordError)]
    assert found == [(1, "prompt"), (3, "meta.seen")]
    assert len(errors) == 2
    with pytest.raises(fleet.RunNotFound):
        fleet.Run.latest()
    assert not (state_dir / "broker").exists()  # no server was started
    with pytest.raises(fleet.ConfigError, match="unknown option"):
        fleet.run(numbered(2), model="echo", engine="echo", max_tokens=3)


INTERRUPTED_NOTEBOOK = """
import sys
import fleet

records = [{"id": f"i{n}", "prompt": f"item {n}"} for n in range(36)]
try:
    fleet.run(records, engine="echo", model="delay=0.3", slice_size=3, batch_size=1)
except fleet.RunInterrupted as stop:
    print("interrupted", stop.run_id, flush=True)
    sys.exit(130)
"""


def test_an_interrupted_run_is_finished_by_run_resume(tmp_path: Path, state_dir: Path) -> None:
    folder = tmp_path / "notebook"  # the kernel's and its workers' working folder
    folder.mkdir()
    kernel = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_NOTEBOOK],
        env=fleet_env(tmp_path), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=heed_sigint,
    )  # fmt: skip
    db_path = state_dir / "fleet.db"
    deadline = time.monotonic() + 120
    while results_stored(db_path) < 5:
        assert kernel.poll() is None, kernel.communicate()[0]
        assert time.monotonic() < deadline, "no progress before the interrupt"
        time.sleep(0.2)
    kernel.send_signal(signal.SIGINT)  # what a notebook's stop button sends its kernel
    output = kernel.communicate(timeout=120)[0].decode()
    assert kernel.returncode == 130, output
    assert processes_in(folder) == [], "fleet.run left its workers or server behind"
    run_id = output.split("interrupted ", 1)[1].split()[0]

    run = fleet.Run(run_id)
    partial = run.status()
    assert partial.status == "running"
    assert 0 < partial.done < 36, f"interrupt came too late to test anything ({partial.done})"

    assert run.resume(progress=False) is run
    state = run.status()
    assert (state.status, state.ok, state.failed) == ("completed", 36, 0)
    assert [row["id"] for row in run.results()] == [f"i{n}" for n in range(36)]
    assert run.summary()["run"]["finalize_count"] == 1
    with session_scope(make_engine(f"sqlite:///{db_path}")) as session:
        item_ids = [row.item_id for row in session.exec(select(Result))]
    assert len(item_ids) == len(set(item_ids)) == 36


def test_retry_reruns_the_failures_of_the_kinds_asked(state_dir: Path) -> None:
    poisoned = numbered(20, poison=frozenset({3, 11}))
    run = fleet.run(
        poisoned, engine="echo", model="fail_marker=POISON", slice_size=5, progress=False
    )
    failed = [row["id"] for row in run.results() if not row["success"]]
    assert failed == ["i3", "i11"]
    db = make_engine(f"sqlite:///{state_dir / 'fleet.db'}")
    with session_scope(db) as session:
        before = {row.item_id: row.id for row in session.exec(select(Result))}

    run.retry(kinds=["oom"], progress=False)  # none of that kind: nothing runs
    assert run.summary()["run"]["finalize_count"] == 1

    assert run.retry(kinds=["engine"], progress=False) is run
    assert run.summary()["run"]["finalize_count"] == 2
    with session_scope(db) as session:
        after = {row.item_id: row for row in session.exec(select(Result))}
    rerun = {item_id for item_id, row in after.items() if row.id != before[item_id]}
    assert rerun == {item_id for item_id, row in after.items() if not row.ok}
    assert len(rerun) == 2  # the two poisoned items ran again (and failed again)
    assert run.status().status == "completed"
    db.dispose()


def test_enqueue_on_a_fleet_then_wait_and_cancel(
    tmp_path: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    start_workers: WorkerStarter,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    monkeypatch.setenv("FLEET_BROKER_URL", redis_url)
    monkeypatch.setenv("FLEET_DATABASE_URL", database_url)

    idle = fleet.enqueue(numbered(10), engine="echo", model="echo", queue="api-nobody")
    assert idle.status().status == "pending"
    with pytest.raises(fleet.WaitTimeout, match=f"run {idle.id} is still pending"):
        idle.wait(progress=False, timeout_s=1)
    assert idle.cancel().status().status == "cancelled"
    with pytest.raises(fleet.FleetError, match=f"run {idle.id} is cancelled"):
        idle.cancel()

    served = fleet.enqueue(numbered(12), engine="echo", model="echo", queue="api", slice_size=4)
    start_workers(1, broker_url=redis_url, database_url=database_url, queue="api")
    final = served.wait(progress=False)
    assert (final.status, final.ok) == ("completed", 12)
    assert fleet.Run.latest() == served
    assert [row["id"] for row in served.results()] == [f"i{n}" for n in range(12)]
    with pytest.raises(fleet.RunNotFound):
        fleet.Run("no-such-run")
