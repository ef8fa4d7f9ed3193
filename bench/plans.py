"""What one slice costs the database: every statement it runs, with its plan.

``python -m bench.plans --items 1000000`` creates an echo run of that many items,
writes the results of every slice but the last (as a run near its end has them),
then runs the last slice through the worker's own pipeline (``process_slice``)
while recording each statement with its plan:

- on PostgreSQL, ``EXPLAIN (ANALYZE, FORMAT JSON)`` of the statement, run just
  before it inside a savepoint that is rolled back, so it sees exactly the rows
  the statement will see and changes nothing;
- on SQLite, ``EXPLAIN QUERY PLAN``.

For each statement it prints the plan's nodes and the rows they visited (rows
returned plus rows read and dropped by a filter, over all loops). A statement
whose cost grows with its run shows a scan or a hash join over the run's rows
here. Writes JSON (``--output``); never asserts (``tests/integration/
test_slice_cost.py`` holds the same figures for two run sizes equal).

The planner statistics are left as a big enqueue leaves them: no ``ANALYZE``
after the rows were written, as on a live fleet between autovacuum passes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, event, text
from sqlmodel import col, select

from common.db import make_engine, session_scope
from common.messages import SliceOrder
from common.models import Slice
from common.runconfig import RunConfig
from common.settings import Settings
from producer.enqueue import create_run
from worker.pipeline import process_slice
from worker.runtime import WorkerRuntime

POSTGRES_ADMIN_URL = os.environ.get(
    "FLEET_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"
)

#: The tables whose size grows with a run.
RUN_TABLES = ("item", "result", "attempt", "slice")


@dataclass
class Statement:
    """One statement a slice ran: its text, its plan's nodes and the rows they visited."""

    sql: str
    nodes: list[str] = field(default_factory=list)
    rows_visited: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"sql": self.sql, "nodes": self.nodes, "rows_visited": self.rows_visited}


def _walk_pg(plan: dict[str, Any], statement: Statement) -> None:
    relation = plan.get("Relation Name") or plan.get("Index Name") or ""
    statement.nodes.append(f"{plan['Node Type']} {relation}".strip())
    if "Relation Name" in plan:
        loops = int(plan.get("Actual Loops", 1))
        read = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        statement.rows_visited += int(read * loops)
    for child in plan.get("Plans", []):
        _walk_pg(child, statement)


