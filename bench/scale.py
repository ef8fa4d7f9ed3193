"""Scale: the fleet's own cost at 10,000 to 1,000,000 items, through the product.

The ``echo`` engine answers at once, so what is measured is the fleet itself:
validation, SQL, the broker, Celery, finalize and export. Every step is the
user's own command in a subprocess, start-up included: ``fleet enqueue``, workers
started as ``celery -A worker worker --concurrency=1``, ``fleet export``.

For each backend (``postgres``: Redis + PostgreSQL on this machine; ``embedded``:
valkey-server from the wheel + SQLite) and each size:

- enqueue: seconds, items/s and the producer's peak RSS;
- run: items/s from the first claim to the last slice done (the fleet's overhead),
  and end to end (from the enqueue command to ``completed``);
- the median slice time over the first and the last 10% of slices, and their ratio
  (a ratio near 1 means a slice costs the same at the start and the end of a run);
- finalize seconds (last slice done to ``completed``);
- export seconds and peak RSS;
- the workers' memory (RSS of each worker's main process and of its pool process,
  sampled every second): the largest at the start of the run, at its end, and over it,
  so that a worker that grows with the size of a run shows.

``--many-workers N`` adds a simulation of a fleet of N slow workers (each batch
taking ``--delay`` seconds, ``--model delay=...``): throughput against the ideal
(N workers x rows per batch / delay) and the database's peak connection count.
``--one-item`` times a one-item ``fleet run`` (embedded default, everything from the
command to its exit, the median of ``--one-item-runs``) of the ``echo`` engine (the
fleet's own start-up) and of the demo model (``hf``: torch, transformers and the
model load added), with the median time from the command's start to each phase:
broker up, worker spawned, run enqueued, worker ready, model loaded, slice done,
finalized, summary printed.
``--backends --sizes --one-item`` (both lists empty) runs only that part.

Prints the figures and writes them as JSON (``--output``); never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from sqlalchemy import Engine
from sqlmodel import col, select

from common.celery_app import create_app
from common.db import make_engine, session_scope
from common.models import Run, RunStatus, Slice
from common.settings import Settings
from producer.embedded import EmbeddedBroker
from producer.launcher import LocalWorkers

POSTGRES_ADMIN_URL = os.environ.get(
    "FLEET_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
)
REDIS_URL = os.environ.get("FLEET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
FLEET = [str(Path(sys.executable).with_name("fleet"))]

#: Longest a benchmark run may take before it is declared stuck.
RUN_TIMEOUT_S = 3600.0


@dataclass
class Backend:
    """Where a benchmark run keeps its queue and its rows."""

    name: str
    broker_url: str
    database_url: str
    db: Engine
    #: PostgreSQL's database name, for its connection count; None on SQLite.
    pg_database: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FLEET_BROKER_URL": self.broker_url,
            "FLEET_DATABASE_URL": self.database_url,
        }


@contextmanager
def postgres_backend() -> Iterator[Backend]:
    """A fresh PostgreSQL database and a flushed Redis database; dropped after."""
    admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    name = f"fleet_bench_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    redis.Redis.from_url(REDIS_URL).flushdb()
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{url}/{name}"
    db = make_engine(url)
    try:
        yield Backend("postgres", REDIS_URL, url, db, pg_database=name)
    finally:
        db.dispose()
        redis.Redis.from_url(REDIS_URL).flushdb()
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@contextmanager
def embedded_backend(root: Path) -> Iterator[Backend]:
    """The embedded default: valkey-server from the wheel and SQLite, under ``root``."""
    with EmbeddedBroker(root / "broker") as broker_url:
        url = f"sqlite:///{root / 'fleet.db'}"
        db = make_engine(url)
        try:
            yield Backend("embedded", broker_url, url, db)
        finally:
            db.dispose()


def write_inputs(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for index in range(count):
            out.write(json.dumps({"id": f"item-{index}", "prompt": f"say {index} now please"}))
            out.write("\n")
    return path


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command``; (seconds, peak RSS in MiB, stdout). Raises on a non-zero exit."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{out}\n{err}")
    return seconds, usage.ru_maxrss / 1024, out


class ConnectionWatch:
    """The peak of PostgreSQL's connections to one database, sampled every 0.2 s."""

    def __init__(self, database: str | None) -> None:
        self.database = database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ConnectionWatch:
        if self.database is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            while not self._stop.wait(0.2):
                row = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,)
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)


