"""One batch through the engine, with a bad item isolated by bisection.

When a batch raises, it is split in two and each half retried, down to single
items: only the items that fail alone are recorded as failed; the rest of the
batch gets its answers. One poison item costs O(log n) extra calls, not the batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from worker.engines import Completion, Engine, GenerationParams

#: Longest error message stored on a Result.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    """What one prompt got: a completion, or an error kind and message."""

    completion: Completion | None
    latency_s: float
    batch_size: int
    error_kind: str | None = None
    error_message: str | None = None


def error_kind(error: BaseException) -> str:
    """A short name for what went wrong: ``oom`` for out of memory, else ``engine``."""
    return "oom" if type(error).__name__ == "OutOfMemoryError" else "engine"


def generate_isolated(
    engine: Engine, prompts: Sequence[str], params: GenerationParams
) -> list[Outcome]:
    """One Outcome per prompt, in order; a failing batch is bisected to its bad items."""
    started = time.perf_counter()
    try:
        completions = engine.generate(prompts, params)
        if len(completions) != len(prompts):
            raise RuntimeError(
                f"engine returned {len(completions)} completions for {len(prompts)} prompts"
            )
    except SoftTimeLimitExceeded:
        raise
    except Exception as error:  # noqa: BLE001  (any engine failure is isolated, not fatal)
        elapsed = time.perf_counter() - started
        if len(prompts) == 1:
            message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
            return [Outcome(None, elapsed, 1, error_kind(error), message)]
        middle = len(prompts) // 2
        return generate_isolated(engine, prompts[:middle], params) + generate_isolated(
            engine, prompts[middle:], params
        )
    elapsed = time.perf_counter() - started
    return [Outcome(completion, elapsed, len(prompts)) for completion in completions]
