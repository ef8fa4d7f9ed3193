"""The GPU path measured: the ``hf`` engine's batches against the field's, the fleet, OOM, bf16.

Run it as ``python -m bench.gpu`` on a CUDA machine (nothing is downloaded). It builds a
random-weight Llama of about 1B parameters (hidden 2048, 16 layers, 32 heads, 8 KV heads)
with the demo tokenizer, in bfloat16, and 1,024 prompts of 40 to 1,500 tokens, then, with
128 new tokens, greedy:

- ``engine``: the ``hf`` engine's token-budget batches, in process, the slices and batches
  a worker would make (``worker/batching.py``);
- ``plain``: ``model.generate`` with transformers' defaults in fixed batches of 16, in
  input order;
- ``continuous``: transformers' continuous batching (``model.generate_batch``'s manager:
  paged attention, requests scheduled token by token);
- ``fleet``: the fleet end to end (embedded broker, SQLite, one ``celery -A worker worker``
  process) on the items ``engine`` ran: fleet / in-process is what the machinery costs;
- ``oom``: a real CUDA out-of-memory: the bench holds most free memory, a batch that
  cannot fit is halved by the worker's back-off (``worker/inference.py``) until it does,
  every item gets its answer and the remembered budget is reported;
- ``dtypes``: bfloat16 against float32 greedy output on 64 prompts.

Items/s, tokens/s (tokens out) and the GPU memory peak of each part go into one JSON file
(``--output``). Each part runs under a time cap and records what it left out when the cap
hits; a part that fails is recorded as failed and the others still run. The whole bench
is sized to finish in under 8 minutes on an H200. ``--device cpu --tiny`` runs the same
code on a toy model and a few prompts in about a minute: ``tests/integration/test_gpu_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench.fleetbench import LocalFleet
from bench.gpu_budget import CAPS, Budget, gpu_peak, run_part, throughput
from bench.gpu_model import FULL, TINY, build_model, make_prompts

#: The H200 shape and the CPU toy; any of these can be given on the command line.
DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {
        "prompts": 1024,
        "min_tokens": 40,
        "max_tokens": 1500,
        "max_new_tokens": 128,
        "fixed_batch": 16,
        "batch_size": 64,
        "max_batch_tokens": 131072,
        "slice_size": 256,
        "dtype_prompts": 64,
        "oom_rows": 64,
        "oom_new_tokens": 16,
        "budget_s": 420.0,
    },
    "tiny": {
        "prompts": 12,
        "min_tokens": 40,
        "max_tokens": 200,
        "max_new_tokens": 8,
        "fixed_batch": 4,
        "batch_size": 4,
        "max_batch_tokens": 4096,
        "slice_size": 6,
        "dtype_prompts": 6,
        "oom_rows": 8,
        "oom_new_tokens": 4,
        "budget_s": 300.0,
    },
}


@dataclass
class Setup:
    """What every part shares: the options, the loaded engine, the prompts, the clock."""

    args: argparse.Namespace
    device: torch.device
    model_path: Path
    engine: Any  # worker.engines.hf.HFEngine
    prompts: list[str]
    lengths: list[int]
    budget: Budget
    workdir: Path
    #: Each item's answer from the ``engine`` part, to compare the others with.
    engine_texts: dict[int, str]
    #: How many items (whole slices, in input order) the ``engine`` part ran, how fast.
    engine_done: int = 0
    engine_items_per_s: float | None = None

    def params(self, max_new_tokens: int | None = None) -> Any:
        from worker.engines import GenerationParams

        return GenerationParams(max_new_tokens=max_new_tokens or self.args.max_new_tokens)

    def plan(self, indexes: list[int], max_new_tokens: int | None = None) -> list[list[int]]:
        """``indexes`` in the batches a worker would make of them (longest first, budget)."""
        from worker.batching import plan_batches

        args = self.args
        planned = plan_batches(
            [self.lengths[index] for index in indexes],
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            max_new_tokens=max_new_tokens or args.max_new_tokens,
            max_padding=args.max_padding,
        )
        return [[indexes[position] for position in batch] for batch in planned]


def part_engine(setup: Setup) -> dict[str, Any]:
    """(a) The engine's token-budget batches, slice by slice as a worker plans them."""
    cap = setup.budget.cap(CAPS["engine"])
    params, size, count = setup.params(), setup.args.slice_size, len(setup.prompts)
    tokens, batches = 0, 0
    figures: dict[str, Any] = {}
    with gpu_peak(setup.device, figures):
        started = time.perf_counter()
        for start in range(0, count, size):
            if cap.spent():
                break
            for batch in setup.plan(list(range(start, min(start + size, count)))):
                completions = setup.engine.generate([setup.prompts[i] for i in batch], params)
                for index, completion in zip(batch, completions, strict=True):
                    setup.engine_texts[index] = completion.text
                    tokens += completion.tokens_out
                batches += 1
        seconds = time.perf_counter() - started
    setup.engine_done = done = len(setup.engine_texts)
    figures |= throughput(items=count, done=done, seconds=seconds, tokens_out=tokens, cap=cap)
    setup.engine_items_per_s = figures["items_per_s"]
    return figures | {"batches": batches}


