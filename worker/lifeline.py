"""A worker started by a launcher stops when the launcher is gone.

``fleet run``, ``fleet resume``, ``fleet retry`` and ``fleet workers`` start their
workers with ``FLEET_LAUNCHER_PID`` set to their own pid (and a kernel death signal,
``producer.lifeline``). A thread of the worker's main process watches its parent: once
the launcher is gone (the worker was handed to another parent, ``kill -9`` of the
launcher), it starts a warm shutdown, and kills the worker's process group after
``ORPHAN_GRACE_S`` if that has not ended it: a slice cut short is handed out again
from SQL, while a worker left running would hold the CPU, the GPU and the state
directory for good. A worker typed by hand (no ``FLEET_LAUNCHER_PID``) is not watched.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from celery.signals import worker_ready

from common.settings import process_settings

log = logging.getLogger(__name__)

#: Seconds between two looks at the parent.
POLL_S = 0.5
#: Seconds of warm shutdown (the batch in flight may be stored) before the kill.
ORPHAN_GRACE_S = 5.0


def launcher_gone(launcher_pid: int) -> bool:
    """Our parent is no longer the launcher that started us."""
    return os.getppid() != launcher_pid


def _watch(launcher_pid: int) -> None:
    while not launcher_gone(launcher_pid):
        time.sleep(POLL_S)
    log.warning(
        "launcher (pid %d) is gone: warm shutdown, killed after %.0fs",
        launcher_pid,
        ORPHAN_GRACE_S,
    )
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    if os.getpgrp() == os.getpid():  # our own session (the launcher made it): pool children too
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


@worker_ready.connect
def _watch_launcher(**_: Any) -> None:
    launcher_pid = process_settings().launcher_pid
    if launcher_pid is None:
        return
    threading.Thread(
        target=_watch, args=(launcher_pid,), name="fleet-lifeline", daemon=True
    ).start()
