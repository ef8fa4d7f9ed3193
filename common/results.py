"""A result row: one item's answer, or its failure, in one lane; and the kinds of failure.

Every writer of results (the worker's batches, its quarantine of a poison item or a
used-up slice, enqueue's rejected records) builds a ``ResultRow`` here and hands it
to ``common.store.save_results``; every failure is one of the ``ErrorKind`` values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

#: Longest error message stored on a result, in characters.
MAX_ERROR_CHARS = 2000


class ErrorKind(StrEnum):
    """``Result.error_kind``: why an item has no (valid) answer."""

    #: The record was rejected at enqueue, or its prompt cannot be built (no chat template).
    invalid_input = "invalid_input"
    #: The prompt plus ``max_new_tokens`` cannot fit the model's context.
    too_long = "too_long"
    #: The item ran out of memory even alone.
    oom = "oom"
    #: The engine raised on the item alone.
    engine = "engine"
    #: The answer holds no JSON that the run's schema accepts.
    invalid_output = "invalid_output"
    #: The item (or its used-up slice) kept failing: taken out of automatic retries.
    quarantined = "quarantined"
    #: A remote engine's server answered with an error or a malformed response.
    api = "api"
    #: A remote engine's server kept refusing with HTTP 429.
    rate_limit = "rate_limit"
    #: A remote engine's request timed out.
    timeout = "timeout"


def error_text(error: BaseException) -> str:
    """``error`` as stored on a result: its type and message, at most ``MAX_ERROR_CHARS``."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """The columns of one ``Result`` that a writer sets; the store adds ``created_at``."""

    run_id: str
    item_id: int
    lane_index: int
    #: The slice holding the item in its lane (it counts the result when it finishes).
    slice_id: int | None
    ok: bool = False
    answer: str | None = None
    parsed: Any = None
    score: float | None = None
    #: A multi-metric scorer's metrics (``common.scoring.split``).
    scores: dict[str, float] | None = None
    #: The rendered prompt, when the run keeps prompts.
    prompt: str | None = None
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    batch_size: int = 0
    worker: str | None = None
    gpu_group: str | None = None
    #: Times the item was handed to an engine (0: rejected before any).
    attempts: int = 1
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    #: ``stop`` or ``length`` (``Result.finish_reason``); None when not known.
    finish_reason: str | None = None

    def columns(self) -> dict[str, Any]:
        """Column name -> value, as the store's insert takes them."""
        return {name: getattr(self, name) for name in _column_names()}


@functools.cache
def _column_names() -> tuple[str, ...]:
    return tuple(field.name for field in fields(ResultRow))
