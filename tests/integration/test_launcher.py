"""``fleet workers`` as typed: two CPU workers that both take work, one restarted after -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from common.celery_app import create_app
from common.db import make_engine, session_scope
from common.models import Result, Slice
from common.settings import Settings
from producer.launcher import GIVE_UP_AFTER_CRASHES, LocalWorkers
from tests.integration.helpers import (
    enqueue_and_wait,
    fleet,
    fleet_env,
    run_fleet,
    start_launcher,
    stop_launcher,
    wait_for_workers,
)
from tests.unit.producer.test_gpus import fake_nvidia_smi


def write_inputs(path: Path, count: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"id": f"q{index}", "prompt": f"p{index}"}) + "\n" for index in range(count)
        )
    )


def worker_pids(app: object, timeout_s: float = 60.0, count: int = 2) -> dict[str, int]:
    """Node name -> pid of the worker main processes, once ``count`` answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = app.control.inspect(timeout=1.0).stats() or {}  # type: ignore[attr-defined]
        if len(stats) >= count:
            return {name: body["pid"] for name, body in stats.items()}
    raise AssertionError(f"fewer than {count} workers answered")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def launcher_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = fleet_env(
        tmp_path, broker_url=redis_url, database_url=f"sqlite:///{tmp_path / 'fleet.db'}"
    )
    env["FLEET_TORCH_THREADS"] = "1"
    # No nvidia-smi on this PATH: the launcher must fall back to CPU workers by itself.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"
    return env


@pytest.fixture
def launcher(
    tmp_path: Path, redis_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    env = launcher_env(tmp_path, redis_url)
    process = start_launcher(
        "--workers",
        "2",
        "-Q",
        "launch",
        "--log-dir",
        str(tmp_path / "logs"),
        "--grace",
        "20",
        env=env,
        cwd=tmp_path,
        log=tmp_path / "launcher.log",
    )
    yield process, env
    stop_launcher(process)  # a test that failed half-way still stops its workers


def run_job(tmp_path: Path, env: dict[str, str], name: str) -> set[str]:
    """Enqueue 40 echo items in 20 slices on the launcher's queue, wait; the workers that ran."""
    inputs = tmp_path / f"{name}.jsonl"
    write_inputs(inputs, 40)
    run_id = enqueue_and_wait(
        str(inputs),
        "--engine",
        "echo",
        "--model",
        "delay=0.05",
        "--slice-size",
        "2",
        "--queue",
        "launch",
        env=env,
        cwd=tmp_path,
    )
    with session_scope(make_engine(env["FLEET_DATABASE_URL"])) as session:
        workers = session.exec(
            select(Result.worker).where(Result.run_id == run_id, col(Result.ok))
        ).all()
    assert len(workers) == 40
    return {worker for worker in workers if worker}


def test_launcher_runs_two_cpu_workers_and_restarts_a_killed_one(
    tmp_path: Path, launcher: tuple[subprocess.Popen[bytes], dict[str, str]]
) -> None:
    process, env = launcher
    app = create_app(Settings(broker_url=env["FLEET_BROKER_URL"]))
    names = wait_for_workers(app, 2)
    assert [name.split("@")[0] for name in names] == ["cpu0", "cpu1"]

    assert run_job(tmp_path, env, "first") == set(names)

    before = worker_pids(app)
    victim = sorted(before)[1]
    os.kill(before[victim], signal.SIGKILL)
    deadline = time.monotonic() + 90
    after = before
    while time.monotonic() < deadline:
        after = worker_pids(app)
        if after.get(victim, before[victim]) != before[victim]:
            break
        time.sleep(0.5)
    assert after[victim] != before[victim], "the killed worker was not restarted"
    assert after[names[0]] == before[names[0]], "the other worker must be left alone"
    log = (tmp_path / "launcher.log").read_text()
    assert f"{victim} exited with -9" in log

    assert run_job(tmp_path, env, "second") == set(names)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in after.values())


