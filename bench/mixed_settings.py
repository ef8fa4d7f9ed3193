"""What per-request settings cost the batching: one set of settings vs a mix, demo model.

Run it as ``python -m bench.mixed_settings``. The same prompts (the example file) go
through the ``hf`` engine on CPU with one torch thread, planned as a worker plans one
slice (``worker.settings_groups``, then longest first under the token budget per group):

- ``uniform``: every request with ``max_tokens`` = ``--max-new-tokens`` (one group);
- ``mixed``: ``max_tokens`` cycling through half, all and one and a half of it (the same
  mean), so a slice holds three groups, each batched on its own;
- ``one_by_one``: the mixed requests one at a time (no batching at all).

The strategies run in turn, ``--rounds`` times; each one's figures are its median
round. Prints items/s, tokens/s and the batches each made, and the ratios mixed /
uniform and mixed / one-by-one; writes them as JSON (``--output``). Figures, never
assertions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.batching import EXAMPLE, prompts_of, run_rounds
from bench.fleetbench import write_results
from common.models import Item
from common.runconfig import Batching, Generation, RunConfig
from producer.demo_model import build_demo_model
from worker.batching import plan_batches
from worker.engines.hf import HFEngine
from worker.settings_groups import SettingsGroup, settings_groups


def planned(
    engine: HFEngine, prompts: list[str], groups: list[SettingsGroup], batching: Batching
) -> list[tuple[SettingsGroup, list[int]]]:
    """Every group's batches, planned as a worker plans them."""
    lengths = engine.count_tokens(prompts)
    plan: list[tuple[SettingsGroup, list[int]]] = []
    for group in groups:
        batches = plan_batches(
            [lengths[index] for index in group.indexes],
            batch_size=batching.batch_size,
            max_batch_tokens=batching.max_batch_tokens,
            max_new_tokens=group.params.max_new_tokens,
            max_padding=batching.max_padding,
        )
        plan += [(group, [group.indexes[position] for position in batch]) for batch in batches]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results/mixed_settings.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        engine = HFEngine.load(str(build_demo_model(Path(folder) / "demo")), device="cpu")
    prompts = prompts_of(EXAMPLE, args.items)
    config = RunConfig(
        engine="hf",
        models=["demo"],
        generation=Generation(max_new_tokens=args.max_new_tokens),
        batching=Batching(batch_size=args.batch_size),
    )
    half = max(1, args.max_new_tokens // 2)
    cycle = [half, args.max_new_tokens, 2 * args.max_new_tokens - half]
    mixed_items = [
        Item(run_id="b", seq=n, custom_id=str(n), line_no=n + 1, params={"max_new_tokens": m})
        for n, m in zip(range(len(prompts)), cycle * len(prompts), strict=False)
    ]
    uniform_items = [
        Item(run_id="b", seq=n, custom_id=str(n), line_no=n + 1) for n in range(len(prompts))
    ]
    plans = {
        "uniform": planned(
            engine, prompts, settings_groups(config, uniform_items), config.batching
        ),
        "mixed": planned(engine, prompts, settings_groups(config, mixed_items), config.batching),
    }
    mixed_groups = settings_groups(config, mixed_items)
    plans["one_by_one"] = [(group, [index]) for group in mixed_groups for index in group.indexes]

    def strategy(name: str) -> tuple[list[list[int]], Callable[[list[int]], int]]:
        params = {tuple(batch): group.params for group, batch in plans[name]}

        def run(batch: list[int]) -> int:
            completions = engine.generate([prompts[i] for i in batch], params[tuple(batch)])
            return sum(completion.tokens_out for completion in completions)

        return [batch for _, batch in plans[name]], run

    timings = run_rounds({name: strategy(name) for name in plans}, args.rounds)
    figures = {name: _figures(len(prompts), len(plans[name]), timings[name]) for name in plans}
    for name, figure in figures.items():
        print(
            f"{name:>10}: {figure['items_per_s']:.2f} items/s, {figure['tokens_per_s']:.1f} "
            f"tokens/s, {figure['batches']} batches"
        )
    ratios = {
        "mixed_over_uniform_tokens_per_s": figures["mixed"]["tokens_per_s"]
        / figures["uniform"]["tokens_per_s"],
        "mixed_over_one_by_one_tokens_per_s": figures["mixed"]["tokens_per_s"]
        / figures["one_by_one"]["tokens_per_s"],
    }
    print("  ".join(f"{name}={value:.2f}" for name, value in ratios.items()))
    write_results(
        args.output,
        {
            "config": vars(args) | {"output": str(args.output), "max_tokens_cycle": cycle},
            "figures": figures,
            "ratios": ratios,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )


def _figures(items: int, batches: int, rounds: list[tuple[float, int]]) -> dict[str, Any]:
    seconds, tokens = sorted(rounds)[len(rounds) // 2]
    return {
        "seconds": seconds,
        "tokens_out": tokens,
        "items_per_s": items / seconds,
        "tokens_per_s": tokens / seconds,
        "batches": batches,
        "rounds_s": [round(spent, 3) for spent, _ in rounds],
    }


if __name__ == "__main__":
    main()
