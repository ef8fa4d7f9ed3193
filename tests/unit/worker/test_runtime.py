"""``worker.runtime.WorkerRuntime``: what a worker process keeps between tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == "False"
