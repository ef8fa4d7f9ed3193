"""Finalize's accuracy statistics: how long the per-item SQL aggregation takes.

Builds a scored run of ``--items`` items in ``--models`` x ``--permutations`` lanes on
SQLite (or ``--database``), fills every result with a random 0/1 score, and times
``evaluation_statistics`` (overall, per lane, model, permutation, dataset and batch)
for each aggregate. Prints the seconds and writes them as JSON (``--output``).
Figures, never assertions.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from sqlmodel import Session, select

from common.db import make_engine, session_scope
from common.evaluation import evaluation_statistics
from common.models import Item, Run, Slice
from common.results import ResultRow
from common.runconfig import RunConfig
from common.store import save_results
from producer.enqueue import create_run


def build(database: str, folder: Path, items: int, models: int, permutations: int) -> str:
    source = folder / "items.jsonl"
    with source.open("w") as out:
        for index in range(items):
            out.write(json.dumps({"id": index, "prompt": f"q {index}", "ref": "1"}) + "\n")
    config = RunConfig(
        engine="echo",
        models=[f"m{index}" for index in range(models)],
        permutations=[f"cyclic-digits@{seed}" for seed in range(permutations)],
        reference_field="ref",
        scorer="exact",
        slice_size=256,
    )
    db = make_engine(database)
    run_id = create_run(db, input_path=source, config=config, queue="bench").run_id
    rng = random.Random(0)
    lanes = models * permutations
    with session_scope(db) as session:
        ids = list(session.exec(select(Item.id).where(Item.run_id == run_id).order_by(Item.seq)))
        slices = {
            (row.lane_index, row.seq_start): row.id
            for row in session.exec(select(Slice).where(Slice.run_id == run_id))
        }
    for start in range(0, len(ids), 2000):
        with session_scope(db) as session:
            save_results(
                session,
                rows=[
                    ResultRow(
                        run_id=run_id,
                        item_id=item_id,
                        lane_index=lane,
                        slice_id=slices[(lane, seq // 256 * 256)],
                        ok=True,
                        score=float(rng.random() < 0.6),
                    )
                    for seq, item_id in enumerate(ids[start : start + 2000], start)
                    for lane in range(lanes)
                ],
            )
    db.dispose()
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--permutations", type=int, default=3)
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/evaluation.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database = args.database or f"sqlite:///{Path(folder) / 'bench.db'}"
        run_id = build(database, Path(folder), args.items, args.models, args.permutations)
        db = make_engine(database)
        figures: dict[str, float] = {}
        for aggregate in ("any", "all", "majority", "mean"):
            with Session(db) as session:
                run = session.get(Run, run_id)
                assert run is not None
                run.config = {**run.config, "aggregate": aggregate}
                started = time.perf_counter()
                stats = evaluation_statistics(session, run=run)
                figures[aggregate] = time.perf_counter() - started
                session.rollback()
            overall = {metric: value for scope, metric, value in stats if scope == "overall"}
            print(
                f"{aggregate:>8}: {figures[aggregate]:.3f} s for {len(stats)} figures; "
                f"overall accuracy {overall['accuracy']:.4f}"
            )
        db.dispose()
    lanes = args.models * args.permutations
    document = {
        "items": args.items,
        "lanes": lanes,
        "results": args.items * lanes,
        "database": "sqlite" if args.database is None else args.database.split(":")[0],
        "seconds_per_aggregate": figures,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document))


if __name__ == "__main__":
    main()
