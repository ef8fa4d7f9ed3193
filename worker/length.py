"""The length policy: what to do, before any GPU time, with a prompt too long for the model.

A prompt plus ``max_new_tokens`` must fit the model's context. By default a prompt that
does not fit fails on its own (``error_kind=too_long``); with ``--truncate left`` it
loses its beginning (keeping the question at the end), with ``--truncate right`` its end.
Either way the batch it would have joined is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.prompts import Prompt
from common.runconfig import SIDES
from worker.engines import Engine


@dataclass(frozen=True)
class LengthPlan:
    """The prompts to run (truncated where asked), their lengths, and those that fail."""

    prompts: list[Prompt]
    lengths: list[int]
    #: Index -> why it cannot run.
    too_long: dict[int, str]


def apply_length_policy(
    engine: Engine,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    truncate: str | None,
) -> LengthPlan:
    """Fit every prompt into ``engine.max_context - max_new_tokens`` tokens, or fail it."""
    if truncate is not None and truncate not in SIDES:
        raise ValueError(f"truncate must be one of {SIDES} or None, got {truncate!r}")
    room = engine.max_context - max_new_tokens
    prompts = list(prompts)
    lengths = engine.count_tokens(prompts)
    over = [index for index, length in enumerate(lengths) if length > room]
    if over and truncate is not None and room > 0:
        cut = engine.truncate([prompts[index] for index in over], room, truncate)
        recounted = engine.count_tokens(cut)
        for index, prompt, length in zip(over, cut, recounted, strict=True):
            prompts[index], lengths[index] = prompt, length
    too_long: dict[int, str] = {}
    for index, length in enumerate(lengths):
        if length > room:
            too_long[index] = (
                f"prompt of {length} tokens plus max_new_tokens={max_new_tokens} exceeds "
                f"the model's {engine.max_context} tokens"
                + ("" if truncate is None else f" even truncated {truncate}")
            )
    return LengthPlan(prompts, lengths, too_long)
