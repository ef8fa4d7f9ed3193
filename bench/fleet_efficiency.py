"""Fleet efficiency: the same items through the whole fleet vs the engine in process.

The fleet side is a real local fleet (embedded broker, SQLite, one worker subprocess
with one torch thread, finalize); the reference is the same engine in this process
(one torch thread) on the same slices and the same batches. The ratio fleet /
in-process throughput is what the fleet's machinery (broker, SQL writes per batch,
task overhead, finalize) costs: 1.0 would be free.

Prints the figures and writes them as JSON (``--output``); never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.fleetbench import LocalFleet, in_process, write_items, write_results
from common.runconfig import Batching, Generation, RunConfig
from common.settings import Settings
from producer.demo_model import build_demo_model
from worker.engines import load_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=192)
    parser.add_argument("--slice-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--engine", choices=["hf", "echo"], default="hf", help="hf: the demo model")
    parser.add_argument("--output", type=Path, default=Path("bench/results/fleet_efficiency.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)
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
        warm = write_items(root / "warm.jsonl", 4)

        engine = load_engine(args.engine, model, dtype="float32", settings=Settings())
        in_process(engine, warm, config)
        reference = in_process(engine, items, config)
        del engine

        with LocalFleet(root / "state", workers=1).started() as fleet:
            fleet.warm_up(warm, config)  # the worker loads the model here, outside the timing
            fleet_run = fleet.run(items, config)

    reference["items_per_s"] = reference["items"] / reference["seconds"]
    fleet_run["items_per_s"] = fleet_run["items"] / fleet_run["seconds"]
    efficiency = fleet_run["items_per_s"] / reference["items_per_s"]
    print(
        f"{args.items} items, engine {args.engine}, slices of {args.slice_size}, "
        f"batch size {args.batch_size}, {args.max_new_tokens} new tokens, 1 torch thread"
    )
    print(f"in-process  {reference['items_per_s']:8.2f} items/s  ({reference['seconds']:.1f} s)")
    print(f"fleet       {fleet_run['items_per_s']:8.2f} items/s  ({fleet_run['seconds']:.1f} s)")
    print(f"efficiency (fleet / in-process): {efficiency:.2f}")
    write_results(
        args.output,
        {
            "config": vars(args) | {"output": str(args.output)},
            "in_process": reference,
            "fleet": fleet_run,
            "efficiency": efficiency,
        },
    )


if __name__ == "__main__":
    main()
