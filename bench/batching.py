"""Batching strategies on the demo model: one-by-one vs fixed batches vs token budget.

Run it as ``python -m bench.batching``. It runs the same prompts (the example file: a
realistic mix of short and long contexts) through the ``hf`` engine on CPU with one
torch thread, three ways:

- one-by-one: the engine called with one prompt at a time (a per-prompt evaluation loop);
- fixed: batches of ``--batch-size`` in input order (lengths mixed, padding wasted);
- budget: longest first, packed by ``--max-batch-tokens`` with the run's padding cap
  ``--max-padding`` (what the workers do).

and, as the literal baseline of the tools our users had, plain ``model.generate`` one
prompt at a time with transformers' defaults (``plain``; ``--skip-plain`` leaves it out).
Defaults are the run's: 64 new tokens, batches of 16. ``--prefill-tokens`` sets the
engine's cap on one prefill pass (0: one pass per batch) to measure what it brings.

The strategies run in turn, ``--rounds`` times (3); each one's figures are its median
round, and the budget / one-by-one ratio of every round is printed too. Prints items/s
and tokens/s for each and the ratios to one-by-one, and writes them as JSON
(``--output``). Figures, never assertions: this machine is small and noisy.

It also prints why the ratio is what it is: the share of padding each strategy
computes, and the prefill bound. On a CPU the prompt's forward pass (prefill) is
compute-bound and costs about the same batched or not; batching amortises the decode
steps and the per-call overhead. ``prefill_bound`` = one-by-one time / one-by-one time
with a single new token: a rough ceiling, low for a length mix dominated by long prompts
and few new tokens (at 16 new tokens it is below 3x on this mix).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common.runconfig import Batching, Generation
from producer.demo_model import build_demo_model
from producer.inputs import InputRecord, RecordReader
from worker.batching import plan_batches
from worker.engines import GenerationParams
from worker.engines.hf import HFEngine, eos_ids, through_first_eos

EXAMPLE = Path(__file__).parents[1] / "examples" / "contexts.jsonl"


def prompts_of(path: Path, limit: int) -> list[str]:
    records = [entry for entry in RecordReader(path) if isinstance(entry, InputRecord)]
    return [record.prompt for record in records[:limit]]


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Fraction of the prompt tokens computed that are padding."""
    real = sum(lengths[index] for batch in batches for index in batch)
    padded = sum(len(batch) * max(lengths[index] for index in batch) for batch in batches)
    return 1 - real / padded


Strategy = tuple[list[list[int]], Callable[[list[int]], int]]


def batch_strategies(
    lengths: list[int], args: argparse.Namespace, run: Callable[[list[int]], int]
) -> dict[str, Strategy]:
    """The three ways of batching the items that ``run`` runs: one by one, fixed batches
    of ``args.batch_size`` in input order, and the worker's token budget (``plan_batches``)."""
    count = len(lengths)
    fixed = [
        list(range(start, min(start + args.batch_size, count)))
        for start in range(0, count, args.batch_size)
    ]
    budget = plan_batches(
        lengths,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_new_tokens=args.max_new_tokens,
        max_padding=args.max_padding,
    )
    return {
        "one_by_one": ([[index] for index in range(count)], run),
        "fixed": (fixed, run),
        "budget": (budget, run),
    }


def run_rounds(strategies: dict[str, Strategy], rounds: int) -> dict[str, list[tuple[float, int]]]:
    """(seconds, tokens out) of each strategy in each round; a round runs them all in turn.

    Interleaving the strategies and keeping each one's median puts a burst of noise from
    the machine into one round of one strategy, not into the whole of one of them.
    """
    timings: dict[str, list[tuple[float, int]]] = {name: [] for name in strategies}
    for round_number in range(1, rounds + 1):
        for name, (batches, run) in strategies.items():
            started = time.perf_counter()
            tokens = sum(run(batch) for batch in batches)
            timings[name].append((time.perf_counter() - started, tokens))
        spent = ", ".join(f"{name} {timings[name][-1][0]:.1f} s" for name in strategies)
        print(f"round {round_number}: {spent}")
    return timings


