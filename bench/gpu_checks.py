"""The GPU bench's two checks: a real out-of-memory backed off, and bf16 against fp32.

``oom``: on a GPU the bench first measures what a batch of an eighth of the rows needs,
then holds all free memory but about one and a half times that, and runs the whole batch
through ``worker.inference.generate_isolated``, the worker's own back-off: the batch
runs out of memory, is halved until it fits, every item gets its answer, and the
:class:`~worker.oom.MemoryBudget` remembers what fitted. On a CPU nothing can run out of
memory safely, so the host-memory guard (``FLEET_MEMORY_GUARD_TOKENS``) refuses the batch
instead: the same back-off, entered through ``MemoryError`` instead of CUDA's error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from bench.gpu_budget import CAPS
from worker.batching import batch_cost, plan_batches
from worker.engines import Completion, GenerationParams
from worker.inference import generate_isolated
from worker.oom import MemoryBudget, free_memory

if TYPE_CHECKING:
    from bench.gpu import Setup

#: Memory left free beyond the measured need of the batch that should fit.
_MARGIN_BYTES = 256 << 20


class CountedEngine:
    """An engine that notes the size and outcome of every call, then passes it on."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name = engine.name
        self.max_context = engine.max_context
        self.calls: list[tuple[int, str]] = []

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return list(self.engine.count_tokens(prompts))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return str(self.engine.render_chat(messages))

    def truncate(self, prompts: Sequence[str], max_tokens: int, side: str) -> list[str]:
        return list(self.engine.truncate(prompts, max_tokens, side))

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        try:
            completions: list[Completion] = self.engine.generate(prompts, params)
        except Exception as error:
            self.calls.append((len(prompts), type(error).__name__))
            raise
        self.calls.append((len(prompts), "ok"))
        return completions


class NotedBudget(MemoryBudget):
    """A :class:`MemoryBudget` that also keeps the cost of every batch that ran out of memory
    (or that the host-memory guard refused: those never reach the engine)."""

    def __init__(self, guard_tokens: int | None = None) -> None:
        super().__init__(guard_tokens=guard_tokens)
        self.out_of_memory: list[int] = []

    def record_oom(self, cost: int) -> None:
        self.out_of_memory.append(cost)
        super().record_oom(cost)


def part_oom(setup: Setup) -> dict[str, Any]:
    """The longest ``--oom-rows`` prompts in one batch that cannot fit; back-off to answers."""
    args = setup.args
    order = sorted(range(len(setup.prompts)), key=lambda index: -setup.lengths[index])
    rows = order[: min(args.oom_rows, len(order))]
    prompts = [setup.prompts[index] for index in rows]
    lengths = [setup.lengths[index] for index in rows]
    params = setup.params(args.oom_new_tokens)
    engine = CountedEngine(setup.engine)
    figures: dict[str, Any] = {"rows": len(rows), "new_tokens": args.oom_new_tokens}
    started = time.perf_counter()
    if setup.device.type == "cuda":
        memory = NotedBudget()
        probe = max(len(prompts) // 8, 1)
        need = _need_bytes(setup.engine, prompts[:probe], params, setup.device)
        leave = int(need * 1.5) + _MARGIN_BYTES
        figures |= {"source": "cuda", "probe_rows": probe, "probe_need_bytes": need}
        with _holding_all_but(leave, setup.device, figures):
            outcomes = generate_isolated(engine, prompts, params, lengths=lengths, memory=memory)
    else:
        guard = batch_cost(lengths[: max(len(prompts) // 4, 1)], params.max_new_tokens)
        memory = NotedBudget(guard_tokens=guard)
        figures |= {"source": "host_memory_guard", "guard_tokens": guard}
        outcomes = generate_isolated(engine, prompts, params, lengths=lengths, memory=memory)
    limit = memory.limit(args.max_batch_tokens)
    next_batch = plan_batches(
        lengths,
        batch_size=args.batch_size,
        max_batch_tokens=limit,
        max_new_tokens=params.max_new_tokens,
        max_padding=args.max_padding,
    )[0]
    answered = sum(outcome.completion is not None for outcome in outcomes)
    return figures | {
        "seconds": time.perf_counter() - started,
        "calls": engine.calls,
        "out_of_memory_batches_tokens": memory.out_of_memory,
        "answered": answered,
        "all_answered": answered == len(rows),
        "errors": sorted({o.error_kind for o in outcomes if o.error_kind is not None}),
        "answered_in_batches_of": sorted({outcome.batch_size for outcome in outcomes}),
        "budget_largest_fit_tokens": memory.largest_fit,
        "budget_ceiling_tokens": memory.ceiling,
        "budget_limit_tokens": limit,
        "requested_batch_tokens": args.max_batch_tokens,
        "next_batch_rows": len(next_batch),
    }


def _need_bytes(engine: Any, prompts: list[str], params: GenerationParams, device: Any) -> int:
    """Peak GPU memory a batch of ``prompts`` takes beyond what is allocated already."""
    free_memory()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    engine.generate(prompts, params)
    need = torch.cuda.max_memory_allocated(device) - before
    free_memory()
    return int(need)


@contextmanager
def _holding_all_but(leave: int, device: Any, figures: dict[str, Any]) -> Iterator[None]:
    """Allocate every free byte of the GPU but ``leave`` for the duration of the block."""
    free_memory()
    free, _ = torch.cuda.mem_get_info(device)
    hold = torch.empty(max(free - leave, 0), dtype=torch.uint8, device=device)
    figures |= {"held_bytes": hold.numel(), "left_free_bytes": torch.cuda.mem_get_info(device)[0]}
    try:
        yield
    finally:
        del hold
        free_memory()


def part_dtypes(setup: Setup) -> dict[str, Any]:
    """The first ``--dtype-prompts`` prompts, the same batches, in bfloat16 and in float32:
    the share of greedy answers that are identical."""
    from common.settings import Settings
    from worker.engines.hf import HFEngine

    cap = setup.budget.cap(CAPS["dtypes"])
    indexes = list(range(min(setup.args.dtype_prompts, len(setup.prompts))))
    batches = setup.plan(indexes)
    other_dtype = "float32" if setup.args.dtype != "float32" else "bfloat16"
    other = HFEngine.load(
        str(setup.model_path),
        dtype=other_dtype,
        device=str(setup.device),
        prefill_tokens=Settings().prefill_tokens,
    )
    answers = {
        setup.args.dtype: _answers(setup, setup.engine, batches, cap),
        other_dtype: _answers(setup, other, batches, cap),
    }
    del other
    first, second = answers.values()
    both = [index for index in first if index in second]
    same = sum(first[index] == second[index] for index in both)
    return {
        "prompts": len(indexes),
        "compared": len(both),
        "identical": same,
        "identical_share": same / len(both) if both else None,
        "capped": len(both) < len(indexes),
    }


def _answers(setup: Setup, engine: Any, batches: list[list[int]], cap: Any) -> dict[int, str]:
    texts: dict[int, str] = {}
    for batch in batches:
        if cap.spent():
            break
        completions = engine.generate([setup.prompts[index] for index in batch], setup.params())
        texts.update(zip(batch, (completion.text for completion in completions), strict=True))
    return texts
