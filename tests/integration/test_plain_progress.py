"""Progress without a terminal: ``fleet run`` piped into a log prints plain lines as it
goes (done/total, rate, ETA), not a bar drawn only at the end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.helpers import fleet_env

LINE = re.compile(r"^\S+ (\d+)/(\d+)(?: \(\d+%\))? (\w+) ok \d+ failed \d+ [\d.]+/s")


def test_piped_fleet_run_prints_progress_lines_while_it_runs(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": n, "prompt": f"p {n}"}) + "\n" for n in range(24)))
    running = subprocess.Popen(
        [sys.executable, "-m", "producer", "run", str(inputs), "--engine", "echo", "--model",
         "delay=0.25", "--slice-size", "2", "--batch-size", "1"],
        env=fleet_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert running.stdout is not None
    seen_while_running = []
    for line in running.stdout:
        match = LINE.match(line)
        if match:
            seen_while_running.append((match.group(3), running.poll()))
            break
    rest = running.stdout.read()
    assert running.wait(timeout=120) == 0, rest
    # printed before the run ended, as it went
    assert seen_while_running in ([("pending", None)], [("running", None)])
    finals = [LINE.match(line) for line in rest.splitlines() if LINE.match(line)]
    assert finals[-1] is not None
    assert finals[-1].group(1, 2, 3) == ("24", "24", "completed")
