"""Children die with their launcher: ``kill -9`` of ``fleet run`` leaves nothing behind.

A process we spawn (the embedded valkey-server, a ``celery -A worker worker``) asks
the kernel for a signal when its parent dies (Linux ``PR_SET_PDEATHSIG``), set between
fork and exec by ``die_with_parent``. The worker also watches its launcher itself
(``worker.lifeline``, told the launcher's pid by ``FLEET_LAUNCHER_PID``) to turn that
warm shutdown into a kill after a few seconds; its pool children already die with it
(Celery sets their death signal to SIGKILL).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

#: ``prctl`` option that sets the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child ``signum`` when we die; None off Linux.

    The signal comes when the thread that spawned the child exits, so spawn from
    the main thread (every caller here does). If we died between the fork and the
    ``prctl``, the child sees another parent and signals itself at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec
