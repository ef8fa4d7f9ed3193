"""Faults at the edges of ``fleet run``: its children die with it, its server is tended.

``kill -9`` of ``fleet run`` (or ``fleet workers``) leaves no valkey-server, worker or
pool process behind, and ``fleet resume`` then completes the run with every item once;
``kill -9`` of the embedded server mid-run is noticed, the server started again on its
append-only file, and the run completes. A full disk under the state directory is
named in ``fleet run``'s own output, with the path and the command to continue.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result, Run
from tests.integration.helpers import fleet, fleet_env, start_launcher, stop_launcher
from tests.integration.processes import command_line, descendants, valkey_servers, wait_gone

ITEMS = 40
#: Seconds the children of a killed launcher get to be gone (the worker's grace is 5).
GONE_WITHIN_S = 15.0


def write_inputs(path: Path, count: int = ITEMS) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"i{n}", "prompt": f"item {n}"}) + "\n" for n in range(count))
    )
    return path


def results_stored(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    with session_scope(make_engine(f"sqlite:///{db_path}")) as session:
        return session.execute(select(func.count()).select_from(Result)).scalar_one()


def start_run(inputs: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    env = {**env, "COLUMNS": "400"}  # one message, one line
    return subprocess.Popen(
        [sys.executable, "-m", "producer", "run", str(inputs), "--engine", "echo",
         "--model", "delay=0.2", "--slice-size", "4", "--batch-size", "1", "--workers", "2"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_results(run: subprocess.Popen[str], db_path: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while results_stored(db_path) < count:
        assert run.poll() is None, run.communicate()[0]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.2)


def assert_every_item_once(db_path: Path, count: int = ITEMS) -> None:
    with session_scope(make_engine(f"sqlite:///{db_path}")) as session:
        run = session.exec(select(Run)).one()
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Result.item_id)))
        ).one()
    assert (run.status, run.finalize_count) == ("completed", 1)
    assert rows == distinct == count


def test_kill_9_of_fleet_run_leaves_no_process_and_resume_completes(tmp_path: Path) -> None:
    env = fleet_env(tmp_path)
    db_path = tmp_path / ".fleet" / "fleet.db"
    run = start_run(write_inputs(tmp_path / "in.jsonl"), env, tmp_path)
    wait_for_results(run, db_path, 4)
    children = descendants(run.pid)
    names = [command_line(pid) for pid in children]
    assert sum("celery" in name and "worker" in name for name in names) >= 4, names  # 2 + pools
    assert valkey_servers(tmp_path / ".fleet")[0] in children

    run.kill()
    run.wait()
    left = wait_gone(children, GONE_WITHIN_S)
    assert not left, f"left behind: {[command_line(pid) for pid in left]}"
    assert 0 < results_stored(db_path) < ITEMS, "the kill came too late to test anything"

    fleet("resume", "latest", "--workers", "2", env=env, cwd=tmp_path)
    assert_every_item_once(db_path)


def test_kill_9_of_fleet_workers_takes_its_workers_along(tmp_path: Path, redis_url: str) -> None:
    env = fleet_env(tmp_path, broker_url=redis_url, database_url=f"sqlite:///{tmp_path / 'f.db'}")
    launcher = start_launcher("--workers", "2", "-Q", f"orphans-{tmp_path.name}",
                              env=env, cwd=tmp_path, log=tmp_path / "launcher.log")  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while len(descendants(launcher.pid)) < 4:  # two workers and their pool processes
            assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "launcher.log").read_text()
            time.sleep(0.5)
        children = descendants(launcher.pid)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        left = wait_gone(children, GONE_WITHIN_S)
        assert not left, f"left behind: {[command_line(pid) for pid in left]}"
    finally:
        stop_launcher(launcher)


def test_embedded_server_killed_mid_run_is_started_again(tmp_path: Path) -> None:
    env = fleet_env(tmp_path)
    db_path = tmp_path / ".fleet" / "fleet.db"
    run = start_run(write_inputs(tmp_path / "in.jsonl"), env, tmp_path)
    wait_for_results(run, db_path, 4)
    (server,) = valkey_servers(tmp_path / ".fleet")
    os.kill(server, signal.SIGKILL)
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 0, output
    assert "the embedded valkey-server exited with -9; starting it again" in output
    assert_every_item_once(db_path)
    assert not valkey_servers(tmp_path / ".fleet")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, or a skip saying why none can be mounted here."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write ``disk/filler`` until the file system says it is full."""
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as out:
        written = 1
        while written:
            try:
                written = out.write(b"\0" * 1024**2) or 0
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                written = 0
    return filler


def test_full_disk_at_start_is_named(tmp_path: Path, small_disk: Path) -> None:
    state = small_disk / ".fleet"
    env = {**fleet_env(tmp_path), "FLEET_STATE_DIR": str(state), "COLUMNS": "400"}
    fill(small_disk)
    done = subprocess.run(
        [sys.executable, "-m", "producer", "run", str(write_inputs(tmp_path / "in.jsonl", 4)),
         "--engine", "echo", "--model", "echo"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"no space left on device: {state} (" in output
    assert "Traceback" not in output


def test_disk_filling_mid_run_stops_it_by_name_and_resume_finishes(
    tmp_path: Path, small_disk: Path
) -> None:
    state = small_disk / ".fleet"
    env = {**fleet_env(tmp_path), "FLEET_STATE_DIR": str(state)}
    run = start_run(write_inputs(tmp_path / "in.jsonl"), env, tmp_path)
    wait_for_results(run, state / "fleet.db", 4)
    filler = fill(small_disk)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 2, output
    assert "warning: only" in output  # 48 MiB is low: said at the start
    assert f"no space left on device: {state} (" in output
    assert "fleet resume " in output
    assert "Traceback" not in output
    assert not valkey_servers(state)

    filler.unlink()
    fleet("resume", "latest", "--workers", "2", env=env, cwd=tmp_path)
    assert_every_item_once(state / "fleet.db")
