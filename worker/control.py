"""The ``fleet_runtime`` remote-control command: what a worker has loaded, and where.

``celery -A worker inspect fleet_runtime`` (and ``fleet workers list``) ask every
worker; each main process answers from the board its pool child writes
(``worker.board``): GPU group, engine, model, dtype, how many loads, pid.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_init
from celery.worker.control import inspect_command

from worker import board


@inspect_command()
def fleet_runtime(state: Any) -> dict[str, Any]:
    """This worker's GPU group and the model its pool child holds (``loads``: 0 if none)."""
    return {
        "gpu_group": os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu",
        "loads": 0,
        "model": None,
        **board.read(),
    }


@worker_init.connect
def _open_board(**_: Any) -> None:
    """The worker is starting, its pool not forked yet: open the page the children write."""
    board.open_board()
