"""Batching vision items on the demo vision model: one-by-one vs fixed vs token budget.

Run it as ``python -m bench.vision_batching``. It builds the demo vision model (a tiny
Llava, ``fleet demo-model --vision``), writes ``--items`` pictures-and-question records
with a mix of image counts (0 to ``--max-images`` images each, 16 image tokens per
image) into a temporary folder, prepares them as a worker does (``worker.prompting``:
chat template, images decoded, lengths with the image tokens), and generates through
the ``hf`` engine on CPU with one torch thread three ways:

- one-by-one: one item per ``generate`` call;
- fixed: batches of ``--batch-size`` in input order (lengths mixed);
- budget: longest first, packed by ``--max-batch-tokens`` with the padding cap
  ``--max-padding`` (what the workers do).

The strategies run in turn, ``--rounds`` times; each one's figures are its median round.
Prints items/s and tokens/s and the ratios to one-by-one, and writes them as JSON
(``--output``, default ``bench/results/vision_batching.json``). Figures, never
assertions. Each strategy decodes its items' images in its own calls, as a worker does.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.batching import batch_strategies, figures_of, padding_share, run_rounds
from bench.fleetbench import write_results
from common.runconfig import Batching, Generation, RunConfig
from producer.demo_vision import build_demo_vision_model
from worker.engines import GenerationParams
from worker.engines.hf_vision import HFVisionEngine
from worker.prompting import prepare

QUESTIONS = [
    "What colour is the shape?",
    "Describe the picture in one short sentence.",
    "How many shapes are there, and which one is the largest of them all?",
    "Compare the pictures: which colours appear in more than one of them, and where?",
]


def write_items(folder: Path, count: int, max_images: int, seed: int) -> list[dict[str, Any]]:
    """``count`` records with 0 to ``max_images`` generated pictures each."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for index in range(count):
        paths = []
        for image_index in range(rng.randint(0, max_images)):
            image = Image.new("RGB", (48, 48), (240, 240, 240))
            colour = tuple(rng.randrange(256) for _ in range(3))
            x, y = rng.randrange(24), rng.randrange(24)
            ImageDraw.Draw(image).rectangle((x, y, x + 20, y + 20), fill=colour)
            path = folder / f"{index}-{image_index}.png"
            image.save(path)
            paths.append(str(path))
        records.append({"id": index, "images": paths, "prompt": rng.choice(QUESTIONS)})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--max-images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=Batching().batch_size)
    parser.add_argument("--max-batch-tokens", type=int, default=Batching().max_batch_tokens)
    parser.add_argument("--max-new-tokens", type=int, default=Generation().max_new_tokens)
    parser.add_argument("--max-padding", type=float, default=Batching().max_padding)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("bench/results/vision_batching.json"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        engine = HFVisionEngine.load(
            str(build_demo_vision_model(Path(folder) / "demo")), dtype="float32"
        )
        records = write_items(Path(folder), args.items, args.max_images, args.seed)
        config = RunConfig(
            models=["demo-vision"], generation=Generation(max_new_tokens=args.max_new_tokens)
        )
        prepared = prepare(engine, [(record, record["prompt"]) for record in records], config)
        assert not prepared.failed, prepared.failed
        prompts, lengths = prepared.prompts, prepared.lengths
        params = GenerationParams(max_new_tokens=args.max_new_tokens)

        def run(batch: list[int]) -> int:
            completions = engine.generate([prompts[index] for index in batch], params)
            return sum(completion.tokens_out for completion in completions)

        counts = [len(record["images"]) for record in records]
        print(
            f"{len(prompts)} items, {min(counts)}-{max(counts)} images each "
            f"({sum(counts)} in all), prompts of {min(lengths)}-{max(lengths)} tokens "
            f"(mean {sum(lengths) / len(lengths):.0f}, image tokens included), "
            f"{args.max_new_tokens} new tokens each, 1 torch thread"
        )
        run([0, 1])  # warm-up: first-call allocations out of the timing
        strategies = batch_strategies(lengths, args, run)
        timings = run_rounds(strategies, args.rounds)
    figures = {
        name: figures_of(batches, timings[name]) for name, (batches, _) in strategies.items()
    }
    figures["fixed"]["padding_share"] = padding_share(strategies["fixed"][0], lengths)
    figures["budget"]["padding_share"] = padding_share(strategies["budget"][0], lengths)
    print(f"median of {args.rounds} rounds:")
    for name, row in figures.items():
        print(
            f"  {name:<12} {row['items_per_s']:8.2f} items/s {row['tokens_per_s']:9.1f} "
            f"tokens/s  ({row['batches']} batches, {row['seconds']:.1f} s)"
        )
    one = figures["one_by_one"]
    ratios = {
        "fixed_vs_one_by_one": figures["fixed"]["items_per_s"] / one["items_per_s"],
        "budget_vs_one_by_one": figures["budget"]["items_per_s"] / one["items_per_s"],
    }
    for name, value in ratios.items():
        print(f"{name:<22} {value:.2f}x")
    print(
        f"padding share: fixed {figures['fixed']['padding_share']:.0%}, "
        f"budget {figures['budget']['padding_share']:.0%}"
    )
    write_results(
        args.output,
        {
            "config": vars(args) | {"output": str(args.output)},
            "images_per_item": counts,
            "prompt_tokens": lengths,
            **figures,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