def rss_mib(pid: int) -> float | None:
    """The resident memory of process ``pid`` (``/proc``), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child_pids(pid: int) -> list[int]:
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


class WorkerMemory:
    """Every second, the largest RSS among the workers' main processes and among their
    pool processes; ``figures`` gives the first sample, the last and the peak of each."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        main = [rss_mib(pid) for pid in self.pids]
        pool = [rss_mib(child) for pid in self.pids for child in child_pids(pid)]
        seen_main = [mib for mib in main if mib is not None]
        seen_pool = [mib for mib in pool if mib is not None]
        if seen_main and seen_pool:
            self.samples.append((max(seen_main), max(seen_pool)))

    def _watch(self) -> None:
        self._sample()
        while not self._stop.wait(1.0):
            self._sample()
        self._sample()

    def figures(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        return {
            f"worker_{kind}_rss_mib": {
                "start": round(self.samples[0][index], 1),
                "end": round(self.samples[-1][index], 1),
                "peak": round(max(sample[index] for sample in self.samples), 1),
            }
            for index, kind in enumerate(("main", "pool"))
        }


@contextmanager
def workers(backend: Backend, count: int, log_dir: Path) -> Iterator[LocalWorkers]:
    env = {
        "FLEET_BROKER_URL": backend.broker_url,
        "FLEET_DATABASE_URL": backend.database_url,
        "FLEET_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    app = create_app(Settings(broker_url=backend.broker_url, database_url=backend.database_url))
    with LocalWorkers(count, env=env, log_dir=log_dir, queues=["fleet"]) as pool:
        deadline = time.monotonic() + 60 + 10 * count
        while len(app.control.ping(timeout=1.0) or []) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not come up; see {log_dir}")
        yield pool


def wait_completed(db: Engine, run_id: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        with session_scope(db) as session:
            status = session.exec(select(Run.status).where(Run.id == run_id)).one()
        if status == RunStatus.completed:
            return
        if status in (RunStatus.failed, RunStatus.cancelled) or time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} ended {status}")
        time.sleep(0.2)


def slice_figures(db: Engine, run_id: str) -> dict[str, Any]:
    """Slice times in claim order: the first and the last 10%, the run's span, finalize;
    the share of the span the workers spent inside slices (the rest is Celery's hand-off
    between two slices, or no slice to take)."""
    with session_scope(db) as session:
        claims = session.exec(
            select(Slice.started_at, Slice.finished_at, Slice.worker)
            .where(Slice.run_id == run_id)
            .order_by(col(Slice.started_at))
        ).all()
        rows = [(start, end) for start, end, _ in claims]
        run = session.get(Run, run_id)
        assert run is not None
        items = run.item_count
        finished_at = run.finished_at
    assert finished_at is not None  # the run completed
    times = [(end - start).total_seconds() for start, end in rows if start and end]
    tenth = max(1, len(times) // 10)
    first = statistics.median(times[:tenth])
    last = statistics.median(times[-tenth:])
    span = (max(end for _, end in rows if end) - min(s for s, _ in rows if s)).total_seconds()
    finalize = (finished_at - max(end for _, end in rows if end)).total_seconds()
    deciles = [
        round(statistics.median(times[index * tenth : (index + 1) * tenth]), 4)
        for index in range(min(10, len(times) // tenth))
    ]
    inside: dict[str, float] = {}
    for start, end, worker in claims:
        if start and end and worker:
            inside[worker] = inside.get(worker, 0.0) + (end - start).total_seconds()
    return {
        "slices": len(rows),
        "worker_busy_share": round(sum(inside.values()) / (span * len(inside)), 3)
        if span and inside
        else None,
        "slice_median_by_tenth_s": deciles,
        "slice_median_first_10pct_s": round(first, 4),
        "slice_median_last_10pct_s": round(last, 4),
        "slice_last_over_first": round(last / first, 3) if first else None,
        "run_s": round(span, 2),
        "run_items_per_s": round(items / span, 1) if span else None,
        "finalize_s": round(finalize, 3),
    }


def latest_run(db: Engine) -> str:
    with session_scope(db) as session:
        run_id = session.exec(select(Run.id).order_by(col(Run.created_at).desc()).limit(1)).one()
    return run_id


def measure_size(backend: Backend, root: Path, count: int, pool: LocalWorkers) -> dict[str, Any]:
    inputs = write_inputs(root / f"items-{count}.jsonl", count)
    started = time.perf_counter()
    enqueue_s, enqueue_rss, _ = timed(
        [*FLEET, "enqueue", str(inputs), "--engine", "echo", "--model", "echo"], backend.env
    )
    run_id = latest_run(backend.db)
    with WorkerMemory([process.pid for process in pool.processes]) as memory:
        wait_completed(backend.db, run_id)
    end_to_end = time.perf_counter() - started
    figures = slice_figures(backend.db, run_id)
    export_s, export_rss, _ = timed(
        [*FLEET, "export", run_id, "-o", str(root / f"results-{count}.jsonl")], backend.env
    )
    status_s, _, _ = timed([*FLEET, "status", run_id], backend.env)
    (root / f"results-{count}.jsonl").unlink()
    return {
        "items": count,
        "enqueue_s": round(enqueue_s, 2),
        "enqueue_items_per_s": round(count / enqueue_s, 1),
        "enqueue_peak_rss_mib": round(enqueue_rss, 1),
        **figures,
        "end_to_end_s": round(end_to_end, 2),
        "end_to_end_items_per_s": round(count / end_to_end, 1),
        "export_s": round(export_s, 2),
        "export_peak_rss_mib": round(export_rss, 1),
        "status_s": round(status_s, 2),
        **memory.figures(),
    }


def measure_many_workers(
    backend: Backend, root: Path, count: int, items: int, delay: float
) -> dict[str, Any]:
    inputs = write_inputs(root / f"many-{items}.jsonl", items)
    rows_per_batch = Settings().batch_size
    with workers(backend, count, root / "logs-many"), ConnectionWatch(backend.pg_database) as watch:
        started = time.perf_counter()
        timed(
            [*FLEET, "enqueue", str(inputs), "--engine", "echo", "--model", f"delay={delay}"],
            backend.env,
        )
        run_id = latest_run(backend.db)
        wait_completed(backend.db, run_id)
        end_to_end = time.perf_counter() - started
    figures = slice_figures(backend.db, run_id)
    ideal = count * rows_per_batch / delay
    return {
        "workers": count,
        "items": items,
        "batch_delay_s": delay,
        "ideal_items_per_s": ideal,
        **figures,
        "share_of_ideal": round((figures["run_items_per_s"] or 0) / ideal, 3),
        "end_to_end_s": round(end_to_end, 2),
        "peak_db_connections": watch.peak if backend.pg_database else None,
    }


#: Phases of a one-item ``fleet run``: (name, where it shows, the text that marks it).
#: ``out`` is the command's own output, ``log`` its worker's log (timestamped lines).
ONE_ITEM_PHASES = (
    ("broker_up", "out", "embedded broker on"),
    ("worker_spawned", "out", "started local0"),
    ("enqueued", "out", " slices"),
    ("worker_ready", "log", " ready."),
    ("model_loaded", "log", "loaded {engine} model"),
    ("slice_done", "log", "last slice done"),
    ("finalized", "log", "finalize done"),
    ("summary", "out", "results: "),
)


def one_item_run(
    command: list[str], env: dict[str, str], log: Path, engine: str
) -> dict[str, float]:
    """Run ``command`` once; seconds from its start to each phase and to its exit."""
    log.unlink(missing_ok=True)
    started_wall, started = time.time(), time.perf_counter()
    seen: dict[str, float] = {}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line)
        for name, where, text in ONE_ITEM_PHASES:
            if where == "out" and text in line and name not in seen:
                seen[name] = time.perf_counter() - started
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{''.join(output)}")
    seen["exit"] = time.perf_counter() - started
    for line in log.read_text().splitlines():
        stamp = line[1:24] if line.startswith("[") else ""
        for name, where, text in ONE_ITEM_PHASES:
            if where == "log" and text.format(engine=engine) in line and name not in seen:
                at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
                seen[name] = at + int(stamp[20:23]) / 1000 - started_wall
    return seen


def measure_one_item(root: Path, runs: int = 5, engine: str = "hf") -> dict[str, Any]:
    """A one-item ``fleet run`` on the embedded default, start to summary: of the demo
    model (``hf``: torch, transformers and the model load in the worker) or of the
    ``echo`` engine (the fleet's own start-up alone).

    ``runs`` times; the median of each phase (seconds from the command's start) and of
    the whole, and every run's total.
    """
    state = root / "one-item-state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_STATE_DIR"] = str(state)
    inputs = root / "one.jsonl"
    inputs.write_text(json.dumps({"id": "one", "prompt": "Say hello."}) + "\n")
    if engine == "hf":
        model = state / "demo-model"
        if not model.exists():
            timed([*FLEET, "demo-model", str(model)], env)
        chosen = ["--model", str(model), "--max-new-tokens", "8"]
    else:
        chosen = ["--engine", engine, "--model", engine]
    command = [*FLEET, "run", str(inputs), *chosen]
    log = state / "logs" / "local0.log"
    phases = [one_item_run(command, env, log, engine) for _ in range(runs)]
    names = [name for name, *_ in ONE_ITEM_PHASES] + ["exit"]
    return {
        "engine": engine,
        "one_item_run_s": [round(seen["exit"], 2) for seen in phases],
        "one_item_run_median_s": round(statistics.median(seen["exit"] for seen in phases), 2),
        "one_item_phases_median_s": {
            name: round(statistics.median(seen[name] for seen in phases), 2)
            for name in names
            if all(name in seen for seen in phases)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="*", default=["postgres", "embedded"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--many-workers", type=int, default=0, help="e.g. 32; 0 skips it")
    parser.add_argument("--many-items", type=int, default=100_000)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--one-item", action="store_true")
    parser.add_argument("--one-item-runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("bench/results/scale.json"))
    args = parser.parse_args()

    document: dict[str, Any] = {"cpus": os.cpu_count(), "workers": args.workers, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name in args.backends:
            backend_root = root / name
            backend_root.mkdir()
            with (
                postgres_backend() if name == "postgres" else embedded_backend(backend_root)
            ) as backend:
                with workers(backend, args.workers, backend_root / "logs") as pool:
                    for size in args.sizes:
                        measured = measure_size(backend, backend_root, size, pool)
                        figures = {"backend": name, **measured}
                        print(json.dumps(figures), flush=True)
                        document["runs"].append(figures)
                if args.many_workers:
                    many = measure_many_workers(
                        backend, backend_root, args.many_workers, args.many_items, args.delay
                    )
                    many = {"backend": name, **many}
                    print(json.dumps(many), flush=True)
                    document.setdefault("many_workers", []).append(many)
        if args.one_item:
            for engine in ("echo", "hf"):
                figures = measure_one_item(root, args.one_item_runs, engine)
                print(json.dumps(figures), flush=True)
                document.setdefault("one_item", []).append(figures)
    document["peak_rss_bench_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
