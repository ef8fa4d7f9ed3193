"""One batch through the engine, with out-of-memory back-off and poison isolation.

When a batch runs out of memory, the cache is freed, the cost is remembered on the
process's :class:`~worker.oom.MemoryBudget` and the batch is halved and retried; an
item that does not fit alone fails with ``error_kind=oom``. When a batch raises
anything else it is bisected the same way, down to single items: only the items that
fail alone are recorded as failed and the rest get their answers. One poison item
costs O(log n) extra calls, not the batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from common.prompts import Prompt
from common.results import MAX_ERROR_CHARS, ErrorKind, error_text
from worker.batching import batch_cost
from worker.engines import (
    Completion,
    Engine,
    EngineBroken,
    GenerationParams,
    ItemError,
    PartialFailure,
)
from worker.oom import MemoryBudget, free_memory, is_out_of_memory


@dataclass(frozen=True)
class Outcome:
    """What one prompt got: a completion, or an error kind and message."""

    completion: Completion | None
    latency_s: float
    batch_size: int
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    #: The validated object of a structured-output run.
    parsed: Any = None


def error_kind(error: BaseException) -> ErrorKind:
    """What went wrong: ``oom`` for out of memory, else the engine's own ``error_kind``
    attribute (remote engines: ``api``, ``rate_limit``...), else ``engine``."""
    if is_out_of_memory(error):
        return ErrorKind.oom
    kind = getattr(error, "error_kind", None)
    return kind if isinstance(kind, ErrorKind) else ErrorKind.engine


def generate_isolated(
    engine: Engine,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    *,
    lengths: Sequence[int] | None = None,
    memory: MemoryBudget | None = None,
) -> list[Outcome]:
    """One Outcome per prompt, in order; a failing batch is halved down to its bad items.

    ``lengths`` (prompt tokens) give each attempt's cost for ``memory``; without them
    the budget is not updated. EngineBroken when every item of a batch of two or more
    fails alone with the same engine error: the engine, not the items, is at fault, and
    the slice fails loudly instead of recording each item as ``engine``.
    """
    outcomes = _isolated(engine, prompts, params, lengths, memory)
    if len(outcomes) > 1 and _failed_alike(outcomes):
        raise EngineBroken(
            f"every item of a batch of {len(outcomes)} failed alone the same way: "
            f"{outcomes[0].error_message}"
        )
    return outcomes


def _failed_alike(outcomes: Sequence[Outcome]) -> bool:
    """Whether every outcome is the same engine error (not out of memory, not remote)."""
    return all(
        outcome.completion is None
        and outcome.error_kind == ErrorKind.engine
        and outcome.error_message == outcomes[0].error_message
        for outcome in outcomes
    )


def _isolated(
    engine: Engine,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    lengths: Sequence[int] | None,
    memory: MemoryBudget | None,
) -> list[Outcome]:
    """``generate_isolated`` without the check for a broken engine."""
    cost = batch_cost(lengths, params.max_new_tokens) if lengths is not None else None
    started = time.perf_counter()
    try:
        completions = _generate_checked(engine, prompts, params, memory, cost)
    except SoftTimeLimitExceeded:
        raise
    except PartialFailure as partial:
        # A remote engine's per-request errors: already per item, nothing to bisect.
        elapsed = time.perf_counter() - started
        return [_partial_outcome(result, elapsed, len(prompts)) for result in partial.results]
    except Exception as error:  # noqa: BLE001  (any engine failure is isolated, not fatal)
        failure = _Failure.of(error)
    else:
        elapsed = time.perf_counter() - started
        if memory is not None and cost is not None:
            memory.record_fit(cost)
        return [Outcome(completion, elapsed, len(prompts)) for completion in completions]
    # Out of the except block on purpose: until it ends, the exception's traceback keeps
    # the failed call's frames alive, and with them its tensors (a batch's KV cache,
    # activations), so memory freed there, and halves run there, would not get them back.
    elapsed = time.perf_counter() - started
    if failure.out_of_memory:
        free_memory()
        if memory is not None and cost is not None:
            memory.record_oom(cost)
    if len(prompts) == 1:
        return [Outcome(None, elapsed, 1, failure.kind, failure.message)]
    return _halves(engine, prompts, params, lengths, memory)


def _generate_checked(
    engine: Engine,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    memory: MemoryBudget | None,
    cost: int | None,
) -> list[Completion]:
    """``engine.generate``, refused first by the host-memory guard; one answer per prompt."""
    if memory is not None and cost is not None:
        memory.check(cost)
    completions = engine.generate(prompts, params)
    if len(completions) != len(prompts):
        raise RuntimeError(
            f"engine returned {len(completions)} completions for {len(prompts)} prompts"
        )
    return completions


@dataclass(frozen=True)
class _Failure:
    """What a failed engine call leaves behind: no reference to its traceback."""

    kind: ErrorKind
    message: str
    out_of_memory: bool

    @classmethod
    def of(cls, error: BaseException) -> _Failure:
        return cls(
            kind=error_kind(error),
            message=error_text(error),
            out_of_memory=is_out_of_memory(error),
        )


def _halves(
    engine: Engine,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    lengths: Sequence[int] | None,
    memory: MemoryBudget | None,
) -> list[Outcome]:
    """Each half of a failed batch, run on its own."""
    middle = len(prompts) // 2
    first = _isolated(
        engine, prompts[:middle], params, lengths[:middle] if lengths is not None else None, memory
    )
    second = _isolated(
        engine, prompts[middle:], params, lengths[middle:] if lengths is not None else None, memory
    )
    return first + second


def _partial_outcome(result: Completion | ItemError, elapsed: float, size: int) -> Outcome:
    if isinstance(result, ItemError):
        return Outcome(None, elapsed, size, result.error_kind, result.message[:MAX_ERROR_CHARS])
    return Outcome(result, elapsed, size)
