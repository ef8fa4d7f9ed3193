"""``python -m bench.gpu --device cpu --tiny``: the GPU bench's code runs, so it cannot rot.

A GPU machine is lent only now and then; the script it runs there must work when one is.
This runs every part of it on a toy model on the CPU (a real fleet worker included) and
checks that the JSON holds every part's figures. The figures' values are the bench's to
report, never this test's to assert.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]

#: Every part's figures, by name; a part that failed has ``error`` instead.
THROUGHPUT = {"items", "items_done", "skipped_items", "capped", "seconds", "items_per_s"}
EXPECTED = {
    "engine": THROUGHPUT | {"tokens_per_s", "batches", "gpu_peak_allocated_bytes"},
    "plain": THROUGHPUT | {"tokens_per_s", "same_as_engine", "gpu_peak_allocated_bytes"},
    "continuous": THROUGHPUT | {"tokens_per_s", "same_as_engine", "setup_s", "failed"},
    "fleet": THROUGHPUT | {"tokens_per_s", "fleet_vs_engine", "gpu_worker_peak_bytes", "status"},
    "oom": {
        "source",
        "out_of_memory_batches_tokens",
        "all_answered",
        "budget_limit_tokens",
        "next_batch_rows",
    },
    "dtypes": {"compared", "identical", "identical_share"},
}


def test_gpu_bench_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(output.read_text())

    assert {"environment", "config", "model", "prompts", "parts", "ratios", "total_s"} <= set(
        report
    )
    for name, keys in EXPECTED.items():
        part = report["parts"][name]
        assert "error" not in part, f"{name}: {part.get('error')}\n{part.get('traceback')}"
        assert keys <= set(part), f"{name} lacks {sorted(keys - set(part))}"
    for name in ("engine", "plain", "continuous", "fleet"):
        part = report["parts"][name]
        assert part["items_done"] == part["items"], f"{name} left items out on a toy run"
    oom = report["parts"]["oom"]
    assert oom["out_of_memory_batches_tokens"], "the batch was never refused: nothing backed off"
    assert oom["all_answered"]
    assert set(report["ratios"]) == {
        "fleet_vs_engine",
        "engine_vs_plain",
        "engine_vs_continuous",
        "continuous_vs_plain",
    }
    assert all(value is not None for value in report["ratios"].values())
