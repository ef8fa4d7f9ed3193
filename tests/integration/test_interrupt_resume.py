"""Ctrl-C (or SIGTERM) during ``fleet run`` stops everything it started and leaves the
run resumable; ``fleet resume`` finishes it.

The interrupt comes at several moments of a run, each one waited for as something the
run shows (a line it prints, results in SQL, a worker answering ``fleet workers list``),
never after a time: while its worker starts, mid-run, and, with SIGINT handed down
ignored, once ``fleet workers list`` answers (a suite run in the background saw that
run go on to its end and exit 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result, Run
from tests.integration.helpers import fleet, fleet_env, run_fleet

ITEMS = 36


def heed_sigint() -> None:
    """In the child: SIGINT back to its default, so Python turns it into Ctrl-C.

    A suite started in the background by a shell (``make test &``) inherits SIGINT
    ignored, and Python keeps an ignored SIGINT ignored: the run would never see it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ignore_sigint() -> None:
    """In the child: SIGINT ignored, as a shell hands it to a command run with ``&``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def start_run(
    tmp_path: Path, *, items: int, model: str, slice_size: int, preexec_fn: Callable[[], None]
) -> subprocess.Popen[bytes]:
    """``fleet run`` of ``items`` echo records in ``tmp_path``, its output in ``out.log``."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(json.dumps({"id": f"i{n}", "prompt": f"item {n}"}) + "\n" for n in range(items))
    )
    with (tmp_path / "out.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "producer", "run", str(inputs), "--engine", "echo",
             "--model", model, "--slice-size", str(slice_size), "--batch-size", "1"],
            env=fleet_env(tmp_path), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )  # fmt: skip


def output_of(tmp_path: Path) -> str:
    """What ``fleet run`` printed so far, its lines joined."""
    return " ".join((tmp_path / "out.log").read_text(errors="replace").split())


def wait_until(running: subprocess.Popen[bytes], seen: Callable[[], bool], what: str) -> None:
    """Poll ``seen`` while the run goes on; fail if the run ends first."""
    deadline = time.monotonic() + 120
    while not seen():
        assert running.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in 120 s"
        time.sleep(0.05)


def worker_spawned(tmp_path: Path) -> bool:
    return "started local0@" in output_of(tmp_path)


def some_results(tmp_path: Path) -> bool:
    return results_stored(tmp_path / ".fleet" / "fleet.db") >= 5


def worker_listed(tmp_path: Path) -> bool:
    listed = run_fleet(
        "workers", "list", "--json", "--timeout", "0.5", env=fleet_env(tmp_path), cwd=tmp_path
    )
    return listed.returncode == 0 and any(
        name.startswith("local0@") for name in json.loads(listed.stdout)
    )


def stopped(tmp_path: Path, running: subprocess.Popen[bytes]) -> None:
    """``fleet run`` exited 130 saying how to resume, and left no process behind."""
    running.wait(timeout=120)
    text = output_of(tmp_path)
    assert running.returncode == 130, text
    assert processes_in(tmp_path) == [], "fleet run left its workers or server behind"
    assert "interrupted: run " in text, text
    run_id = text.split("interrupted: run ", 1)[1].split()[0]
    assert f"To finish it: fleet resume {run_id}" in text


def resumed_once_each(tmp_path: Path, items: int) -> None:
    """``fleet resume latest`` completes the run: every item once, finalized once."""
    env = fleet_env(tmp_path)
    fleet("resume", "latest", "--output", str(tmp_path / "out"), env=env, cwd=tmp_path)
    records = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert [record["id"] for record in records] == [f"i{n}" for n in range(items)]
    assert all(record["success"] for record in records)
    with session_scope(make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")) as session:
        run = session.exec(select(Run)).one()
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Result.item_id)))
        ).one()
    assert (run.status, run.finalize_count) == ("completed", 1)
    assert rows == distinct == items


@pytest.mark.parametrize(
    ("moment", "preexec_fn", "stop_signal", "item_s"),
    [
        (worker_spawned, heed_sigint, signal.SIGINT, 0.3),
        (some_results, heed_sigint, signal.SIGINT, 0.3),
        (some_results, heed_sigint, signal.SIGTERM, 0.3),
        # Slower items: the run must outlast a loaded machine's `workers list`.
        (worker_listed, ignore_sigint, signal.SIGINT, 0.6),
    ],
    ids=["sigint-worker-starting", "sigint-mid-run", "sigterm-mid-run", "sigint-ignored-listed"],
)
def test_interrupted_embedded_run_resumes_without_loss_or_duplicates(
    tmp_path: Path,
    moment: Callable[[Path], bool],
    preexec_fn: Callable[[], None],
    stop_signal: signal.Signals,
    item_s: float,
) -> None:
    running = start_run(
        tmp_path, items=ITEMS, model=f"delay={item_s}", slice_size=3, preexec_fn=preexec_fn
    )
    wait_until(running, lambda: moment(tmp_path), moment.__name__.replace("_", " "))
    running.send_signal(stop_signal)
    stopped(tmp_path, running)

    partial = results_stored(tmp_path / ".fleet" / "fleet.db")
    assert partial < ITEMS, f"interrupt came too late to test anything ({partial})"
    if stop_signal is signal.SIGTERM:
        return  # the stop is what differs; the resume that follows is the same as after Ctrl-C
    resumed_once_each(tmp_path, ITEMS)


def test_a_second_ctrl_c_kills_the_workers_at_once(tmp_path: Path) -> None:
    """The first Ctrl-C gives the worker a warm shutdown; a second one ends it."""
    # One slice of two items of 8 s each: the warm shutdown would wait for both.
    running = start_run(tmp_path, items=2, model="delay=8", slice_size=2, preexec_fn=heed_sigint)
    worker_log = tmp_path / ".fleet" / "logs" / "local0.log"

    def logged(line: str) -> Callable[[], bool]:
        return lambda: worker_log.exists() and line in worker_log.read_text(errors="replace")

    wait_until(running, logged("fleet.run_slice["), "a slice taken")
    running.send_signal(signal.SIGINT)
    wait_until(running, logged("Warm shutdown"), "a warm shutdown")
    running.send_signal(signal.SIGINT)
    stopped(tmp_path, running)  # the worker gone with it, not left finishing its slice

    assert "interrupted again: killing the workers" in output_of(tmp_path)
    resumed_once_each(tmp_path, 2)
