"""The fleet set-up: Redis, PostgreSQL, two workers started by hand, the CLI as typed."""

from __future__ import annotations

import json
import random
from pathlib import Path

from sqlalchemy import func
from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result, Run
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import fleet, fleet_env

RECORDS = 1000


def write_contexts(path: Path, count: int) -> list[str]:
    """Contexts records of mixed lengths; their ids."""
    rng = random.Random(7)
    ids = []
    with path.open("w") as out:
        for index in range(count):
            ids.append(f"item_{index}")
            context = " ".join(
                rng.choice(["numpy", "array", "shape", "dtype", "axis"])
                for _ in range(rng.randint(3, 300))
            )
            out.write(
                json.dumps(
                    {
                        "id": ids[-1],
                        "query": f"question {index}?",
                        "context": context,
                        "retrieval_time": 0.1,
                    }
                )
                + "\n"
            )
    return ids


def test_enqueue_watch_export_on_redis_and_postgres(
    tmp_path: Path, redis_url: str, postgres_url: str, start_workers: WorkerStarter
) -> None:
    """1,000 records through two hand-started workers: all present, none twice, finalize once."""
    start_workers(2, broker_url=redis_url, database_url=postgres_url)
    inputs = tmp_path / "contexts.jsonl"
    ids = write_contexts(inputs, RECORDS)
    env = fleet_env(tmp_path, broker_url=redis_url, database_url=postgres_url)

    run_id = fleet(
        "enqueue",
        str(inputs),
        "--engine",
        "echo",
        "--model",
        "delay=0.01",
        "--slice-size",
        "50",
        env=env,
        cwd=tmp_path,
    ).strip()
    fleet("status", "latest", "--watch", env=env, cwd=tmp_path)
    fleet("export", run_id, "-o", str(tmp_path / "out.jsonl"), env=env, cwd=tmp_path)
    fleet(
        "export",
        "latest",
        "--format",
        "json",
        "-o",
        str(tmp_path / "summary.json"),
        env=env,
        cwd=tmp_path,
    )

    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == ids
    assert all(record["success"] for record in records)
    assert records[0]["total_time"] >= 0.1  # retrieval_time + inference_time
    assert len({record["worker"] for record in records}) == 2

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["id"] == run_id
    assert summary["run"]["finalize_count"] == 1
    assert summary["statistics"]["overall"]["results_ok"] == RECORDS

    with session_scope(make_engine(postgres_url)) as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.status == "completed"
        assert run.finalize_count == 1
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Result.item_id))).where(
                Result.run_id == run_id
            )
        ).one()
    assert rows == distinct == RECORDS
