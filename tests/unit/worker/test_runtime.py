"""``worker.runtime.WorkerRuntime``: what a worker process keeps between tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def printed_by(script: str) -> str:
    """What ``script`` prints, run by a fresh interpreter (its own imports and collector)."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout


def test_an_echo_worker_never_imports_torch_even_with_a_thread_limit(tmp_path: Path) -> None:
    """FLEET_TORCH_THREADS applies when an engine first needs torch, not at the first
    slice: importing torch costs an echo or openai worker seconds of a processor."""
    script = (
        "import sys\n"
        "from common.settings import Settings\n"
        "from worker.runtime import WorkerRuntime\n"
        f"settings = Settings(torch_threads=1, database_url='sqlite:///{tmp_path}/fleet.db')\n"
        "runtime = WorkerRuntime.from_settings(settings)\n"
        "runtime.engine_for('echo', 'echo', 'auto')\n"
        "print('torch' in sys.modules)\n"
    )
    shown = printed_by(script)
    assert shown.strip() == "False"


def test_a_worker_on_sqlite_starts_without_the_modules_only_some_runs_need() -> None:
    """The modules a worker's main process imports before it forks its pool process
    (the app and its task modules) are on the path of every ``fleet run``: psycopg
    (only a PostgreSQL database needs it) and jsonschema (only a run with a schema)
    are left to the runs that use them, as are the producer's for ``fleet run``."""
    script = (
        "import sys\n"
        "import worker.app, worker.tasks, worker.upkeep, worker.control, worker.lifeline\n"
        "import producer.enqueue, producer.runner\n"
        "print(sorted(name for name in ('psycopg', 'jsonschema') if name in sys.modules))\n"
    )
    shown = printed_by(script)
    assert shown.strip() == "[]"


def test_a_loaded_model_is_frozen_out_of_full_collections_until_it_is_replaced(
    tmp_path: Path,
) -> None:
    """After a load, what the process holds is frozen (``gc.freeze``): a full collection
    in a process holding a transformers model would walk its objects again and again.
    The next model's load unfreezes them first, so the previous model, even one caught
    in a reference cycle, is collected."""
    script = (
        "import gc, sys, weakref\n"
        "from common.settings import Settings\n"
        "from worker.runtime import WorkerRuntime\n"
        f"settings = Settings(database_url='sqlite:///{tmp_path}/fleet.db')\n"
        "runtime = WorkerRuntime.from_settings(settings)\n"
        "first = runtime.engine_for('echo', 'echo', 'auto')\n"
        "first.itself = first\n"  # a cycle: only the collector frees it
        "gone = weakref.ref(first)\n"
        "del first\n"
        "frozen = gc.get_freeze_count()\n"
        "runtime.engine_for('echo', 'delay=0', 'auto')\n"
        "print(frozen > 0, gone() is None, gc.get_freeze_count() > 0)\n"
    )
    shown = printed_by(script)
    assert shown.split() == ["True", "True", "True"]