def test_launcher_pins_gpu_groups_found_by_nvidia_smi(tmp_path: Path, redis_url: str) -> None:
    """A fake nvidia-smi lists 4 GPUs: two workers of two GPUs each, named and pinned so.

    The workers never touch CUDA until a model asks for it, so on this CPU machine they
    start and report their pinning through ``fleet workers list``.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_nvidia_smi(bin_dir, 4)
    env = launcher_env(tmp_path, redis_url)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    process = start_launcher(
        "--gpus-per-worker",
        "2",
        "-Q",
        "gpuq",
        "--grace",
        "20",
        "--log-dir",
        str(tmp_path / "logs"),
        env=env,
        cwd=tmp_path,
        log=tmp_path / "launcher.log",
    )
    try:
        app = create_app(Settings(broker_url=env["FLEET_BROKER_URL"]))
        names = wait_for_workers(app, 2)
        assert [name.split("@")[0] for name in names] == ["gpu0-1", "gpu2-3"]
        listed = json.loads(fleet("workers", "list", "--json", env=env, cwd=tmp_path))
        assert {name.split("@")[0]: info["gpu_group"] for name, info in listed.items()} == {
            "gpu0-1": "0,1",
            "gpu2-3": "2,3",
        }
        assert all(info["queues"] == ["gpuq"] for info in listed.values())
    finally:
        assert stop_launcher(process) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus-per-worker", "3"], "4 GPU(s) do not split into groups of 3"),
        (["--gpus", "0,9"], "GPU(s) [9] not found"),
        (["--workers", "8"], "pass --shared"),
        (["--cpu", "--gpus", "0"], "--cpu cannot be combined"),
    ],
)
def test_launcher_refuses_bad_gpu_requests(
    tmp_path: Path, redis_url: str, args: list[str], message: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_nvidia_smi(bin_dir, 4)
    env = launcher_env(tmp_path, redis_url)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    done = run_fleet("workers", *args, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())


def wait_for_slice(database_url: str, status: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(make_engine(database_url)) as session:
            if session.exec(select(Slice).where(Slice.status == status)).first():
                return
        time.sleep(0.2)
    raise AssertionError(f"no slice became {status}")


def test_ctrl_c_lets_the_batch_finish_and_twice_kills(tmp_path: Path, redis_url: str) -> None:
    """SIGINT once: warm shutdown, the slice in hand is finished and stored. Twice: killed."""
    env = launcher_env(tmp_path, redis_url)
    args = ["--workers", "1", "-Q", "ctrlc", "--grace", "120", "--log-dir", str(tmp_path / "logs")]
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 1)
    app = create_app(Settings(broker_url=env["FLEET_BROKER_URL"]))
    database = env["FLEET_DATABASE_URL"]

    process = start_launcher(*args, env=env, cwd=tmp_path, log=tmp_path / "first.log")
    try:
        wait_for_workers(app, 1)
        enqueue = ["enqueue", str(inputs), "--engine", "echo", "--queue", "ctrlc"]
        first = fleet(*enqueue, "--model", "delay=3", env=env, cwd=tmp_path).strip()
        wait_for_slice(database, "running")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=100) == 0
    finally:
        stop_launcher(process)
    with session_scope(make_engine(database)) as session:
        assert session.exec(select(Result).where(Result.run_id == first)).one().ok

    process = start_launcher(*args, env=env, cwd=tmp_path, log=tmp_path / "second.log")
    try:
        wait_for_workers(app, 1)
        pids = worker_pids(app, count=1)
        second = fleet(*enqueue, "--model", "delay=600", env=env, cwd=tmp_path).strip()
        wait_for_slice(database, "running")
        process.send_signal(signal.SIGINT)
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0  # long before the 600 s batch or 120 s grace
    finally:
        stop_launcher(process)
    assert not any(alive(pid) for pid in pids.values())
    assert "again: killing the workers" in (tmp_path / "second.log").read_text()
    with session_scope(make_engine(database)) as session:
        assert not session.exec(select(Result).where(Result.run_id == second)).all()


def test_local_workers_that_keep_dying_are_given_up_on(tmp_path: Path) -> None:
    """A setting that kills every worker at start: restarted with back-off, then given up."""
    said: list[str] = []
    # No broker URL: `celery -A worker worker` exits at once with a configuration error.
    env = {"FLEET_BROKER_URL": "", "FLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}"}
    with LocalWorkers(1, env=env, log_dir=tmp_path / "logs", queues=["q"], say=said.append) as pool:
        deadline = time.monotonic() + 120
        while not pool.given_up():
            assert time.monotonic() < deadline, said
            pool.tend()
            time.sleep(0.2)
    restarts = [line for line in said if "restarting" in line]
    assert len(restarts) == GIVE_UP_AFTER_CRASHES
    assert "FLEET_BROKER_URL" in (tmp_path / "logs" / "local0.log").read_text()
