"""The text a worker sends for each item: chat template, schema instruction, length policy.

Everything here happens before any GPU time, per item: an item whose prompt cannot be
built or cannot fit fails alone, with its reason, and never reaches a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.results import ErrorKind
from common.runconfig import RunConfig
from worker.chat import chat_messages
from worker.engines import Engine
from worker.length import apply_length_policy
from worker.structured import with_schema


def render_prompt(engine: Engine, payload: dict[str, Any], prompt: str, config: RunConfig) -> str:
    """One item's prompt: through the chat template if it is a conversation, then the
    schema instruction of a structured-output run. Raises ValueError if it cannot be built."""
    if config.output_schema is not None:
        prompt = with_schema(prompt, config.output_schema)
    messages = chat_messages(payload, prompt, config.system)
    if messages is None:
        return prompt
    if config.output_schema is not None and "messages" in payload:
        last = messages[-1]
        messages[-1] = {**last, "content": with_schema(last["content"], config.output_schema)}
    return engine.render_chat(messages)


@dataclass(frozen=True)
class Prepared:
    """What to run: every item's prompt and token count, and the items that cannot run."""

    prompts: list[str]
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
    prompts: list[str] = []
    failed: dict[int, tuple[ErrorKind, str]] = {}
    for index, (payload, prompt) in enumerate(items):
        try:
            prompts.append(render_prompt(engine, payload, prompt, config))
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
