"""``fleet report`` and the table exports on a large run: seconds, memory and file size.

Builds a scored echo run of ``--items`` items in ``--lanes`` lanes (200,000 results by
default) on SQLite (or ``--database``) through the store's own writes: each slice
claimed by one of ``--workers`` named workers, its results saved (random latency and
token counts, about 1% failed), the slice finished; then finalize's statistics.
Then times ``write_report``, and the CSV and Parquet exports, each with the peak of
Python's heap while it ran (a second run under ``tracemalloc``; Arrow's own pool peak
for Parquet).
Prints the figures and writes them as JSON (``--output``). Figures, never assertions.

    python -m bench.report [--items 100000] [--lanes 2] [--report-only] [--database URL]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select

from common.db import make_engine, session_scope
from common.models import Item, Slice
from common.results import ErrorKind, ResultRow
from common.runconfig import RunConfig
from common.stats import run_statistics
from common.store import begin_finalize, claim_slice, complete_run, finish_slice, save_results
from producer.enqueue import create_run
from producer.export_tables import write_csv, write_parquet
from producer.report import write_report

#: Items per slice of the built run.
SLICE_SIZE = 1000


def build(db: Engine, folder: Path, *, items: int, lanes: int, workers: int) -> str:
    """A completed, scored echo run of ``items`` x ``lanes`` results; its id."""
    source = folder / "items.jsonl"
    with source.open("w") as out:
        for index in range(items):
            out.write(json.dumps({"id": index, "prompt": f"q {index}", "ref": "1"}) + "\n")
    config = RunConfig(
        engine="echo",
        models=[f"echo-{lane}" for lane in range(lanes)],
        reference_field="ref",
        scorer="exact",
        slice_size=SLICE_SIZE,
    )
    run_id = create_run(db, input_path=source, config=config, queue="bench").run_id
    with session_scope(db) as session:
        ids = list(session.exec(select(Item.id).where(Item.run_id == run_id).order_by(Item.seq)))
        slices = list(
            session.exec(select(Slice).where(Slice.run_id == run_id).order_by(col(Slice.id)))
        )
    rng = random.Random(0)
    for n, piece in enumerate(slices):
        worker = f"gpu{n % workers}@bench"
        with session_scope(db) as session:
            claim_slice(session, run_id=run_id, slice_id=piece.id or 0, worker=worker)
        rows = [
            _result(rng, run_id, item_id or 0, piece, worker)
            for item_id in ids[piece.seq_start : piece.seq_end]
        ]
        with session_scope(db) as session:
            save_results(session, rows=rows)
            finish_slice(session, run_id=run_id, slice_id=piece.id or 0)
    with session_scope(db) as session:
        begin_finalize(session, run_id=run_id)
    with session_scope(db) as session:
        complete_run(session, run_id=run_id, stats=run_statistics(session, run_id=run_id))
    return run_id


def _result(rng: random.Random, run_id: str, item_id: int, piece: Slice, worker: str) -> ResultRow:
    common: dict[str, Any] = {
        "run_id": run_id, "item_id": item_id, "lane_index": piece.lane_index,
        "slice_id": piece.id, "worker": worker, "gpu_group": "0",
        "latency_s": rng.lognormvariate(-2.0, 0.6), "tokens_in": rng.randint(10, 500),
    }  # fmt: skip
    if rng.random() < 0.01:
        kind = rng.choice([ErrorKind.engine, ErrorKind.too_long])
        return ResultRow(**common, error_kind=kind, error_message=f"{kind} on item {item_id}")
    right = rng.random() < 0.6
    return ResultRow(
        **common, ok=True, answer="1" if right else "2", score=float(right),
        tokens_out=rng.randint(1, 128),
    )  # fmt: skip


def measure(step: Callable[[], Path]) -> dict[str, float]:
    """Seconds, Python heap peak (MiB) and file size (bytes) of one writer.

    Run twice: timed alone, then again under ``tracemalloc`` for its heap peak (tracing
    every allocation slows Python down several times, so the two are kept apart).
    """
    started = time.perf_counter()
    path = step()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "heap_peak_mib": peak / 2**20, "bytes": path.stat().st_size}


def run(
    database: str | None, folder: Path, *, items: int, lanes: int, workers: int, exports: bool
) -> dict[str, Any]:
    """Build the run and measure the report and the exports; the figures."""
    import pyarrow as pa

    url = database or f"sqlite:///{folder / 'bench.db'}"
    db = make_engine(url)
    started = time.perf_counter()
    run_id = build(db, folder, items=items, lanes=lanes, workers=workers)
    built_s = time.perf_counter() - started
    pool = pa.default_memory_pool()
    figures = {"report": measure(lambda: write_report(db, run_id, folder / "report.html"))}
    if exports:
        figures["csv"] = measure(lambda: _export(write_csv, db, run_id, folder / "results.csv"))
        figures["parquet"] = measure(
            lambda: _export(write_parquet, db, run_id, folder / "results.parquet")
        )
        figures["parquet"]["arrow_pool_peak_mib"] = pool.max_memory() / 2**20
    db.dispose()
    return {
        "items": items,
        "lanes": lanes,
        "results": items * lanes,
        "workers": workers,
        "database": url.split(":")[0],
        "build_s": built_s,
        **figures,
    }


def _export(writer: Callable[..., int], db: Engine, run_id: str, path: Path) -> Path:
    writer(db, run_ref=run_id, path=path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite)")
    parser.add_argument("--report-only", action="store_true", help="skip the CSV/Parquet exports")
    parser.add_argument("--output", type=Path, default=Path("bench/results/report.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        document = run(
            args.database, Path(folder), items=args.items, lanes=args.lanes,
            workers=args.workers, exports=not args.report_only,
        )  # fmt: skip
    for name in ("report", "csv", "parquet"):
        step = document.get(name)
        if step is None:
            continue
        print(
            f"{name:>8}: {step['seconds']:.2f} s, heap peak {step['heap_peak_mib']:.1f} MiB, "
            f"{step['bytes'] / 2**20:.2f} MiB"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document))


if __name__ == "__main__":
    main()
