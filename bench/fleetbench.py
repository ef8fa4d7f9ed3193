"""What the fleet benchmarks share: a local fleet, a timed run, the in-process reference.

A local fleet is the real thing on one machine: the embedded Redis-protocol server,
SQLite, and ``celery -A worker worker`` subprocesses with one torch thread each. A
timed run goes from ``create_run`` (validation, items, slices in SQL) and publishing
to the run's ``completed`` status, which only finalize sets: every part of the fleet
is inside the timing. Model loading is not: each worker is warmed up by a first run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlmodel import select

from common.celery_app import create_app
from common.db import make_engine, session_scope
from common.models import Result, Run, RunStatus
from common.publish import publish_run
from common.runconfig import RunConfig
from common.settings import Settings
from producer.embedded import EmbeddedBroker
from producer.enqueue import create_run
from producer.inputs import InputRecord, RecordReader
from producer.launcher import LocalWorkers
from worker.batching import plan_batches
from worker.engines import Engine, GenerationParams
from worker.prompting import prepare

EXAMPLE = Path(__file__).parents[1] / "examples" / "contexts.jsonl"

#: Longest a benchmark run may take before it is declared stuck.
RUN_TIMEOUT_S = 1800.0


def write_items(path: Path, count: int, source: Path = EXAMPLE) -> Path:
    """The first ``count`` records of ``source`` (repeated if it is shorter) into ``path``."""
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    with path.open("w") as out:
        for index in range(count):
            record = json.loads(lines[index % len(lines)])
            record["id"] = f"{record.get('id', 'item')}-{index}"
            out.write(json.dumps(record) + "\n")
    return path


class LocalFleet:
    """Embedded broker, SQLite and ``workers`` worker processes under ``state_dir``."""

    def __init__(self, state_dir: Path, *, workers: int, torch_threads: int = 1) -> None:
        self.state_dir = state_dir
        self.workers = workers
        self.torch_threads = torch_threads

    @contextmanager
    def started(self) -> Iterator[LocalFleet]:
        with EmbeddedBroker(self.state_dir / "broker") as broker_url:
            settings = Settings(broker_url=broker_url, state_dir=self.state_dir)
            self.db = make_engine(settings.sqlalchemy_url)
            self.app = create_app(settings)
            env = {
                "FLEET_BROKER_URL": broker_url,
                "FLEET_DATABASE_URL": settings.sqlalchemy_url,
                "FLEET_STATE_DIR": str(self.state_dir.resolve()),
                "FLEET_TORCH_THREADS": str(self.torch_threads),
                "OMP_NUM_THREADS": str(self.torch_threads),
            }
            with LocalWorkers(
                self.workers, env=env, log_dir=self.state_dir / "logs", queues=["fleet"]
            ):
                self._wait_for_workers()
                yield self

    def _wait_for_workers(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replies = self.app.control.ping(timeout=1.0) or []
            if len(replies) >= self.workers:
                return
        raise RuntimeError(f"workers did not come up; see {self.state_dir / 'logs'}")

    def warm_up(self, input_path: Path, config: RunConfig, tries: int = 5) -> None:
        """Runs of one-item slices until every worker has answered (and loaded the model)."""
        warm_config = config.model_copy(update={"slice_size": 1})
        seen: set[str] = set()
        for _ in range(tries):
            run_id = self.run(input_path, warm_config)["run_id"]
            with session_scope(self.db) as session:
                workers = session.exec(select(Result.worker).where(Result.run_id == run_id))
                seen.update(worker for worker in workers if worker)
            if len(seen) >= self.workers:
                return
        print(f"warning: only {len(seen)} of {self.workers} workers took warm-up work")

    def run(self, input_path: Path, config: RunConfig) -> dict[str, Any]:
        """Enqueue, publish and wait for ``completed``; seconds and what the run did."""
        started = time.perf_counter()
        enqueued = create_run(self.db, input_path=input_path, config=config, queue="fleet")
        publish_run(self.db, self.app, run_id=enqueued.run_id)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            with session_scope(self.db) as session:
                status = session.exec(select(Run.status).where(Run.id == enqueued.run_id)).one()
            if status == RunStatus.completed:
                break
            if status in (RunStatus.failed, RunStatus.cancelled) or time.monotonic() > deadline:
                raise RuntimeError(f"run {enqueued.run_id} ended {status}")
            time.sleep(0.05)
        return {
            "run_id": enqueued.run_id,
            "items": enqueued.items,
            "slices": enqueued.slices,
            "seconds": time.perf_counter() - started,
        }


def in_process(engine: Engine, input_path: Path, config: RunConfig) -> dict[str, Any]:
    """The same items, cut into the same slices and planned into the same batches as a
    worker would, through ``engine`` directly: no broker, no SQL, no Celery."""
    records = [entry for entry in RecordReader(input_path) if isinstance(entry, InputRecord)]
    params = GenerationParams(**config.generation.model_dump())
    batching = config.batching
    started = time.perf_counter()
    batches = 0
    for start in range(0, len(records), config.slice_size):
        chunk = records[start : start + config.slice_size]
        prepared = prepare(engine, [(r.payload, r.prompt) for r in chunk], config)
        for batch in plan_batches(
            prepared.lengths,
            batch_size=batching.batch_size,
            max_batch_tokens=batching.max_batch_tokens,
            max_new_tokens=params.max_new_tokens,
            max_padding=batching.max_padding,
        ):
            engine.generate([prepared.prompts[index] for index in batch], params)
            batches += 1
    return {
        "items": len(records),
        "batches": batches,
        "seconds": time.perf_counter() - started,
    }


def write_results(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    print(f"written to {path}")
