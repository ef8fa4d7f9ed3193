"""Ctrl-C (or SIGTERM) during ``fleet run`` stops everything it started and leaves the
run resumable; ``fleet resume`` finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result, Run
from tests.integration.helpers import fleet, fleet_env

ITEMS = 36


def heed_sigint() -> None:
    """In the child: SIGINT back to its default, so Python turns it into Ctrl-C.

    A suite started in the background by a shell (``make test &``) inherits SIGINT
    ignored, and Python keeps an ignored SIGINT ignored: the run would never see it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def results_stored(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    with session_scope(make_engine(f"sqlite:///{db_path}")) as session:
        return session.execute(select(func.count()).select_from(Result)).scalar_one()


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working directory is ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone, or not ours to read
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupted_embedded_run_resumes_without_loss_or_duplicates(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(json.dumps({"id": f"i{n}", "prompt": f"item {n}"}) + "\n" for n in range(ITEMS))
    )
    env = fleet_env(tmp_path)
    db_path = tmp_path / ".fleet" / "fleet.db"
    running = subprocess.Popen(
        [sys.executable, "-m", "producer", "run", str(inputs), "--engine", "echo",
         "--model", "delay=0.3", "--slice-size", "3", "--batch-size", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=heed_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while results_stored(db_path) < 5:
        assert running.poll() is None, running.communicate()[0]
        assert time.monotonic() < deadline, "no progress before the interrupt"
        time.sleep(0.2)
    running.send_signal(stop_signal)
    output, _ = running.communicate(timeout=120)
    assert running.returncode != 0, output
    assert processes_in(tmp_path) == [], "fleet run left its workers or server behind"

    partial = results_stored(db_path)
    assert 0 < partial < ITEMS, f"interrupt came too late to test anything ({partial})"
    text = output.decode()
    assert running.returncode == 130, text
    run_id = text.split("run ", 1)[1].split(":", 1)[0]
    assert f"interrupted: run {run_id} has " in " ".join(text.split())
    assert f"fleet resume {run_id}" in " ".join(text.split())
    if stop_signal is signal.SIGTERM:
        return  # the stop is what differs; the resume that follows is the same as after Ctrl-C

    fleet("resume", "latest", "--output", str(tmp_path / "out"), env=env, cwd=tmp_path)
    records = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert [record["id"] for record in records] == [f"i{n}" for n in range(ITEMS)]
    assert all(record["success"] for record in records)
    with session_scope(make_engine(f"sqlite:///{db_path}")) as session:
        run = session.exec(select(Run)).one()
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Result.item_id)))
        ).one()
    assert (run.status, run.finalize_count) == ("completed", 1)
    assert rows == distinct == ITEMS
