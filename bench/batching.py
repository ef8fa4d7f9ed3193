"""Batching strategies on the demo model: one-by-one vs fixed batches vs token budget.

Runs the same prompts (the example file: a realistic mix of short and long contexts)
through the ``hf`` engine on CPU with one torch thread, three ways:

- one-by-one: the baseline of the tools our users had;
- fixed: batches of ``--batch-size`` in input order (lengths mixed, padding wasted);
- budget: longest first, packed by ``--max-batch-tokens`` (what the workers do).

Prints items/s and tokens/s for each and the ratios to one-by-one, and writes them as
JSON (``--output``). Figures, never assertions: this machine is small and noisy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from producer.demo_model import build_demo_model
from producer.inputs import InputRecord, RecordReader
from worker.batching import plan_batches
from worker.engines import GenerationParams
from worker.engines.hf import HFEngine

EXAMPLE = Path(__file__).parents[1] / "examples" / "contexts.jsonl"


def prompts_of(path: Path, limit: int) -> list[str]:
    records = [entry for entry in RecordReader(path) if isinstance(entry, InputRecord)]
    return [record.prompt for record in records[:limit]]


def timed(name: str, batches: list[list[int]], run: Callable[[list[int]], int]) -> dict[str, float]:
    started = time.perf_counter()
    tokens = sum(run(batch) for batch in batches)
    elapsed = time.perf_counter() - started
    items = sum(len(batch) for batch in batches)
    figures = {
        "items": items,
        "batches": len(batches),
        "seconds": elapsed,
        "items_per_s": items / elapsed,
        "tokens_per_s": tokens / elapsed,
    }
    print(
        f"{name:<12} {figures['items_per_s']:8.2f} items/s {figures['tokens_per_s']:9.1f} "
        f"tokens/s  ({len(batches)} batches, {elapsed:.1f} s)"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--output", type=Path, default=Path("bench/results/batching.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        engine = HFEngine.load(str(build_demo_model(Path(folder) / "demo")), dtype="float32")
    prompts = prompts_of(EXAMPLE, args.items)
    lengths = engine.count_tokens(prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)

    def run(batch: list[int]) -> int:
        completions = engine.generate([prompts[index] for index in batch], params)
        return sum(completion.tokens_out for completion in completions)

    print(
        f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens, "
        f"{args.max_new_tokens} new tokens each, 1 torch thread"
    )
    one = timed("one-by-one", [[index] for index in range(len(prompts))], run)
    fixed_batches = [
        list(range(start, min(start + args.batch_size, len(prompts))))
        for start in range(0, len(prompts), args.batch_size)
    ]
    fixed = timed("fixed", fixed_batches, run)
    budget = timed(
        "budget",
        plan_batches(
            lengths,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            max_new_tokens=args.max_new_tokens,
        ),
        run,
    )
    ratios = {
        "fixed_vs_one_by_one": fixed["items_per_s"] / one["items_per_s"],
        "budget_vs_one_by_one": budget["items_per_s"] / one["items_per_s"],
        "budget_vs_fixed": budget["items_per_s"] / fixed["items_per_s"],
    }
    for name, value in ratios.items():
        print(f"{name:<22} {value:.2f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "config": vars(args) | {"output": str(args.output)},
                "one_by_one": one,
                "fixed": fixed,
                "budget": budget,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