def part_plain(setup: Setup) -> dict[str, Any]:
    """(b) ``model.generate`` with transformers' defaults, fixed batches in input order."""
    from worker.engines.hf import eos_ids, through_first_eos

    cap = setup.budget.cap(CAPS["plain"])
    engine, size = setup.engine, setup.args.fixed_batch
    ends = eos_ids(engine.model, engine.tokenizer)
    texts: dict[int, str] = {}
    tokens = 0
    figures: dict[str, Any] = {}
    with gpu_peak(setup.device, figures):
        started = time.perf_counter()
        for start in range(0, len(setup.prompts), size):
            if cap.spent():
                break
            batch = setup.prompts[start : start + size]
            encoded = engine.tokenizer(batch, return_tensors="pt", padding=True).to(engine.device)
            with torch.inference_mode():
                output = engine.model.generate(
                    **encoded,
                    max_new_tokens=setup.args.max_new_tokens,
                    do_sample=False,
                    pad_token_id=engine.tokenizer.pad_token_id,
                )
            width = encoded["input_ids"].shape[1]
            for offset, row in enumerate(output[:, width:].tolist()):
                new = through_first_eos(row, ends)  # counted as the engine counts
                texts[start + offset] = engine.tokenizer.decode(new, skip_special_tokens=True)
                tokens += len(new)
        seconds = time.perf_counter() - started
    count = len(setup.prompts)
    return (
        throughput(items=count, done=len(texts), seconds=seconds, tokens_out=tokens, cap=cap)
        | figures
        | same_as_engine(setup, texts)
    )


