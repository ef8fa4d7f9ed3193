"""Small things a user meets on the command line: ``\\n`` in ``--template``, a rejected
record's own id, a pipeline stage naming its source run, ``fleet workers list`` during a
``fleet run``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Item
from tests.integration.helpers import fleet, fleet_env, run_fleet


def test_template_escapes_rejected_ids_and_a_stage_naming_its_source(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    records = [
        {"id": "a", "q": "one"},
        {"id": "keep-me", "q": "nul \u0000"},
        {"id": 3, "q": "three"},
    ]
    inputs.write_text("".join(json.dumps(record) + "\n" for record in records))
    env = fleet_env(tmp_path)
    fleet("run", str(inputs), "--engine", "echo", "--model", "echo", "--template",
          "Q: {q}\\nA:\\t", "--skip-invalid", "-o", str(tmp_path / "one"), env=env,
          cwd=tmp_path)  # fmt: skip
    with session_scope(make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")) as session:
        prompts = [item.prompt for item in session.exec(select(Item).order_by(Item.seq))]
    assert prompts == ["Q: one\nA:\t", None, "Q: three\nA:\t"]
    exported = [json.loads(line) for line in (tmp_path / "one" / "results.jsonl").open()]
    assert [record["id"] for record in exported] == ["a", "keep-me", 3]
    assert exported[1]["error_kind"] == "invalid_input"

    source = json.loads((tmp_path / "one" / "summary.json").read_text())["run"]["id"]
    fleet("run", "--from-run", "latest", "--engine", "echo", "--model", "echo", "--template",
          "Judge: {answer}", "-o", str(tmp_path / "two"), env=env, cwd=tmp_path)  # fmt: skip
    stage = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert stage["config"]["from_run"] == source


def test_workers_list_answers_during_a_fleet_run(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    # Work for longer than a loaded machine's `workers list` takes to answer (200 items
    # of 0.1 s on one worker): the run must still be going when it looks.
    inputs.write_text("".join(json.dumps({"id": n, "prompt": f"p {n}"}) + "\n" for n in range(200)))
    env = fleet_env(tmp_path)
    assert "no `fleet run` is going" in run_fleet("workers", "list", env=env, cwd=tmp_path).stderr
    running = subprocess.Popen(
        [sys.executable, "-m", "producer", "run", str(inputs), "--engine", "echo", "--model",
         "delay=0.1", "--slice-size", "2", "--batch-size", "1", "--workers", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        found: dict[str, object] = {}
        while not found and time.monotonic() < deadline and running.poll() is None:
            listed = run_fleet("workers", "list", "--json", env=env, cwd=tmp_path)
            if listed.returncode == 0:
                found = json.loads(listed.stdout)
            time.sleep(0.5)
        assert found, f"no answer while the run was going (its exit status: {running.poll()})"
        assert list(found) == ["local0@" + next(iter(found)).split("@", 1)[1]], found
    finally:
        running.wait(timeout=120)
    assert running.returncode == 0
