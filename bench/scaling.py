"""Scaling: the same items through a local fleet of 1 worker, then of 2 (1 torch thread each).

Each fleet is real (embedded broker, SQLite, worker subprocesses, finalize); workers
are warmed up (model loaded) before the timed run. The ratio 2 workers / 1 worker is
how well slices spread over processes; on a 2-core machine 2.0 is the ceiling.

Prints the figures and writes them as JSON (``--output``); never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.fleetbench import LocalFleet, write_items, write_results
from common.runconfig import Batching, Generation, RunConfig
from producer.demo_model import build_demo_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=192)
    parser.add_argument("--slice-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engine", choices=["hf", "echo"], default="hf", help="hf: the demo model")
    parser.add_argument("--output", type=Path, default=Path("bench/results/scaling.json"))
    args = parser.parse_args()

    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = str(build_demo_model(root / "demo")) if args.engine == "hf" else "echo"
        config = RunConfig(
            engine=args.engine,
            models=[model],
            generation=Generation(max_new_tokens=args.max_new_tokens),
            batching=Batching(batch_size=args.batch_size),
            slice_size=args.slice_size,
            dtype="float32",
        )
        items = write_items(root / "items.jsonl", args.items)
        warm = write_items(root / "warm.jsonl", 8)
        for count in args.workers:
            with LocalFleet(root / f"state-{count}", workers=count).started() as fleet:
                fleet.warm_up(warm, config)
                run = fleet.run(items, config)
            run["items_per_s"] = run["items"] / run["seconds"]
            runs[str(count)] = run
            print(f"{count} worker(s): {run['items_per_s']:8.2f} items/s ({run['seconds']:.1f} s)")

    base = runs[str(args.workers[0])]["items_per_s"]
    speedups = {count: run["items_per_s"] / base for count, run in runs.items()}
    for count, speedup in speedups.items():
        print(f"{count} worker(s) / {args.workers[0]}: {speedup:.2f}x")
    write_results(
        args.output,
        {"config": vars(args) | {"output": str(args.output)}, "runs": runs, "speedup": speedups},
    )


if __name__ == "__main__":
    main()