def part_continuous(setup: Setup) -> dict[str, Any]:
    """(c) transformers' continuous batching: every request queued at once, scheduled by
    its manager (the loop of ``model.generate_batch``, with a time cap between results)."""
    from transformers import GenerationConfig

    from worker.engines.hf import eos_ids, through_first_eos

    cap = setup.budget.cap(CAPS["continuous"])
    engine = setup.engine
    ends = eos_ids(engine.model, engine.tokenizer)
    inputs = engine.tokenizer(setup.prompts)["input_ids"]
    config = GenerationConfig(
        max_new_tokens=setup.args.max_new_tokens,
        do_sample=False,
        eos_token_id=engine.model.generation_config.eos_token_id,
        pad_token_id=engine.tokenizer.pad_token_id,
    )
    results: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    with gpu_peak(setup.device, figures), torch.inference_mode():
        set_up = time.perf_counter()
        with engine.model.continuous_batching_context_manager(
            generation_config=config,
            continuous_batching_config=_cpu_cache(setup, inputs),
            block=True,
            timeout=10,
        ) as manager:
            figures["setup_s"] = time.perf_counter() - set_up  # cache, CUDA graphs: untimed
            started = time.perf_counter()
            ids = manager.add_requests(inputs=inputs, max_new_tokens=setup.args.max_new_tokens)
            while len(results) < len(ids) and not cap.spent():
                result = manager.get_result(timeout=min(1.0, cap.left() + 0.01))
                if result is None and not manager.is_running():
                    raise RuntimeError("continuous batching's generation thread stopped")
                if result is not None and result.is_finished():
                    results[result.request_id] = result
            seconds = time.perf_counter() - started
    texts: dict[int, str] = {}
    tokens = failed = 0
    for index, request_id in enumerate(ids):
        result = results.get(request_id)
        if result is None or result.error is not None:
            failed += result is not None
            continue
        new = through_first_eos(list(result.generated_tokens), ends)
        texts[index] = engine.tokenizer.decode(new, skip_special_tokens=True)
        tokens += len(new)
    count = len(setup.prompts)
    return (
        throughput(items=count, done=len(texts), seconds=seconds, tokens_out=tokens, cap=cap)
        | {"failed": failed, "attn_implementation": engine.model.config._attn_implementation}
        | figures
        | same_as_engine(setup, texts)
    )


def _cpu_cache(setup: Setup, inputs: list[list[int]]) -> Any:
    """On a CPU, a paged cache of the blocks these requests need; on a GPU, transformers'
    own sizing (a share of the free memory). Sized for a GPU, a CPU spends most of a
    minute allocating it."""
    if setup.device.type == "cuda":
        return None
    from transformers import ContinuousBatchingConfig

    page = ContinuousBatchingConfig.page_size
    longest = max(len(ids) for ids in inputs) + setup.args.max_new_tokens
    return ContinuousBatchingConfig(num_blocks=len(inputs) * -(-longest // page) + 4)


def part_fleet(setup: Setup) -> dict[str, Any]:
    """(d) The fleet end to end on the items ``engine`` ran: embedded broker, SQLite, one
    worker process, from the run's creation to finalize; the worker's start is untimed."""
    from bench.gpu_fleet import run_capped, run_config, write_prompts

    cap = setup.budget.cap(CAPS["fleet"])
    items = setup.engine_done or len(setup.prompts)
    config = run_config(setup.args, setup.model_path)
    work = setup.workdir / "fleet"
    work.mkdir()
    inputs = write_prompts(work / "items.jsonl", setup.prompts[:items])
    warm = write_prompts(work / "warm.jsonl", setup.prompts[:2])
    threads = 1 if setup.device.type == "cpu" else 4
    started = time.perf_counter()
    with LocalFleet(work / "state", workers=1, torch_threads=threads).started() as fleet:
        fleet.warm_up(warm, config)  # the worker loads the model here
        start_s = time.perf_counter() - started
        figures = run_capped(fleet, inputs, config, cap, setup.device)
    figures |= {"worker_start_and_warm_up_s": start_s}
    if setup.engine_items_per_s and figures["items_per_s"]:
        figures["fleet_vs_engine"] = figures["items_per_s"] / setup.engine_items_per_s
    return figures


def same_as_engine(setup: Setup, texts: dict[int, str]) -> dict[str, Any]:
    """The share of answers identical to the ``engine`` part's, over items both answered."""
    both = [index for index in texts if index in setup.engine_texts]
    same = sum(texts[index] == setup.engine_texts[index] for index in both)
    return {"compared_with_engine": len(both), "same_as_engine": same / len(both) if both else None}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="a toy model and a few prompts")
    parser.add_argument("--dtype", default=None, help="bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--max-padding", type=float, default=0.25)
    for name, value in DEFAULTS["full"].items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=None, help=f"default {value}")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    for name, value in DEFAULTS["tiny" if args.tiny else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    default_output = "gpu-tiny.json" if args.tiny else f"gpu-{args.device}.json"
    args.output = args.output or Path("bench/results") / default_output
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu (with --tiny for a quick run)")
    return args


def environment(device: torch.device) -> dict[str, Any]:
    from importlib.metadata import version

    packages = ("transformers", "huggingface-hub", "tokenizers", "celery", "kombu", "sqlalchemy")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: version(name) for name in packages},
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_total_bytes": torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else None,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    args = parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the fleet's worker must not take a GPU either
    # Nothing may be fetched, not even a kernel (read when huggingface_hub is imported,
    # which is below: nothing this module imports at its top imports it).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(device),
        "config": vars(args) | {"output": str(args.output), "caps_s": CAPS},
    }
    try:
        with tempfile.TemporaryDirectory() as folder:
            setup = prepare(args, device, Path(folder), report)
            report["parts"] = run_parts(setup)
    except Exception as error:
        # One run on a lent machine may be all there is: keep what it found.
        report["error"] = f"{type(error).__name__}: {error}"
        report["traceback"] = traceback.format_exc(limit=8)
        raise
    finally:
        report["ratios"] = ratios(report.get("parts", {}))
        report["total_s"] = time.perf_counter() - started
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, default=str))
        print(json.dumps(report["ratios"], indent=2))
        print(f"written to {args.output}")