@contextmanager
def recorded_plans(db: Engine) -> Iterator[list[Statement]]:
    """Every statement run on ``db`` inside the block, with its plan (see the module doc)."""
    statements: list[Statement] = []
    postgres = db.dialect.name == "postgresql"

    def before(
        _conn: Any, cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        if statement.startswith("BEGIN"):
            return  # SQLite's BEGIN IMMEDIATE (``common.db``): not a statement of the slice's
        entry = Statement(" ".join(statement.split()))
        statements.append(entry)
        if many:
            parameters = parameters[0] if parameters else ()
        if postgres:
            # A statement run as its own transaction (``common.db.single_statements``)
            # is explained in one of its own, rolled back; others in a savepoint.
            alone = cursor.connection.autocommit
            cursor.execute("BEGIN" if alone else "SAVEPOINT fleet_plan")
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
            _walk_pg(cursor.fetchone()[0][0]["Plan"], entry)
            cursor.execute("ROLLBACK" if alone else "ROLLBACK TO SAVEPOINT fleet_plan")
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            entry.nodes = [row[3] for row in cursor.fetchall()]

    event.listen(db, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(db, "before_cursor_execute", before)


def scans(statements: list[Statement]) -> list[str]:
    """Plan nodes that read a run-sized table whole, or join the run's rows by hash."""
    found = []
    for statement in statements:
        for node in statement.nodes:
            whole = node.startswith(("Seq Scan", "SCAN ")) and any(
                table in node for table in RUN_TABLES
            )
            if whole or node.startswith(("Hash Anti Join", "Hash Join", "Hash Semi Join")):
                found.append(f"{node}: {statement.sql[:80]}")
    return found


def make_run(db: Engine, folder: Path, items: int, slice_size: int = 64) -> str:
    path = folder / f"plans-{items}.jsonl"
    with path.open("w") as out:
        for index in range(items):
            out.write(json.dumps({"id": index, "prompt": f"say {index} now"}) + "\n")
    config = RunConfig(engine="echo", models=["echo"], slice_size=slice_size)
    run_id = create_run(db, input_path=path, config=config, queue="fleet").run_id
    path.unlink()
    return run_id


def answer_all_but_last(db: Engine, run_id: str, slice_size: int = 64) -> int:
    """Results for every item outside the run's last slice, and those slices done, in SQL."""
    with session_scope(db) as session:
        last = session.exec(
            select(Slice).where(Slice.run_id == run_id).order_by(col(Slice.index).desc())
        ).first()
        assert last is not None
        if db.dialect.name == "postgresql":
            # The fill joins a million items to their slices: as a hash join, not the
            # nested loop that the statistics of a fresh enqueue would suggest.
            session.execute(text("SET LOCAL enable_nestloop = off"))
        session.execute(
            text(
                "INSERT INTO result (run_id, item_id, lane_index, slice_id, ok, answer, "
                "latency_s, tokens_in, tokens_out, batch_size, attempts, created_at) "
                "SELECT item.run_id, item.id, slice.lane_index, slice.id, true, 'done', "
                "0, 1, 1, 1, 1, CURRENT_TIMESTAMP FROM item JOIN slice ON "
                "slice.run_id = item.run_id AND slice.lane_index = 0 "
                'AND slice."index" = item.seq / :size '
                "WHERE item.run_id = :run AND slice.id != :last"
            ),
            {"run": run_id, "last": last.id, "size": slice_size},
        )
        done = session.execute(
            text(
                "UPDATE slice SET status = 'done', results_ok = seq_end - seq_start "
                "WHERE run_id = :run AND id != :last"
            ),
            {"run": run_id, "last": last.id},
        ).rowcount
        session.execute(
            text(
                "UPDATE run SET slices_done = :done, results_ok = item_count - :open "
                "WHERE id = :run"
            ),
            {"run": run_id, "done": done, "open": last.seq_end - last.seq_start},
        )
        assert last.id is not None
        return last.id


def last_slice_plans(db: Engine, run_id: str, slice_id: int) -> list[Statement]:
    runtime = WorkerRuntime(settings=Settings(), db=db)
    with recorded_plans(db) as statements:
        process_slice(runtime, SliceOrder(run_id, slice_id), worker="plans")
    return statements


@contextmanager
def postgres_database() -> Iterator[str]:
    admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    name = f"fleet_plans_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def report(url: str, folder: Path, items: int) -> dict[str, Any]:
    db = make_engine(url)
    try:
        started = time.perf_counter()
        run_id = make_run(db, folder, items)
        slice_id = answer_all_but_last(db, run_id)
        prepared_s = time.perf_counter() - started
        statements = last_slice_plans(db, run_id, slice_id)
    finally:
        db.dispose()
    return {
        "database": db.dialect.name,
        "items": items,
        "prepare_s": round(prepared_s, 1),
        "statements": len(statements),
        "rows_visited": sum(statement.rows_visited for statement in statements),
        "scans": scans(statements),
        "plans": [statement.as_dict() for statement in statements],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--databases", nargs="+", default=["postgres", "sqlite"])
    parser.add_argument("--output", type=Path, default=Path("bench/results/plans.json"))
    args = parser.parse_args()
    folder = args.output.parent
    folder.mkdir(parents=True, exist_ok=True)
    document = []
    for name in args.databases:
        if name == "postgres":
            with postgres_database() as url:
                figures = report(url, folder, args.items)
        else:
            database = folder / "plans.db"
            database.unlink(missing_ok=True)
            figures = report(f"sqlite:///{database}", folder, args.items)
            database.unlink(missing_ok=True)
        print(
            f"{name}: {args.items} items, {figures['statements']} statements, "
            f"{figures['rows_visited']} rows visited, scans: {figures['scans'] or 'none'}"
        )
        for plan in figures["plans"]:
            print(f"  {plan['rows_visited']:>6}  {' / '.join(plan['nodes'])[:90]}")
            print(f"          {plan['sql'][:110]}")
        document.append(figures)
    args.output.write_text(json.dumps(document, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
