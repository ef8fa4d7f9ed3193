"""Helpers shared by the integration tests: worker readiness, subprocess environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery


def wait_for_workers(app: Celery, count: int, timeout_s: float = 90.0) -> list[str]:
    """Block until ``count`` workers answer a ping; their names.

    A ping waits out its whole timeout unless ``limit`` replies came: it asks for
    ``count``, so the wait ends as the last of them answers.
    """
    deadline = time.monotonic() + timeout_s
    names: list[str] = []
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0, limit=count) or []
        names = sorted(name for reply in replies for name in reply)
        if len(names) >= count:
            return names
    raise AssertionError(f"only {names} of {count} workers came up in {timeout_s}s")


def fleet_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Environment for a ``fleet`` subprocess: ours, minus FLEET_*, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLEET_")}
    env["FLEET_STATE_DIR"] = str(tmp_path / ".fleet")
    env.update({f"FLEET_{name.upper()}": value for name, value in settings.items()})
    return env


def run_fleet(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``fleet`` command line in a subprocess, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fleet(*args: str, env: dict[str, str], cwd: Path, timeout: float = 400) -> str:
    """Run the ``fleet`` command line in a subprocess; its stdout, or a failed assertion."""
    done = run_fleet(*args, env=env, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, f"fleet {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def enqueue_and_wait(*args: str, env: dict[str, str], cwd: Path) -> str:
    """``fleet enqueue ARGS``, then ``fleet status RUN --watch`` until it ends; the run id."""
    run_id = fleet("enqueue", *args, env=env, cwd=cwd).strip()
    fleet("status", run_id, "--watch", env=env, cwd=cwd)
    return run_id


def start_launcher(
    *args: str, env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """``fleet workers ARGS`` in a subprocess, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "producer", "workers", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_launcher(process: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    """SIGTERM (the launcher stops its workers), SIGKILL if it does not exit; its status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
