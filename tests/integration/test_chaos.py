"""Chaos on real processes: kill -9 workers, the broker, everything; SIGTERM; poison items.

Every test ends with the same proof: one result per item and lane, no duplicate,
the run completed and finalized exactly once. The workers beat every two seconds
and run a reconciler pass every two, so a slice held by a killed worker is handed
out again some six seconds after its worker went silent.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rich.console import Console
from sqlalchemy import Engine, case, func
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from common.celery_app import create_app
from common.db import make_engine, session_scope
from common.models import Attempt, Item, Result, Run, Slice
from common.publish import publish_run
from common.results import ErrorKind
from common.runconfig import Batching, RunConfig
from common.settings import Settings
from producer.embedded import EmbeddedBroker
from producer.enqueue import create_run
from producer.launcher import LocalWorkers
from producer.status import read_progress_patiently
from producer.valkey import redis_client_url
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import fleet, fleet_env, run_fleet
from tests.integration.netcut import CuttableRelay
from tests.integration.services import service_missing

#: Worker settings that make recovery fast enough for a test.
FAST_RECOVERY = {"FLEET_HEARTBEAT_INTERVAL": "2", "FLEET_RECONCILE_INTERVAL": "2"}

#: Longest a run may take to recover and complete here.
RECOVERY_TIMEOUT_S = 200.0


def write_inputs(path: Path, count: int, marked: dict[int, str] | None = None) -> Path:
    marked = marked or {}
    path.write_text(
        "".join(
            json.dumps({"id": f"i{n}", "prompt": f"item {n} {marked.get(n, '')}"}) + "\n"
            for n in range(count)
        )
    )
    return path


def start_run(
    db: Engine, broker_url: str, inputs: Path, *, model: str, slice_size: int, max_attempts: int = 3
) -> str:
    config = RunConfig(
        engine="echo",
        models=[model],
        slice_size=slice_size,
        batching=Batching(batch_size=1),
        max_attempts=max_attempts,
    )
    run_id = create_run(db, input_path=inputs, config=config, queue="fleet").run_id
    publish_run(db, create_app(Settings(broker_url=broker_url)), run_id=run_id)
    return run_id


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = RECOVERY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def results_stored(db: Engine, run_id: str) -> int:
    with session_scope(db) as session:
        return session.execute(select(func.count()).where(Result.run_id == run_id)).scalar_one()


def run_status(db: Engine, run_id: str) -> str:
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run.status


def assert_exactly_once(db: Engine, run_id: str, items: int) -> list[Result]:
    """Completed, finalized once, one result per item (one lane), no duplicate; every
    result and attempt names an item of its run and the slice holding that item."""
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        assert run is not None
        rows = list(session.exec(select(Result).where(Result.run_id == run_id)))
        assert unmatched(session, Result, run_id) == unmatched(session, Attempt, run_id) == 0
    assert (run.status, run.finalize_count) == ("completed", 1)
    assert len(rows) == len({(row.item_id, row.lane_index) for row in rows}) == items
    return rows


def unmatched(session: Session, table: type[Result] | type[Attempt], run_id: str) -> int:
    """Rows of ``table`` in the run whose item is not the run's, or whose slice does not
    hold that item in that lane (what foreign keys would have caught, and more)."""
    rows = select(func.count()).select_from(table).where(table.run_id == run_id)
    position = case((col(Slice.by_length), Item.slice_pos), else_=Item.seq)
    matched = (
        rows.join(Item, (col(Item.id) == table.item_id) & (col(Item.run_id) == run_id))
        .join(Slice, col(Slice.id) == table.slice_id)
        .where(
            col(Slice.run_id) == run_id,
            col(Slice.lane_index) == table.lane_index,
            col(Slice.seq_start) <= position,
            col(Slice.seq_end) > position,
        )
    )
    return int(session.execute(rows).scalar_one() - session.execute(matched).scalar_one())


def running_slice_on(db: Engine, run_id: str, worker_prefix: str) -> Slice | None:
    """A slice that ``worker_prefix`` holds and has started to answer, if any."""
    with session_scope(db) as session:
        for slice_row in session.exec(
            select(Slice).where(Slice.run_id == run_id, Slice.status == "running")
        ):
            if (slice_row.worker or "").startswith(worker_prefix):
                stored = session.execute(
                    select(func.count()).where(Result.slice_id == slice_row.id)
                ).scalar_one()
                if stored:
                    return slice_row
    return None


def kill_pool(pool: LocalWorkers) -> None:
    """SIGKILL every worker of the pool, main process and pool children alike."""
    for process in pool.processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = make_engine(url)
    yield engine, url
    engine.dispose()


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


def test_kill_9_worker_mid_slice_another_takes_it_over(
    clean_redis: str, postgres_url: str, start_workers: WorkerStarter, tmp_path: Path
) -> None:
    db = make_engine(postgres_url)
    pool = start_workers(
        2, broker_url=clean_redis, database_url=postgres_url, extra_env=FAST_RECOVERY
    )
    items = 40
    inputs = write_inputs(tmp_path / "in.jsonl", items)
    run_id = start_run(db, clean_redis, inputs, model="delay=0.25", slice_size=5)

    victim: list[Slice] = []

    def victim_mid_slice() -> bool:
        found = running_slice_on(db, run_id, "local0@")
        victim.extend([found] if found else [])
        return found is not None

    wait_until(victim_mid_slice, "worker 0 to be in the middle of a slice", 120)
    os.killpg(pool.processes[0].pid, signal.SIGKILL)
    pool.processes[0].wait()

    wait_until(lambda: run_status(db, run_id) == "completed", "the run to complete")
    rows = assert_exactly_once(db, run_id, items)
    with session_scope(db) as session:
        taken_over = session.get(Slice, victim[0].id)
    assert taken_over is not None
    assert taken_over.status == "done"
    assert taken_over.attempts >= 2
    assert (taken_over.worker or "").startswith("local1@")
    assert all(row.ok for row in rows)
    db.dispose()


def test_worker_killed_after_taking_a_slice_before_claiming_it_loses_nothing(
    embedded_broker: str,
    sqlite_db: tuple[Engine, str],
    start_workers: WorkerStarter,
    demo_model: Path,
    tmp_path: Path,
) -> None:
    """Killed while its pool process still loads the model: the message is unacked in
    Redis for the visibility timeout (an hour); the receipt lets the run go on at once."""
    db, db_url = sqlite_db
    queue = f"receipt-{tmp_path.name}"
    loading = {**FAST_RECOVERY, "FLEET_PRELOAD_MODEL": str(demo_model)}
    doomed = start_workers(
        1, broker_url=embedded_broker, database_url=db_url, queue=queue, extra_env=loading
    )
    config = RunConfig(
        engine="echo", models=["delay=0.05"], slice_size=5, batching=Batching(batch_size=1)
    )
    run_id = create_run(db, input_path=write_inputs(tmp_path / "in.jsonl", 10), config=config,
                        queue=queue).run_id  # fmt: skip
    publish_run(db, create_app(Settings(broker_url=embedded_broker)), run_id=run_id)

    broker = redis.Redis.from_url(redis_client_url(embedded_broker))

    def taken_not_claimed() -> bool:
        """The broker handed the worker a message of this run (kombu's unacked hash),
        and no slice is claimed yet."""
        taken = any(run_id.encode() in order for order in broker.hvals("unacked"))
        with session_scope(db) as session:
            statuses = set(session.exec(select(Slice.status).where(Slice.run_id == run_id)))
        return taken and statuses == {"pending"}

    wait_until(taken_not_claimed, "the worker to take a slice", 60)
    time.sleep(0.5)  # past the moment it takes the message; its pool process is still loading
    kill_pool(doomed)
    assert taken_not_claimed(), "the worker claimed before the kill: nothing was tested"
    start_workers(
        1, broker_url=embedded_broker, database_url=db_url, queue=queue, extra_env=FAST_RECOVERY
    )
    wait_until(lambda: run_status(db, run_id) == "completed", "the run to complete", 120)
    assert all(row.ok for row in assert_exactly_once(db, run_id, 10))


def test_whole_pool_and_embedded_broker_killed_then_resume_loses_nothing(
    start_workers: WorkerStarter, tmp_path: Path
) -> None:
    state = tmp_path / ".fleet"
    db_url = f"sqlite:///{state / 'fleet.db'}"
    db = make_engine(db_url)
    broker = EmbeddedBroker(state / "broker")
    url = broker.__enter__()
    pool = start_workers(2, broker_url=url, database_url=db_url, extra_env=FAST_RECOVERY)
    items = 60
    run_id = start_run(
        db, url, write_inputs(tmp_path / "in.jsonl", items), model="delay=0.2", slice_size=4
    )
    wait_until(lambda: results_stored(db, run_id) >= 10, "some progress", 120)
    kill_pool(pool)
    broker.kill()
    partial = results_stored(db, run_id)
    assert 0 < partial < items, f"the kill came too late to test anything ({partial})"

    # Start again the way a user would: `fleet resume` on the embedded default.
    fleet("resume", run_id, "--workers", "2", env=fleet_env(tmp_path), cwd=tmp_path)
    assert_exactly_once(db, run_id, items)
    db.dispose()


def test_poison_item_that_kills_its_worker_is_quarantined(tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 20, marked={7: "CRASH"})
    # A heartbeat every second: the worker's upkeep thread is in SQLite often, so a
    # replacement pool process forked mid-tick (it hung on SQLite's lock) shows here.
    env = fleet_env(tmp_path, heartbeat_interval="1")
    out = tmp_path / "out"
    command = [*fleet_command(), "run", str(inputs), "--engine", "echo", "--model",
               "crash_marker=CRASH", "--max-attempts", "2", "--output", str(out)]  # fmt: skip
    with subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:
        try:
            output, _ = run.communicate(timeout=60)  # a healthy run takes about 15 s
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGTERM)  # fleet run stops its workers and server
            output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == [f"i{n}" for n in range(20)]
    assert [record["id"] for record in records if not record["success"]] == ["i7"]
    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    with session_scope(db) as session:
        run_id = session.exec(select(Run.id)).one()
        poison = session.exec(
            select(Result).where(Result.run_id == run_id, col(Result.ok).is_(False))
        ).one()
    assert poison.error_kind == ErrorKind.quarantined
    assert "tried 2 times" in (poison.error_message or "")
    assert_exactly_once(db, run_id, 20)
    db.dispose()


def test_fleet_run_restarts_its_local_worker_killed_mid_run(tmp_path: Path) -> None:
    """One local worker, kill -9'd mid-run: fleet run starts it again and the run completes."""
    inputs = write_inputs(tmp_path / "in.jsonl", 30)
    env = fleet_env(tmp_path, heartbeat_interval="1", reconcile_interval="2")
    out = tmp_path / "out"
    command = [*fleet_command(), "run", str(inputs), "--engine", "echo", "--model", "delay=0.2",
               "--slice-size", "5", "--batch-size", "1", "--workers", "1",
               "--output", str(out)]  # fmt: skip
    db_path = tmp_path / ".fleet" / "fleet.db"
    with subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:
        try:
            wait_until(lambda: results_in(db_path) >= 3, "some progress", 120)
            workers = [pid for pid in child_pids(run.pid) if b"celery" in cmdline(pid)]
            assert len(workers) == 1, workers
            os.killpg(workers[0], signal.SIGKILL)
            output, _ = run.communicate(timeout=180)
        finally:
            if run.poll() is None:
                run.send_signal(signal.SIGTERM)
                run.communicate(timeout=60)
    assert run.returncode == 0, output
    assert "restarting" in output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == [f"i{n}" for n in range(30)]
    assert all(record["success"] for record in records)
    db = make_engine(f"sqlite:///{db_path}")
    assert_exactly_once(db, latest_run(db_path), 30)
    db.dispose()


def results_in(db_path: Path) -> int:
    """Results stored under a ``fleet run`` state folder so far (0 before it exists)."""
    if not db_path.exists():
        return 0
    db = make_engine(f"sqlite:///{db_path}")
    try:
        with session_scope(db) as session:
            return session.execute(select(func.count()).select_from(Result)).scalar_one()
    finally:
        db.dispose()


def latest_run(db_path: Path) -> str:
    with session_scope(make_engine(f"sqlite:///{db_path}")) as session:
        return session.exec(select(Run.id)).one()


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def fleet_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "producer"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    wait_until(lambda: _pings(client), "redis-server to answer", 20)
    return server


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_restart_during_a_run_the_run_completes(
    sqlite_db: tuple[Engine, str], start_workers: WorkerStarter, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        service_missing("no redis-server binary on PATH")
    db, db_url = sqlite_db
    port = free_port()
    server = start_redis_server(port, tmp_path / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        start_workers(2, broker_url=url, database_url=db_url, extra_env=FAST_RECOVERY)
        items = 40
        run_id = start_run(
            db, url, write_inputs(tmp_path / "in.jsonl", items), model="delay=0.2", slice_size=4
        )
        wait_until(lambda: results_stored(db, run_id) >= 6, "some progress", 120)
        server.terminate()  # a clean stop: the AOF holds the queued work orders
        server.wait(timeout=20)
        time.sleep(2)
        assert results_stored(db, run_id) < items, "the restart came too late to test anything"
        server = start_redis_server(port, tmp_path / "redis")
        wait_until(lambda: run_status(db, run_id) == "completed", "the run to complete")
        assert all(row.ok for row in assert_exactly_once(db, run_id, items))
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_database_outage_during_a_run_the_run_completes(
    clean_redis: str, postgres_url: str, start_workers: WorkerStarter, tmp_path: Path
) -> None:
    db = make_engine(postgres_url)
    direct = make_url(postgres_url)
    with CuttableRelay((direct.host or "127.0.0.1", direct.port or 5432)) as relay:
        through_relay = direct.set(port=relay.port).render_as_string(hide_password=False)
        start_workers(
            2, broker_url=clean_redis, database_url=through_relay, extra_env=FAST_RECOVERY
        )
        items = 40
        inputs = write_inputs(tmp_path / "in.jsonl", items)
        run_id = start_run(db, clean_redis, inputs, model="delay=0.2", slice_size=4)
        wait_until(lambda: results_stored(db, run_id) >= 6, "some progress", 120)
        relay.cut()  # every worker connection reset, new ones refused
        time.sleep(3)
        assert relay.refused > 0, "no worker tried the database during the outage"
        assert results_stored(db, run_id) < items, "the outage came too late to test anything"
        relay.restore()
        wait_until(lambda: run_status(db, run_id) == "completed", "the run to complete")
    assert all(row.ok for row in assert_exactly_once(db, run_id, items))
    db.dispose()


def test_watching_a_run_waits_out_a_database_outage(postgres_url: str, tmp_path: Path) -> None:
    direct = make_url(postgres_url)
    with CuttableRelay((direct.host or "127.0.0.1", direct.port or 5432)) as relay:
        db = make_engine(direct.set(port=relay.port).render_as_string(hide_password=False))
        config = RunConfig(engine="echo", models=["delay=0"], slice_size=5)
        run_id = create_run(db, input_path=write_inputs(tmp_path / "in.jsonl", 10), config=config,
                            queue="fleet").run_id  # fmt: skip
        said = io.StringIO()
        console = Console(file=said, width=200)
        relay.cut()
        back = threading.Timer(2.0, relay.restore)
        back.start()
        seen, state = read_progress_patiently(db, run_id, console=console, patience_s=60)
        back.join()
        assert (seen, state.expected) == (run_id, 10)
        assert "database unreachable" in said.getvalue()
        relay.cut()  # and an outage longer than the patience is an error in the end
        with pytest.raises(OperationalError):
            read_progress_patiently(db, run_id, console=console, patience_s=1)
        db.dispose()


def test_sigterm_lets_the_slice_in_flight_finish_whole(
    clean_redis: str, sqlite_db: tuple[Engine, str], start_workers: WorkerStarter, tmp_path: Path
) -> None:
    db, db_url = sqlite_db
    pool = start_workers(1, broker_url=clean_redis, database_url=db_url, extra_env=FAST_RECOVERY)
    items, slice_size = 24, 6
    run_id = start_run(
        db, clean_redis, write_inputs(tmp_path / "in.jsonl", items), model="delay=0.3",
        slice_size=slice_size,
    )  # fmt: skip
    in_flight: list[Slice] = []

    def mid_slice() -> bool:
        found = running_slice_on(db, run_id, "local0@")
        in_flight.extend([found] if found else [])
        return found is not None

    wait_until(mid_slice, "the worker to be in the middle of a slice", 120)
    pool.processes[0].send_signal(signal.SIGTERM)
    assert pool.processes[0].wait(timeout=60) == 0
    with session_scope(db) as session:
        finished = session.get(Slice, in_flight[0].id)
        stored = session.execute(
            select(func.count()).where(Result.slice_id == in_flight[0].id)
        ).scalar_one()
    assert finished is not None
    assert (finished.status, stored) == ("done", slice_size)
    assert results_stored(db, run_id) < items

    start_workers(1, broker_url=clean_redis, database_url=db_url, extra_env=FAST_RECOVERY)
    wait_until(lambda: run_status(db, run_id) == "completed", "the run to complete")
    assert_exactly_once(db, run_id, items)


def test_publish_waits_for_a_broker_that_comes_back(
    sqlite_db: tuple[Engine, str], tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        service_missing("no redis-server binary on PATH")
    db, _ = sqlite_db
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = RunConfig(engine="echo", models=["echo"], slice_size=2)
    run_id = create_run(
        db, input_path=write_inputs(tmp_path / "in.jsonl", 10), config=config, queue="fleet"
    ).run_id
    servers: list[subprocess.Popen[bytes]] = []
    # The broker is down when the publish starts, and back two seconds later.
    comeback = threading.Timer(2.0, lambda: servers.append(start_redis_server(port, tmp_path)))
    comeback.start()
    try:
        assert publish_run(db, create_app(Settings(broker_url=url)), run_id=run_id) == 5
        comeback.join()
        assert redis.Redis(port=port).llen("fleet") == 5
    finally:
        comeback.join()
        for server in servers:
            server.terminate()
            server.wait(timeout=20)


def test_slice_that_keeps_failing_is_retried_then_quarantined(tmp_path: Path) -> None:
    # An echo option no worker understands: every claim of every slice raises.
    inputs = write_inputs(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    done = run_fleet("run", str(inputs), "--engine", "echo", "--model", "no_such_option=1",
                     "--slice-size", "5", "--max-attempts", "2", "--output", str(out),
                     env=fleet_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # every result failed: loud
    assert "every result failed (10 of 10)" in done.stderr
    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    with session_scope(db) as session:
        run_id = session.exec(select(Run.id)).one()
        attempts = list(session.exec(select(Slice.attempts).where(Slice.run_id == run_id)))
    rows = assert_exactly_once(db, run_id, 10)
    assert {row.error_kind for row in rows} == {ErrorKind.quarantined}
    assert all("unknown option" in (row.error_message or "") for row in rows)
    assert attempts == [2, 2]
    db.dispose()
