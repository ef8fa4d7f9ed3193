"""Outages at the edges: the database during a run, the broker during an enqueue.

Real workers reach PostgreSQL through a TCP relay that the test cuts (every open
connection reset, new ones refused) for longer than a few quick retries last. A
slice task keeps retrying with backoff for as long as the database is away, and a
worker that starts during the outage (its runtime and preloaded model) comes up
and joins in; once the database is back the run completes with no command typed.

``fleet enqueue`` against a broker that refuses connections retries for
``FLEET_PUBLISH_RETRY_S``, then stops non-zero saying how many work orders went
out and that ``fleet resume RUN`` sends the rest; it does, and the run completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Item, Run, Slice
from producer.embedded import WorkerSpec, spawn_worker
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import fleet, fleet_env, run_fleet
from tests.integration.netcut import CuttableRelay
from tests.integration.test_chaos import (
    assert_exactly_once,
    free_port,
    results_stored,
    run_status,
    start_run,
    wait_until,
    write_inputs,
)

#: Longer than the retries of old (1 + 2 + 4 s) and than a PostgreSQL restart.
OUTAGE_S = 32.0

#: After the database is back: the longest retry wait (60 s) plus the rest of the run.
AFTER_OUTAGE_TIMEOUT_S = 120.0

#: The reconciler is off: the slice tasks' own retries alone must carry the run.
RETRIES_ONLY = {"FLEET_RECONCILE_INTERVAL": "0", "FLEET_HEARTBEAT_INTERVAL": "2"}


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture
def late_workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers a test spawns itself; SIGKILLed with their pool processes afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_long_database_outage_the_run_completes_without_a_hand(
    clean_redis: str,
    postgres_url: str,
    start_workers: WorkerStarter,
    late_workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    db = make_engine(postgres_url)
    direct = make_url(postgres_url)
    with CuttableRelay((direct.host or "127.0.0.1", direct.port or 5432)) as relay:
        through_relay = direct.set(port=relay.port).render_as_string(hide_password=False)
        env = {
            "FLEET_BROKER_URL": clean_redis,
            "FLEET_DATABASE_URL": through_relay,
            "FLEET_TORCH_THREADS": "1",
            "FLEET_PRELOAD_ENGINE": "echo",
            "FLEET_PRELOAD_MODEL": "delay=0.2",
            **RETRIES_ONLY,
        }
        pool = start_workers(1, broker_url=clean_redis, database_url=through_relay, extra_env=env)
        items = 30
        inputs = write_inputs(tmp_path / "in.jsonl", items)
        run_id = start_run(db, clean_redis, inputs, model="delay=0.2", slice_size=3)
        wait_until(lambda: results_stored(db, run_id) >= 3, "some progress", 120)
        relay.cut()
        cut_at = time.monotonic()
        # A worker that starts while the database is away: runtime, model preload.
        late = WorkerSpec("late@%h", ["fleet"], env)
        late_workers.append(spawn_worker(late, log_dir=tmp_path / "logs"))
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        assert relay.refused > 0, "no worker tried the database during the outage"
        stalled_at = results_stored(db, run_id)
        assert stalled_at < items, "the outage came too late to test anything"
        relay.restore()
        wait_until(
            lambda: run_status(db, run_id) == "completed",
            "the run to complete after the outage",
            AFTER_OUTAGE_TIMEOUT_S,
        )
    rows = assert_exactly_once(db, run_id, items)
    assert all(row.ok for row in rows)
    assert [process.poll() for process in [*pool.processes, *late_workers]] == [None, None]
    late_log = (tmp_path / "logs" / "late.log").read_text(errors="replace")
    assert "ready." in late_log, late_log[-3000:]
    db.dispose()


def test_enqueue_with_the_broker_away_stops_with_the_resume_command(
    clean_redis: str, start_workers: WorkerStarter, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    refusing = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    inputs = write_inputs(tmp_path / "in.jsonl", 10)
    env = fleet_env(tmp_path, database_url=db_url, publish_retry_s="2")
    # FLEET_PUBLISH_RETRY_S=2: the command gives up; one that kept retrying would
    # never return, and the subprocess's timeout would fail the test.
    done = run_fleet("enqueue", str(inputs), "--engine", "echo", "--model", "echo",
                     "--slice-size", "2", env={**env, "FLEET_BROKER_URL": refusing},
                     cwd=tmp_path, timeout=60)  # fmt: skip
    said = " ".join(done.stderr.split())  # rich wraps long lines
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "is unreachable" in said, said
    assert "0 of 5 work order(s) published" in said, said
    db = make_engine(db_url)
    with session_scope(db) as session:
        run = session.exec(select(Run)).one()
        slices = list(session.exec(select(Slice.status).where(Slice.run_id == run.id)))
        items = session.execute(select(func.count()).where(Item.run_id == run.id)).scalar_one()
    assert f"`fleet resume {run.id}` publishes the rest" in said, said
    assert (run.status, slices, items) == ("pending", ["pending"] * 5, 10)
    assert done.stdout == ""  # no run id on stdout: nothing for a script to wait on

    start_workers(1, broker_url=clean_redis, database_url=db_url)
    out = fleet("resume", run.id, env={**env, "FLEET_BROKER_URL": clean_redis}, cwd=tmp_path)
    assert out == ""
    wait_until(lambda: run_status(db, run.id) == "completed", "the resumed run to complete", 60)
    assert all(row.ok for row in assert_exactly_once(db, run.id, 10))
    db.dispose()


def test_a_database_that_accepts_and_never_answers_fails_the_connection_in_time(
    tmp_path: Path,
) -> None:
    """A server that takes the TCP connection and says nothing (overloaded, half up, a
    stuck proxy) fails a new connection after ``CONNECT_TIMEOUT_S``, an outage the
    callers retry, instead of holding a worker's pool process or a command for ever."""
    import socket
    import sys

    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:  # never accepts
        port = silent.getsockname()[1]
        script = (
            "from common.db import make_engine\n"
            "from worker.failures import database_away\n"
            "try:\n"
            f"    make_engine('postgresql+psycopg://postgres@127.0.0.1:{port}/test')\n"
            "except Exception as error:\n"
            "    print('away' if database_away(error) else repr(error))\n"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the connection to a silent server was still waiting after 120 s")
    assert done.stdout.strip() == "away", done.stdout + done.stderr
