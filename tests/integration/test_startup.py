"""``fleet run``'s start-up and end: workers that preload, no more than the slices, quick end.

The local workers start before the input is validated, with the run's model to
preload; a run gets no more of them than it has slices; once the run is over,
workers that hold no task are ended at once, and a worker still holding one is left
to the warm shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from common.constants import DEFAULT_QUEUE
from common.publish import publish_run
from common.runconfig import RunConfig
from common.settings import Settings
from producer.cli.workers import fleet_workers
from producer.enqueue import create_run
from producer.runner import LocalFleet, preload_env
from producer.status import watch
from tests.integration.helpers import fleet, fleet_env

#: An echo "model" whose one batch takes a while: a slice that is surely in flight.
SLOW = "delay=4"


@pytest.fixture
def local_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """``fleet run``'s fleet on the embedded default: one worker preloading ``SLOW``."""
    settings = Settings(state_dir=tmp_path / ".fleet", torch_threads=1)
    config = RunConfig(engine="echo", models=[SLOW])
    with LocalFleet(
        settings,
        workers=1,
        spawn_workers=True,
        queue=DEFAULT_QUEUE,
        console=Console(quiet=True),
        preload=preload_env(config),
    ) as started:
        yield started


def runtimes(fleet_: LocalFleet, timeout_s: float = 90.0) -> dict[str, dict[str, object]]:
    """The local workers' runtimes, once each has loaded a model."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        found = fleet_workers(fleet_.app, timeout=1.0)
        if found and all(runtime.get("loads") for runtime in found.values()):
            return found
        time.sleep(0.2)
    raise AssertionError(f"the local worker loaded no model in {timeout_s}s: {found}")


def test_local_workers_preload_the_runs_model_before_any_work(local_fleet: LocalFleet) -> None:
    """No run exists yet, and the worker holds the model its first slice will ask for."""
    (runtime,) = runtimes(local_fleet).values()
    assert runtime["model"] == SLOW
    assert runtime["engine"] == "echo"
    assert runtime["loads"] == 1


def test_a_busy_worker_is_left_to_finish_and_an_idle_one_ends_at_once(
    local_fleet: LocalFleet, tmp_path: Path
) -> None:
    runtimes(local_fleet)
    inputs = tmp_path / "one.jsonl"
    inputs.write_text('{"id": "one", "prompt": "hello"}\n')
    config = RunConfig(engine="echo", models=[SLOW])
    enqueued = create_run(local_fleet.db, input_path=inputs, config=config, queue=DEFAULT_QUEUE)
    publish_run(local_fleet.db, local_fleet.app, run_id=enqueued.run_id)
    assert local_fleet.local is not None
    deadline = time.monotonic() + 30
    while not any(info["active"] for info in fleet_workers(local_fleet.app, timeout=1).values()):
        assert time.monotonic() < deadline, "the slice never became active"

    local_fleet.end_idle_workers()  # the slice is in flight: nothing ends
    assert local_fleet.local.alive() == 1

    final = watch(local_fleet.db, enqueued.run_id, console=Console(quiet=True))
    assert final.status == "completed"
    local_fleet.end_idle_workers()
    assert local_fleet.local.alive() == 0


def test_a_one_item_run_starts_one_worker_whatever_it_was_given(tmp_path: Path) -> None:
    inputs = tmp_path / "one.jsonl"
    inputs.write_text('{"id": "one", "prompt": "hello"}\n')
    out = fleet(
        "run",
        str(inputs),
        "--engine",
        "echo",
        "--model",
        "echo",
        "--workers",
        "3",
        env=fleet_env(tmp_path, torch_threads="1"),
        cwd=tmp_path,
    )
    assert "1 local worker(s)" in out
    assert [log.name for log in (tmp_path / ".fleet" / "logs").iterdir()] == ["local0.log"]
    assert "results_ok=1" in out