def prepare(
    args: argparse.Namespace, device: torch.device, workdir: Path, report: dict[str, Any]
) -> Setup:
    """Build and load the model, make the prompts, warm the engine up: what parts share."""
    from common.settings import Settings
    from worker.engines.hf import HFEngine

    budget = Budget(args.budget_s)
    report["model"] = build_model(
        workdir / "model", TINY if args.tiny else FULL, device=args.device
    )
    engine = HFEngine.load(
        report["model"]["path"],
        dtype=args.dtype,
        device=args.device,
        prefill_tokens=Settings().prefill_tokens,
    )
    prompts = make_prompts(
        engine.tokenizer, count=args.prompts, min_tokens=args.min_tokens, max_tokens=args.max_tokens
    )
    lengths = engine.count_tokens(prompts)
    report["prompts"] = {
        "count": len(prompts),
        "min_tokens": min(lengths),
        "max_tokens": max(lengths),
        "mean_tokens": sum(lengths) / len(lengths),
    }
    setup = Setup(
        args, device, Path(report["model"]["path"]), engine, prompts, lengths, budget, workdir, {}
    )
    engine.generate(prompts[:2], setup.params())  # first-call set-up out of the timings
    return setup


def run_parts(setup: Setup) -> dict[str, Any]:
    from bench.gpu_checks import part_dtypes, part_oom
    from worker.oom import free_memory

    parts: dict[str, Any] = {}
    steps: tuple[tuple[str, Callable[[Setup], dict[str, Any]]], ...] = (
        ("engine", part_engine),
        ("plain", part_plain),
        ("continuous", part_continuous),
        ("fleet", part_fleet),
        ("oom", part_oom),
        ("dtypes", part_dtypes),
    )
    for name, part in steps:
        if setup.budget.total.spent():
            parts[name] = {"skipped": "the bench's whole time budget was spent"}
            continue
        run_part(name, partial(part, setup), parts)
        free_memory()  # what one part cached is not the next one's to count
    return parts


def ratios(parts: dict[str, Any]) -> dict[str, float | None]:
    """Items/s of one part over another's, where both ran."""

    def rate(name: str) -> float | None:
        value = parts.get(name, {}).get("items_per_s")
        return float(value) if value else None

    def over(top: str, bottom: str) -> float | None:
        high, low = rate(top), rate(bottom)
        return high / low if high and low else None

    return {
        "fleet_vs_engine": over("fleet", "engine"),
        "engine_vs_plain": over("engine", "plain"),
        "engine_vs_continuous": over("engine", "continuous"),
        "continuous_vs_plain": over("continuous", "plain"),
    }


if __name__ == "__main__":
    main()
