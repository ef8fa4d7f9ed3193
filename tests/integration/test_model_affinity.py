"""Model affinity: two models, two pinned workers, each model loaded once per worker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sqlmodel import select

from common.celery_app import create_app
from common.db import make_engine, session_scope
from common.models import Lane, Result, Run
from common.routing import model_queue
from common.settings import Settings
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import (
    enqueue_and_wait,
    fleet,
    fleet_env,
    run_fleet,
    start_launcher,
    stop_launcher,
    wait_for_workers,
)
from tests.integration.test_launcher import launcher_env, write_inputs

MODELS = ("delay=0.01", "delay=0.02")


def wait_for_models(env: dict[str, str], cwd: Path, count: int) -> dict[str, Any]:
    """``fleet workers list --json`` once ``count`` workers report a loaded model.

    The wait asks the workers in process (the runtime broadcast the command makes), not
    with a new ``fleet`` process every half second; the command answers once at the end.
    """
    app = create_app(Settings(broker_url=env["FLEET_BROKER_URL"]))
    deadline = time.monotonic() + 90
    loaded: list[Any] = []
    while time.monotonic() < deadline:
        replies = app.control.broadcast("fleet_runtime", reply=True, timeout=1.0, limit=count)
        loaded = [body for reply in replies or [] for body in reply.values() if body["model"]]
        if len(loaded) >= count:
            return dict(json.loads(fleet("workers", "list", "--json", env=env, cwd=cwd)))
        time.sleep(0.5)
    raise AssertionError(f"workers did not preload their models: {loaded}")


def test_two_models_on_two_pinned_workers_never_reload(tmp_path: Path, redis_url: str) -> None:
    env = launcher_env(tmp_path, redis_url)
    launchers = [
        start_launcher(
            "--workers",
            "1",
            "-Q",
            "aff",
            "--engine",
            "echo",
            "--model",
            model,
            "--log-dir",
            str(tmp_path / "logs"),
            "--grace",
            "20",
            env=env,
            cwd=tmp_path,
            log=tmp_path / f"launcher{index}.log",
        )
        for index, model in enumerate(MODELS)
    ]
    try:
        app = create_app(Settings(broker_url=env["FLEET_BROKER_URL"]))
        wait_for_workers(app, 2)
        # Preloaded at start: each worker holds its model before any task.
        listed = wait_for_models(env, tmp_path, count=2)
        assert sorted(info["model"] for info in listed.values()) == sorted(MODELS)
        assert all(info["loads"] == 1 for info in listed.values())
        pinned = {info["model"]: name for name, info in listed.items()}
        for model, name in pinned.items():
            assert listed[name]["queues"] == sorted(["aff", model_queue("aff", model)])

        inputs = tmp_path / "in.jsonl"
        write_inputs(inputs, 20)
        run_id = enqueue_and_wait(
            str(inputs),
            "--engine",
            "echo",
            "--model",
            MODELS[0],
            "--model",
            MODELS[1],
            "--slice-size",
            "2",
            "--queue",
            "aff",
            "--model-queues",
            env=env,
            cwd=tmp_path,
        )

        with session_scope(make_engine(env["FLEET_DATABASE_URL"])) as session:
            run = session.get(Run, run_id)
            assert run is not None
            assert run.status == "completed"
            assert run.finalize_count == 1
            lanes = session.exec(select(Lane).where(Lane.run_id == run_id)).all()
            assert {lane.model: lane.queue for lane in lanes} == {
                model: model_queue("aff", model) for model in MODELS
            }
            ran = session.exec(
                select(Result.lane_index, Result.worker, Result.gpu_group).where(
                    Result.run_id == run_id
                )
            ).all()
        assert len(ran) == 40
        by_lane = {lane.index: lane.model for lane in lanes}
        for lane_index, worker, gpu_group in ran:
            assert worker == pinned[by_lane[lane_index]]  # every slice on its model's worker
            assert gpu_group == "cpu"

        after = json.loads(fleet("workers", "list", "--json", env=env, cwd=tmp_path))
        assert {name: info["loads"] for name, info in after.items()} == {
            name: 1 for name in pinned.values()
        }, "a pinned worker loaded a model again"
    finally:
        for process in launchers:
            stop_launcher(process)


def test_preloaded_hf_model_serves_the_run_without_a_reload(
    tmp_path: Path, redis_url: str, demo_model: Path, start_workers: WorkerStarter
) -> None:
    """FLEET_PRELOAD_MODEL (given relative) loads the demo model at start; the run reuses it."""
    database = f"sqlite:///{tmp_path / 'fleet.db'}"
    relative = os.path.relpath(demo_model, Path.cwd())
    start_workers(
        1,
        broker_url=redis_url,
        database_url=database,
        queue="preload",
        extra_env={"FLEET_PRELOAD_MODEL": relative},
    )
    env = fleet_env(tmp_path, broker_url=redis_url, database_url=database)
    listed = wait_for_models(env, tmp_path, count=1)
    ((name, info),) = listed.items()
    assert (info["engine"], info["model"], info["loads"]) == ("hf", str(demo_model), 1)

    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 6)
    run_id = enqueue_and_wait(
        str(inputs),
        "--model",
        str(demo_model),
        "--max-new-tokens",
        "4",
        "--slice-size",
        "2",
        "--queue",
        "preload",
        env=env,
        cwd=tmp_path,
    )
    after = json.loads(fleet("workers", "list", "--json", env=env, cwd=tmp_path))
    assert after[name]["loads"] == 1, "the preloaded model was loaded again"
    with session_scope(make_engine(database)) as session:
        assert session.exec(select(Result).where(Result.run_id == run_id, Result.ok)).all()


def test_workers_list_table_and_no_worker(
    tmp_path: Path, redis_url: str, start_workers: WorkerStarter
) -> None:
    env = fleet_env(tmp_path, broker_url=redis_url)
    done = run_fleet("workers", "list", "--timeout", "1", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "no worker answered" in done.stderr
    start_workers(1, broker_url=redis_url, database_url=f"sqlite:///{tmp_path / 'f.db'}")
    table = fleet("workers", "list", env=env, cwd=tmp_path)
    assert "local0@" in table
    assert "cpu" in table
