"""``worker.inference.generate_isolated``: a poison item fails alone, found by bisection."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from common.results import MAX_ERROR_CHARS
from worker.engines import Completion, Engine, EngineBroken, GenerationParams
from worker.engines.echo import EchoEngine
from worker.inference import Outcome, error_kind, generate_isolated

MARKER = "POISON"
PARAMS = GenerationParams(max_new_tokens=2)


@dataclass
class CountingEngine:
    """Wraps an engine and records the size of every batch it is asked to generate."""

    inner: Engine
    calls: list[int] = field(default_factory=list)
    name: str = "counting"
    max_context: int = 1_000_000

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(prompts)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, params)


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError."""


def prompts_with_poison(count: int, poisoned: set[int]) -> list[str]:
    return [
        f"item {index} says word{index}" + (f" {MARKER}" if index in poisoned else "")
        for index in range(count)
    ]


def echo_answer(prompt: str) -> str:
    return " ".join(prompt.split()[-PARAMS.max_new_tokens :])


def poisoned_engine() -> CountingEngine:
    return CountingEngine(EchoEngine(fail_marker=MARKER))


def assert_ok(outcome: Outcome, prompt: str) -> None:
    assert outcome.error_kind is None
    assert outcome.error_message is None
    assert outcome.completion is not None
    assert outcome.completion.text == echo_answer(prompt)
    assert outcome.latency_s >= 0.0


def assert_poisoned(outcome: Outcome) -> None:
    assert outcome.completion is None
    assert outcome.error_kind == "engine"
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("PoisonItem: ")
    assert MARKER in outcome.error_message
    assert outcome.batch_size == 1


def test_clean_batch_is_one_call() -> None:
    engine = poisoned_engine()
    prompts = prompts_with_poison(8, set())
    outcomes = generate_isolated(engine, prompts, PARAMS)
    assert engine.calls == [8]
    for outcome, prompt in zip(outcomes, prompts, strict=True):
        assert_ok(outcome, prompt)
        assert outcome.batch_size == 8


def test_one_poison_item_in_eight_fails_alone() -> None:
    engine = poisoned_engine()
    prompts = prompts_with_poison(8, {3})
    outcomes = generate_isolated(engine, prompts, PARAMS)
    assert len(outcomes) == 8
    assert_poisoned(outcomes[3])
    for index in (0, 1, 2, 4, 5, 6, 7):
        assert_ok(outcomes[index], prompts[index])
    assert [outcome.completion.text for outcome in outcomes if outcome.completion] == [
        f"says word{index}" for index in (0, 1, 2, 4, 5, 6, 7)
    ]
    # 8 fails -> [0..3] fails -> [0,1] ok, [2,3] fails -> [2] ok, [3] fails; then [4..7] ok.
    assert engine.calls == [8, 4, 2, 2, 1, 1, 4]
    assert [outcome.batch_size for outcome in outcomes] == [2, 2, 1, 1, 4, 4, 4, 4]


def test_two_poison_items_fail_and_the_rest_succeed() -> None:
    engine = poisoned_engine()
    prompts = prompts_with_poison(8, {1, 6})
    outcomes = generate_isolated(engine, prompts, PARAMS)
    assert len(outcomes) == 8
    for index, (outcome, prompt) in enumerate(zip(outcomes, prompts, strict=True)):
        if index in (1, 6):
            assert_poisoned(outcome)
        else:
            assert_ok(outcome, prompt)


def test_all_poison_items_all_fail() -> None:
    engine = poisoned_engine()
    outcomes = generate_isolated(engine, prompts_with_poison(8, set(range(8))), PARAMS)
    assert len(outcomes) == 8
    for outcome in outcomes:
        assert_poisoned(outcome)
    assert len(engine.calls) == 2 * 8 - 1  # every node of the bisection tree


def test_single_prompt_failure_is_not_retried() -> None:
    engine = poisoned_engine()
    [outcome] = generate_isolated(engine, prompts_with_poison(1, {0}), PARAMS)
    assert_poisoned(outcome)
    assert engine.calls == [1]


def test_empty_batch_gives_no_outcomes() -> None:
    assert generate_isolated(EchoEngine(), [], PARAMS) == []


