"""The text a worker sends for each item: chat template, schema instruction, length policy.

Everything here happens before any GPU time, per item: an item whose prompt cannot be
built or cannot fit fails alone, with its reason, and never reaches a batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.media import with_video_frames
from common.prompts import Chat, Prompt, build_prompt
from common.results import ErrorKind
from common.runconfig import RunConfig
from worker.engines import Engine
from worker.length import apply_length_policy


def engine_prompt(engine: Engine, prompt: Prompt) -> Prompt:
    """What ``engine`` runs for ``prompt``: a conversation in its model's chat format.
    Raises ValueError if it cannot be built (a tokenizer without a chat template)."""
    if isinstance(prompt, Chat):
        return engine.render_chat(prompt.messages)
    return prompt


def shown_prompt(prompt: Prompt) -> str | None:
    """A prompt as stored for ``--keep-prompts``: the text the model read (chat template,
    schema instruction and truncation applied), or the JSON of the messages an engine
    sends as a conversation; None for an item whose prompt could not be built."""
    if isinstance(prompt, Chat):
        return json.dumps(prompt.messages, ensure_ascii=False, default=str)
    return prompt or None


def with_frames(prompt: Prompt, frames: int) -> Prompt:
    """``prompt`` with its videos' parts asking for ``frames`` sampled frames (the run's
    ``--video-frames``)."""
    if isinstance(prompt, Chat):
        return Chat(with_video_frames(prompt.messages, frames))
    return prompt


@dataclass(frozen=True)
class Prepared:
    """What to run: every item's prompt and token count, and the items that cannot run."""

    prompts: list[Prompt]
    lengths: list[int]
    #: Index -> (error_kind, message).
    failed: dict[int, tuple[ErrorKind, str]]

    @property
    def runnable(self) -> list[int]:
        return [index for index in range(len(self.prompts)) if index not in self.failed]


def prepare(
    engine: Engine,
    items: Sequence[tuple[dict[str, Any], str]],
    config: RunConfig,
) -> Prepared:
    """Render every (payload, prompt) and apply the run's length policy."""
    prompts: list[Prompt] = []
    failed: dict[int, tuple[ErrorKind, str]] = {}
    for index, (payload, prompt) in enumerate(items):
        try:
            typed = build_prompt(payload, prompt, system=config.system, schema=config.output_schema)
            typed = with_frames(typed, config.video_frames)
            prompts.append(engine_prompt(engine, typed))
        except ValueError as error:
            prompts.append("")
            failed[index] = (ErrorKind.invalid_input, str(error))
    kept = [index for index in range(len(prompts)) if index not in failed]
    plan = apply_length_policy(
        engine,
        [prompts[index] for index in kept],
        max_new_tokens=config.generation.max_new_tokens,
        truncate=config.truncate,
    )
    lengths = [0] * len(prompts)
    for position, index in enumerate(kept):
        prompts[index], lengths[index] = plan.prompts[position], plan.lengths[position]
        if position in plan.too_long:
            failed[index] = (ErrorKind.too_long, plan.too_long[position])
    return Prepared(prompts, lengths, failed)
