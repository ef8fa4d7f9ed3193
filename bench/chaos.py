"""Chaos run: kill -9 workers at random moments of a 2,000-item run, check nothing is lost.

What the outside check of the "never lose, never duplicate" issue does, as a script:

- a run of ``--items`` echo items (a small delay per batch) in ``--lanes`` lanes,
  published to the broker (``--broker``, default: an embedded valkey-server) and
  stored in ``--database`` (default: SQLite in a temporary folder);
- ``--workers`` real ``celery -A worker worker`` processes; ``--kills`` times, at a
  random moment, one of them gets SIGKILL (main process and pool child) and a fresh
  one is started in its place;
- at the end: results per lane, duplicates, the stored statistics against a recount
  of the rows, ``finalize_count``, and how long recovery took.

Workers run with the default settings: a heartbeat every 5 s and a reconciler pass
every 15 s (jittered), so a slice held by a killed worker is handed out again within
about half a minute of its death. Prints the figures and writes them as JSON
(``--output``); exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import col, select

from common.celery_app import create_app
from common.db import make_engine, session_scope
from common.models import Result, Run, RunStat, Slice
from common.publish import publish_run
from common.runconfig import Batching, RunConfig
from common.settings import Settings
from producer.embedded import EmbeddedBroker, celery_command
from producer.enqueue import create_run


class Pool:
    """Worker subprocesses, each with a name of its own so a replacement is a new node."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started = 0
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        name = f"chaos{self.started}"
        self.started += 1
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "FLEET_TORCH_THREADS": "1"}
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [
                        *celery_command(),
                        "-A",
                        "worker",
                        "worker",
                        "--concurrency=1",
                        f"--hostname={name}@%h",
                        "-Q",
                        "fleet",
                        "--loglevel=INFO",
                        "--without-gossip",
                        "--without-mingle",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def kill_one(self, rng: random.Random, target: str) -> bool:
        """SIGKILL a random worker: all of it (``worker``), its pool child (``child``), or
        its main process alone (``main``: the pool child is orphaned mid-slice).

        True when a replacement worker is needed (the worker's main process died).
        """
        alive = [process for process in self.processes if process.poll() is None]
        victim = rng.choice(alive)
        if target == "main":
            victim.kill()
            victim.wait()
            return True
        if target == "child":
            children = Path(f"/proc/{victim.pid}/task/{victim.pid}/children").read_text().split()
            if children:
                os.kill(int(children[0]), signal.SIGKILL)
                return False
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        return True

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def checks(db: Engine, run_id: str, items: int, lanes: int) -> dict[str, Any]:
    with session_scope(db) as session:
        run = session.get(Run, run_id)
        assert run is not None
        per_lane = dict(
            session.execute(
                select(Result.lane_index, func.count())
                .where(Result.run_id == run_id)
                .group_by(col(Result.lane_index))
            ).all()
        )
        rows = session.execute(select(func.count()).where(Result.run_id == run_id)).scalar_one()
        keys = (
            select(Result.item_id, Result.lane_index)
            .where(Result.run_id == run_id)
            .distinct()
            .subquery()
        )
        distinct = session.execute(select(func.count()).select_from(keys)).scalar_one()
        ok = session.execute(
            select(func.count()).where(Result.run_id == run_id, col(Result.ok).is_(True))
        ).scalar_one()
        stored = {
            (stat.scope, stat.metric): stat.value
            for stat in session.exec(select(RunStat).where(RunStat.run_id == run_id))
        }
        retried = session.execute(
            select(func.count()).where(Slice.run_id == run_id, Slice.attempts > 1)
        ).scalar_one()
    recount = {
        ("overall", "results"): float(rows),
        ("overall", "results_ok"): float(ok),
        ("overall", "results_failed"): float(rows - ok),
        **{(f"lane:{lane}", "results"): float(count) for lane, count in per_lane.items()},
    }
    return {
        "status": run.status,
        "finalize_count": run.finalize_count,
        "results_per_lane": {str(lane): count for lane, count in sorted(per_lane.items())},
        "rows": rows,
        "duplicates": rows - distinct,
        "ok": ok,
        "stats_match_recount": all(stored.get(key) == value for key, value in recount.items()),
        "slices_claimed_more_than_once": retried,
        "passed": run.status == "completed"
        and run.finalize_count == 1
        and rows == distinct == items * lanes
        and all(per_lane.get(lane) == items for lane in range(lanes))
        and all(stored.get(key) == value for key, value in recount.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.02, help="Echo seconds per batch.")
    parser.add_argument("--slice-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--broker", default=None, help="Redis URL (default: embedded server).")
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite).")
    parser.add_argument(
        "--target",
        choices=["worker", "child", "main"],
        default="worker",
        help=(
            "Kill whole workers (a fresh one is started), only their pool child process, or"
            " only their main process (a fresh one is started; the child is orphaned)."
        ),
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--output", type=Path, default=Path("bench/results/chaos.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # SIGTERM ends the script like Ctrl-C does: the workers it started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-chaos-")))
        broker_url = args.broker or stack.enter_context(EmbeddedBroker(scratch / "broker"))
        database_url = Settings(database_url=args.database or f"sqlite:///{scratch / 'fleet.db'}")
        db_url = database_url.sqlalchemy_url
        db = make_engine(db_url)
        if args.broker:
            import redis

            redis.Redis.from_url(args.broker).flushdb()
        inputs = scratch / "in.jsonl"
        inputs.write_text(
            "".join(
                json.dumps({"id": f"c{n}", "prompt": f"chaos item {n} of the run"}) + "\n"
                for n in range(args.items)
            )
        )
        models = [f"delay={args.delay}" + ("0" * lane) for lane in range(args.lanes)]
        config = RunConfig(
            engine="echo",
            models=models,
            slice_size=args.slice_size,
            batching=Batching(batch_size=args.batch_size),
        )
        pool = Pool(
            {"FLEET_BROKER_URL": broker_url, "FLEET_DATABASE_URL": db_url},
            scratch,
        )
        stack.callback(pool.stop)
        for _ in range(args.workers):
            pool.start()
        run_id = create_run(db, input_path=inputs, config=config, queue="fleet").run_id
        started = time.monotonic()
        publish_run(db, create_app(Settings(broker_url=broker_url)), run_id=run_id)
        expected = args.items * args.lanes

        def stored() -> int:
            with session_scope(db) as session:
                count = session.execute(select(func.count()).where(Result.run_id == run_id))
                return int(count.scalar_one())

        # Kill moments: spread over the first 80% of the results, in random order.
        marks = sorted(rng.uniform(0.05, 0.8) * expected for _ in range(args.kills))
        kills: list[dict[str, float]] = []
        status = "pending"
        while time.monotonic() - started < args.timeout:
            with session_scope(db) as session:
                run = session.get(Run, run_id)
                assert run is not None
                status = run.status
            if status == "completed":
                break
            done = stored()
            if marks and done >= marks[0]:
                marks.pop(0)
                if pool.kill_one(rng, args.target):
                    pool.start()
                kills.append({"at_results": done, "at_s": time.monotonic() - started})
                print(f"killed a {args.target} at {done}/{expected} results")
            time.sleep(0.2)
        wall = time.monotonic() - started
        figures = {
            "items": args.items,
            "lanes": args.lanes,
            "workers": args.workers,
            "target": args.target,
            "broker": "embedded valkey" if args.broker is None else "redis",
            "database": db.dialect.name,
            "kills": kills,
            "wall_s": wall,
            **checks(db, run_id, args.items, args.lanes),
        }
        db.dispose()
    print(json.dumps(figures, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    if not figures["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
