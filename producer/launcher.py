"""``fleet workers``: one Celery worker per GPU group on this machine, kept alive.

The launcher plans the workers (``plan_workers``: GPU groups from ``producer.gpus``,
or CPU workers with torch threads split when there is no GPU), starts each as the
same ``celery -A worker worker --concurrency=1`` a fleet runs by hand
(``producer.embedded.spawn_worker``), and supervises them: a worker that exits
while we are not stopping is restarted after a capped exponential back-off, and
SIGINT / SIGTERM are forwarded as a warm shutdown (SIGTERM), with SIGKILL after the
grace period. It never imports torch or touches CUDA itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from producer.embedded import STOP_GRACE_S, WorkerSpec, cpu_worker_env, spawn_worker
from producer.gpus import plan_groups

log = logging.getLogger(__name__)

#: First restart delay after a crash, doubled per consecutive crash, capped.
RESTART_BASE_S = 1.0
RESTART_CAP_S = 60.0
#: A worker that ran this long before exiting starts its back-off from scratch.
HEALTHY_AFTER_S = 120.0
#: Seconds between two looks at the children.
POLL_S = 0.5
#: ``fleet run`` gives up on its local workers when each crashed this often in a row.
GIVE_UP_AFTER_CRASHES = 4


def restart_delay(
    crashes: int, *, base_s: float = RESTART_BASE_S, cap_s: float = RESTART_CAP_S
) -> float:
    """Seconds to wait before the ``crashes``-th consecutive restart (1-based)."""
    if crashes < 1:
        return 0.0
    return float(min(cap_s, base_s * 2 ** (crashes - 1)))


@dataclass(frozen=True)
class WorkerPlan:
    """What ``fleet workers`` was asked for, resolved to worker specs."""

    specs: list[WorkerSpec]
    #: ``gpu`` or ``cpu``: how the workers were planned (shown to the operator).
    mode: str


def plan_workers(
    *,
    gpus: list[int],
    queues: list[str],
    env: dict[str, str],
    per_worker: int | None = None,
    workers: int | None = None,
    shared: bool = False,
    tag: str | None = None,
) -> WorkerPlan:
    """One spec per GPU group, or ``workers`` CPU specs (default 1) when ``gpus`` is empty.

    ``tag`` (the model key of pinned workers) joins the node name, ``gpu0.<tag>@host``,
    so launchers pinned to different models can share a machine.
    """
    suffix = f".{tag}@%h" if tag else "@%h"
    if not gpus:
        count = workers or 1
        cpu_env = {**cpu_worker_env(count, env), "CUDA_VISIBLE_DEVICES": ""}
        specs = [WorkerSpec(f"cpu{index}{suffix}", queues, cpu_env) for index in range(count)]
        return WorkerPlan(specs, "cpu")
    groups = plan_groups(gpus, per_worker=per_worker, workers=workers, shared=shared)
    specs = [
        WorkerSpec(
            f"{group.name}{suffix}",
            queues,
            {**env, "CUDA_VISIBLE_DEVICES": group.cuda_visible_devices},
        )
        for group in groups
    ]
    return WorkerPlan(specs, "gpu")


@dataclass
class _Child:
    spec: WorkerSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Runs the planned workers until told to stop; restarts the ones that die."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        *,
        log_dir: Path | None,
        grace_s: float,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [_Child(spec) for spec in specs]
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.say = say
        self.clock = clock
        self.stopping = False

    def start(self) -> None:
        """Start every planned worker."""
        for child in self.children:
            self._start(child)

    def _start(self, child: _Child) -> None:
        child.process = spawn_worker(child.spec, log_dir=self.log_dir)
        child.started_at = self.clock()
        child.restart_at = None
        self.say(f"started {_node(child.spec)} (pid {child.process.pid})")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """First signal: warm shutdown. A second one: kill the workers now."""
        name = signal.Signals(signum).name
        if self.stopping:
            self.say(f"{name} again: killing the workers")
            for child in self.children:
                if child.process is not None:
                    _kill_group(child.process.pid)
            return
        self.say(f"{name}: stopping the workers (warm shutdown; again to kill them)")
        self.stopping = True

    def run(self) -> int:
        """Start everything, supervise until SIGINT/SIGTERM, stop; exit status 0."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.start()
            while not self.stopping:
                self.check()
                time.sleep(POLL_S)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def check(self) -> None:
        """Notice exited workers and (re)start the ones whose back-off is over."""
        now = self.clock()
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                _kill_group(process.pid)  # a pool child may outlive its parent
                ran_s = now - child.started_at
                child.crashes = 1 if ran_s >= HEALTHY_AFTER_S else child.crashes + 1
                delay = restart_delay(child.crashes)
                child.process = None
                child.restart_at = now + delay
                self.say(
                    f"{_node(child.spec)} exited with {process.returncode} after "
                    f"{ran_s:.0f}s; restarting in {delay:.0f}s"
                )
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM (warm shutdown) to every worker, SIGKILL to those left after the grace.

        A KeyboardInterrupt while waiting (``fleet run``'s second Ctrl-C) ends the
        grace: the workers are killed at once, and the interrupt goes on.
        """
        grace_s = self.grace_s if grace_s is None else grace_s
        for child in self.children:
            child.restart_at = None  # a worker that died meanwhile stays down
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        try:
            for process in running:
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"pid {process.pid} still running after {grace_s:.0f}s: killed")
        except KeyboardInterrupt:  # ``fleet run``'s second Ctrl-C: the grace is over
            self.say("interrupted again: killing the workers")
            raise
        finally:
            for process in running:
                _kill_group(process.pid)  # and its pool children, which may outlive it
                process.wait()


class LocalWorkers:
    """``fleet run``'s ``count`` CPU workers on this machine, kept alive while it watches.

    Each is ``celery -A worker worker --concurrency=1`` with the torch threads split
    between them. ``tend()`` (called on every poll of the run) restarts a worker that
    died (``kill -9``, an OOM kill) with the launcher's back-off; ``given_up()`` says
    when every worker keeps dying at once (a broken setting), so the run stops with a
    message instead of restarting for ever.
    """

    def __init__(
        self,
        count: int,
        *,
        env: dict[str, str],
        log_dir: Path,
        queues: list[str],
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        cpu_env = cpu_worker_env(count, env)
        specs = [WorkerSpec(f"local{index}@%h", queues, cpu_env) for index in range(count)]
        self.supervisor = Supervisor(specs, log_dir=log_dir, grace_s=STOP_GRACE_S, say=say)

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The worker processes as they are now (a restarted one is a new process)."""
        return [child.process for child in self.supervisor.children if child.process is not None]

    def __enter__(self) -> LocalWorkers:
        try:
            self.supervisor.start()
        except BaseException:  # Ctrl-C between two spawns: stop the ones started
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def alive(self) -> int:
        return sum(process.poll() is None for process in self.processes)

    def tend(self) -> None:
        """Restart the workers that died, once their back-off is over."""
        self.supervisor.check()

    def given_up(self) -> bool:
        """Every worker crashed ``GIVE_UP_AFTER_CRASHES`` times in a row and none is up."""
        return self.alive() == 0 and all(
            child.crashes >= GIVE_UP_AFTER_CRASHES for child in self.supervisor.children
        )

    @property
    def nodes(self) -> list[str]:
        """The node names of the workers running now, as Celery reports them."""
        return [
            _node(child.spec)
            for child in self.supervisor.children
            if child.process is not None and child.process.poll() is None
        ]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left after ``grace_s``."""
        self.supervisor.stop(grace_s)

    def end_idle(self) -> None:
        """End workers that hold no task at once, instead of a warm shutdown.

        A warm shutdown of an idle worker takes Celery two to three seconds (its
        event loop notices the signal on its next poll, its pool's supervisor thread
        sleeps 0.8 s between looks); a worker that holds no message, active or
        reserved, has nothing to finish and nothing to hand back, so SIGKILL of its
        session loses nothing. The caller must have made sure of that (``fleet run``
        asks the workers, once its run is over); on any doubt, use ``stop``.
        """
        supervisor = self.supervisor
        for child in supervisor.children:
            child.restart_at = None
            if child.process is not None and child.process.poll() is None:
                _kill_group(child.process.pid)
                child.process.wait()


def _node(spec: WorkerSpec) -> str:
    """The node name as Celery will expand it (``cpu0@%h`` -> ``cpu0@host``)."""
    from celery.utils.nodenames import host_format  # not at import: `fleet run` spawns first

    return str(host_format(spec.hostname))


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of a worker's session (its pool children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