def figures_of(batches: list[list[int]], timings: list[tuple[float, int]]) -> dict[str, Any]:
    """Items/s and tokens/s of a strategy's median round."""
    seconds, tokens = sorted(timings)[len(timings) // 2]
    items = sum(len(batch) for batch in batches)
    return {
        "items": items,
        "batches": len(batches),
        "seconds": seconds,
        "seconds_per_round": [round(spent, 3) for spent, _ in timings],
        "items_per_s": items / seconds,
        "tokens_per_s": tokens / seconds,
    }


def plain_generate(
    engine: HFEngine, prompts: list[str], params: GenerationParams
) -> Callable[[list[int]], int]:
    """A run of one prompt through ``model.generate`` with transformers' defaults only."""
    ends = eos_ids(engine.model, engine.tokenizer)

    def run(batch: list[int]) -> int:
        (index,) = batch
        encoded = engine.tokenizer([prompts[index]], return_tensors="pt")
        with torch.inference_mode():
            output = engine.model.generate(
                **encoded,
                max_new_tokens=params.max_new_tokens,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        new = output[0, encoded["input_ids"].shape[1] :].tolist()
        return len(through_first_eos(new, ends))  # counted as the engine counts

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=Batching().batch_size)
    parser.add_argument("--max-batch-tokens", type=int, default=Batching().max_batch_tokens)
    parser.add_argument("--max-new-tokens", type=int, default=Generation().max_new_tokens)
    parser.add_argument("--max-padding", type=float, default=Batching().max_padding)
    parser.add_argument("--prefill-tokens", type=int, default=None)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results/batching.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        engine = HFEngine.load(
            str(build_demo_model(Path(folder) / "demo")),
            dtype="float32",
            prefill_tokens=args.prefill_tokens,
        )
    prompts = prompts_of(EXAMPLE, args.items)
    lengths = engine.count_tokens(prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)

    def run(batch: list[int]) -> int:
        completions = engine.generate([prompts[index] for index in batch], params)
        return sum(completion.tokens_out for completion in completions)

    print(
        f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {sum(lengths) / len(lengths):.0f}), "
        f"{args.max_new_tokens} new tokens each, 1 torch thread, "
        f"prefill passes of {engine.prefill_tokens or 'any number of'} positions"
    )
    engine.generate(prompts[:2], params)  # warm-up: first-call allocations out of the timing
    strategies = batch_strategies(lengths, args, run)
    singles = strategies["one_by_one"][0]
    if not args.skip_plain:
        strategies["plain"] = (singles, plain_generate(engine, prompts, params))
    timings = run_rounds(strategies, args.rounds)
    figures = {
        name: figures_of(batches, timings[name]) for name, (batches, _) in strategies.items()
    }
    print(f"median of {args.rounds} rounds:")
    for name, row in figures.items():
        print(
            f"  {name:<12} {row['items_per_s']:8.2f} items/s {row['tokens_per_s']:9.1f} "
            f"tokens/s  ({row['batches']} batches, {row['seconds']:.1f} s)"
        )
    one, fixed, budget = figures["one_by_one"], figures["fixed"], figures["budget"]
    fixed["padding_share"] = padding_share(strategies["fixed"][0], lengths)
    budget["padding_share"] = padding_share(strategies["budget"][0], lengths)
    print(
        f"padding share: fixed {fixed['padding_share']:.0%}, budget {budget['padding_share']:.0%}"
    )
    prefill_params = GenerationParams(max_new_tokens=1)
    started = time.perf_counter()
    for index in range(len(prompts)):
        engine.generate([prompts[index]], prefill_params)
    prefill_s = time.perf_counter() - started
    prefill_bound = one["seconds"] / prefill_s
    print(
        f"prefill alone (one-by-one, 1 new token): {prefill_s:.1f} s = "
        f"{prefill_s / one['seconds']:.0%} of one-by-one; rough ceiling "
        f"~{prefill_bound:.2f}x"
    )
    ratios = {
        "fixed_vs_one_by_one": fixed["items_per_s"] / one["items_per_s"],
        "budget_vs_one_by_one": budget["items_per_s"] / one["items_per_s"],
        "budget_vs_fixed": budget["items_per_s"] / fixed["items_per_s"],
    }
    if "plain" in figures:
        ratios["budget_vs_plain"] = budget["items_per_s"] / figures["plain"]["items_per_s"]
    for name, value in ratios.items():
        print(f"{name:<22} {value:.2f}x")
    per_round = [
        one_s / budget_s
        for (one_s, _), (budget_s, _) in zip(timings["one_by_one"], timings["budget"], strict=True)
    ]
    print("budget_vs_one_by_one per round: " + ", ".join(f"{ratio:.2f}x" for ratio in per_round))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "config": vars(args) | {"output": str(args.output)},
                **figures,
                "budget_vs_one_by_one_per_round": per_round,
                "prefill_one_by_one_s": prefill_s,
                "prefill_bound": prefill_bound,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
