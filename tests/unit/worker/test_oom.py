"""OOM back-off: halve on out-of-memory, remember what fitted, fail only what never fits."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence

import pytest
import torch

from common.results import ErrorKind
from worker.batching import batch_cost, iter_batches
from worker.engines import Completion, GenerationParams
from worker.engines.echo import EchoEngine
from worker.inference import generate_isolated
from worker.oom import HostMemoryExceeded, MemoryBudget, is_out_of_memory

PARAMS = GenerationParams(max_new_tokens=2)


def prompts(count: int, words: int = 3) -> list[str]:
    return [" ".join(f"w{index}x{word}" for word in range(words)) for index in range(count)]


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(HostMemoryExceeded("guard"))
    assert not is_out_of_memory(RuntimeError("other"))


def test_budget_learns_from_oom_and_fits() -> None:
    budget = MemoryBudget()
    assert budget.limit(1000) == 1000
    budget.record_fit(400)
    budget.record_oom(800)
    assert budget.limit(1000) == 400
    budget.record_fit(600)
    assert budget.limit(1000) == 600
    budget.record_fit(900)  # above the ceiling: not trusted
    assert budget.limit(1000) == 600
    assert budget.limit(100) == 100  # a run asking for less gets less
    budget.record_oom(500)  # a smaller failure drops what fitted above it
    assert budget.limit(1000) == 250


def test_oom_halves_until_every_item_completes() -> None:
    engine = EchoEngine(oom_above=20)  # 4 rows x (3 words + 2) = 20 fits, 8 rows does not
    batch = prompts(8)
    lengths = engine.count_tokens(batch)
    memory = MemoryBudget()
    outcomes = generate_isolated(engine, batch, PARAMS, lengths=lengths, memory=memory)
    assert all(outcome.completion is not None for outcome in outcomes)
    assert [outcome.batch_size for outcome in outcomes] == [4] * 8
    assert [o.completion.text for o in outcomes if o.completion] == [
        " ".join(prompt.split()[-2:]) for prompt in batch
    ]
    assert memory.ceiling == 40
    assert memory.limit(10_000) == 20


def test_item_too_big_alone_fails_oom_others_continue() -> None:
    engine = EchoEngine(oom_above=20)
    batch = [*prompts(3), " ".join(["big"] * 30)]
    memory = MemoryBudget()
    outcomes = generate_isolated(
        engine, batch, PARAMS, lengths=engine.count_tokens(batch), memory=memory
    )
    assert [outcome.error_kind for outcome in outcomes] == [None, None, None, ErrorKind.oom]
    assert outcomes[3].error_message is not None
    assert "OutOfMemoryError" in outcomes[3].error_message


def test_host_memory_guard_backs_off_like_cuda() -> None:
    engine = EchoEngine()
    batch = prompts(8)
    memory = MemoryBudget(guard_tokens=20)
    outcomes = generate_isolated(
        engine, batch, PARAMS, lengths=engine.count_tokens(batch), memory=memory
    )
    assert all(outcome.completion is not None for outcome in outcomes)
    assert {outcome.batch_size for outcome in outcomes} == {4}
    assert memory.limit(10_000) == 20


def test_iter_batches_replans_with_a_lowered_budget() -> None:
    memory = MemoryBudget()
    lengths = {index: 3 for index in range(12)}
    seen = []
    for batch in iter_batches(
        lengths, batch_size=8, max_new_tokens=2, budget=lambda: memory.limit(10_000)
    ):
        seen.append(batch)
        if len(seen) == 1:
            memory.record_oom(batch_cost([3] * len(batch), 2))
    assert [len(batch) for batch in seen] == [8, 4]
    assert sorted(index for batch in seen for index in batch) == list(range(12))
    memory = MemoryBudget()
    memory.record_oom(40)
    sizes = [
        len(batch)
        for batch in iter_batches(
            lengths, batch_size=8, max_new_tokens=2, budget=lambda: memory.limit(10_000)
        )
    ]
    assert sizes == [4, 4, 4]


@pytest.mark.parametrize("spec", ["oom_above=0", "oom_above=x", "oom_above=-3"])
def test_echo_oom_option_validated(spec: str) -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="oom_above"):
        EchoEngine.from_spec(spec)


def test_runtime_forgets_the_budget_when_the_model_changes() -> None:
    from sqlalchemy import create_engine

    from common.settings import Settings
    from worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(
        settings=Settings(), db=create_engine("sqlite://"), memory=MemoryBudget(guard_tokens=99)
    )
    runtime.engine_for("echo", "echo", "auto")
    runtime.memory.record_oom(40)
    runtime.engine_for("echo", "echo", "auto")  # the same model: the budget stays
    assert runtime.memory.limit(1000) == 20
    runtime.engine_for("echo", "delay=0", "auto")
    assert runtime.memory.limit(1000) == 1000
    assert runtime.memory.guard_tokens == 99


class _HoldsMemory:
    """Stands for a failed batch's tensors: alive while anything references the call's frame."""


class _FramesRememberingEngine(EchoEngine):
    """Runs out of memory on more than one prompt while a local holds a _HoldsMemory, and
    notes, at each later call, whether the failed call's object was still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_batch: weakref.ref[_HoldsMemory] | None = None
        self.alive_at_retry: list[bool] = []

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        if self.failed_batch is not None:
            gc.collect()  # what free_memory does; cycles through frames need the collector
            self.alive_at_retry.append(self.failed_batch() is not None)
        held = _HoldsMemory()
        if len(prompts) > 1:
            self.failed_batch = weakref.ref(held)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().generate(prompts, params)


def test_a_failed_batch_is_released_before_its_halves_run() -> None:
    # On a GPU, a batch that ran out of memory must give its memory back before the
    # halves are tried, or they fail for the memory their parent still holds.
    engine = _FramesRememberingEngine()
    outcomes = generate_isolated(engine, prompts(2), PARAMS, memory=MemoryBudget())
    assert all(outcome.completion is not None for outcome in outcomes)
    assert engine.alive_at_retry == [False, False]