@pytest.mark.parametrize("count", [2, 3, 5, 8, 13, 100, 257, 1000, 1024])
def test_one_poison_costs_logarithmic_extra_calls(count: int) -> None:
    bound = 1 + 2 * math.ceil(math.log2(count))
    for poisoned in {0, count // 2, count - 1}:
        engine = poisoned_engine()
        outcomes = generate_isolated(engine, prompts_with_poison(count, {poisoned}), PARAMS)
        assert [outcome.completion is None for outcome in outcomes] == [
            index == poisoned for index in range(count)
        ]
        assert len(engine.calls) <= bound
        if count >= 100:
            assert len(engine.calls) < count // 4  # nowhere near one call per item


def test_one_poison_in_1024_takes_exactly_21_calls() -> None:
    engine = poisoned_engine()
    generate_isolated(engine, prompts_with_poison(1024, {700}), PARAMS)
    assert len(engine.calls) == 1 + 2 * 10


@dataclass
class MiscountingEngine:
    """Returns ``delta`` more (or fewer) completions than prompts for batches of ``min_rows``+."""

    delta: int
    min_rows: int = 1
    name: str = "miscounting"
    max_context: int = 1_000_000

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [1 for _ in prompts]

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        completions = EchoEngine().generate(prompts, params)
        if len(prompts) < self.min_rows:
            return completions
        if self.delta < 0:
            return completions[: self.delta]
        return completions + [Completion("extra", 0, 0)] * self.delta


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_number_of_completions_is_a_failure(delta: int) -> None:
    [outcome] = generate_isolated(MiscountingEngine(delta), prompts_with_poison(1, set()), PARAMS)
    assert outcome.completion is None
    assert outcome.error_kind == "engine"
    assert outcome.error_message is not None
    assert "RuntimeError" in outcome.error_message
    assert f"returned {1 + delta} completions for 1 prompts" in outcome.error_message


@pytest.mark.parametrize("delta", [-1, 1])
def test_an_engine_that_always_miscounts_is_broken(delta: int) -> None:
    """Every item fails alone the same way: the engine is at fault, not the items."""
    with pytest.raises(EngineBroken, match="batch of 4 failed alone the same way: RuntimeError"):
        generate_isolated(MiscountingEngine(delta), prompts_with_poison(4, set()), PARAMS)


def test_a_batch_wide_engine_failure_fails_loudly() -> None:
    engine = CountingEngine(RaisingEngine(RuntimeError("CUDA error: device-side assert")))
    with pytest.raises(EngineBroken, match="device-side assert"):
        generate_isolated(engine, prompts_with_poison(4, set()), PARAMS)
    assert engine.calls == [4, 2, 1, 1, 2, 1, 1]  # bisected first: it could have been items


def test_poison_items_that_fail_each_their_own_way_are_not_a_broken_engine() -> None:
    outcomes = generate_isolated(poisoned_engine(), prompts_with_poison(4, {0, 1, 2, 3}), PARAMS)
    for outcome in outcomes:
        assert_poisoned(outcome)


def test_out_of_memory_on_every_item_alone_is_not_a_broken_engine() -> None:
    engine = RaisingEngine(OutOfMemoryError("tried to allocate 80 GiB"))
    outcomes = generate_isolated(engine, ["a", "b"], PARAMS)
    assert [outcome.error_kind for outcome in outcomes] == ["oom", "oom"]


def test_wrong_count_in_a_batch_is_never_misaligned() -> None:
    """A batch that loses a completion is bisected; every prompt gets its own answer."""
    prompts = prompts_with_poison(6, set())
    outcomes = generate_isolated(MiscountingEngine(-1, min_rows=2), prompts, PARAMS)
    for outcome, prompt in zip(outcomes, prompts, strict=True):
        assert_ok(outcome, prompt)
        assert outcome.batch_size == 1


@dataclass
class RaisingEngine:
    """Raises ``error`` for batches of ``min_rows`` or more prompts."""

    error: Exception
    min_rows: int = 1
    name: str = "raising"
    max_context: int = 1_000_000

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [1 for _ in prompts]

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Completion]:
        if len(prompts) >= self.min_rows:
            raise self.error
        return EchoEngine().generate(prompts, params)


def test_error_kind_names_out_of_memory() -> None:
    assert error_kind(OutOfMemoryError("CUDA out of memory")) == "oom"
    assert error_kind(RuntimeError("CUDA out of memory")) == "engine"
    assert error_kind(ValueError("x")) == "engine"


def test_out_of_memory_on_a_single_prompt_is_recorded_as_oom() -> None:
    [outcome] = generate_isolated(
        RaisingEngine(OutOfMemoryError("tried to allocate 80 GiB")), ["a b c"], PARAMS
    )
    assert outcome.error_kind == "oom"
    assert outcome.error_message == "OutOfMemoryError: tried to allocate 80 GiB"


def test_out_of_memory_on_a_big_batch_is_retried_in_halves() -> None:
    prompts = prompts_with_poison(8, set())
    outcomes = generate_isolated(
        RaisingEngine(OutOfMemoryError("oom"), min_rows=3), prompts, PARAMS
    )
    for outcome, prompt in zip(outcomes, prompts, strict=True):
        assert_ok(outcome, prompt)
        assert outcome.batch_size == 2


def test_long_error_message_is_capped() -> None:
    [outcome] = generate_isolated(RaisingEngine(RuntimeError("x" * 10_000)), ["p"], PARAMS)
    assert outcome.error_message is not None
    assert len(outcome.error_message) == MAX_ERROR_CHARS
    assert outcome.error_message.startswith("RuntimeError: xxx")


def test_soft_time_limit_is_not_isolated() -> None:
    engine = CountingEngine(RaisingEngine(SoftTimeLimitExceeded()))
    with pytest.raises(SoftTimeLimitExceeded):
        generate_isolated(engine, ["a", "b", "c", "d"], PARAMS)
    assert engine.calls == [4]
