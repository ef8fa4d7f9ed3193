"""The worker's upkeep thread and the pool's fork take turns (``worker.upkeep.ForkGuard``)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from worker import upkeep

upkeep.register_fork_hooks()  # a worker registers them as it starts


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_waits_until_the_upkeep_tick_has_left_the_database() -> None:
    inside = threading.Event()
    left: list[bool] = []

    def tick() -> None:
        with upkeep._fork_guard:
            inside.set()
            time.sleep(0.3)  # a slow heartbeat, mid-transaction
            left.append(True)

    thread = threading.Thread(target=tick)
    thread.start()
    inside.wait()
    pid = os.fork()  # the registered hook waits for the tick to finish
    if pid == 0:
        os._exit(0)
    finished_before_fork = bool(left)
    os.waitpid(pid, 0)
    thread.join()
    assert finished_before_fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_guard_is_free_again_in_parent_and_child() -> None:
    pid = os.fork()
    if pid == 0:
        # In the child the guard must be usable at once, or its first tick would hang.
        os._exit(0 if upkeep._fork_guard._lock.acquire(timeout=1) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert upkeep._fork_guard._lock.acquire(timeout=1)
    upkeep._fork_guard._lock.release()
