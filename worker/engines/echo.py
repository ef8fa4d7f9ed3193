"""The ``echo`` engine: no model. For tests and for measuring the fleet's own overhead.

It answers with the last ``max_new_tokens`` words of the prompt, ended before a stop
text. Its "model" string
takes options, e.g. ``--model "delay=0.05,fail_marker=POISON"``:

- ``delay``: seconds each batch takes (to stand in for a model's latency);
- ``fail_marker``: a prompt containing it makes the batch raise (a poison item);
- ``answer_from``: a scripted answer: with ``answer_from=a`` the engine answers with
  the word after ``a=`` in the prompt (empty if there is none), so tests can give each
  "checkpoint" known right and wrong answers.
- ``crash_marker``: a prompt containing it kills the worker process on the spot
  (``os._exit``), as a segfault or an OOM kill would: the item that never returns.
- ``oom_above``: a batch costing more tokens than this (rows x (longest prompt +
  max_new_tokens)) raises ``torch.cuda.OutOfMemoryError``, as a GPU would.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import ConfigError, FleetError
from common.prompts import Chat, Message, Prompt, plain_chat
from worker.engines.base import Completion, GenerationParams
from worker.engines.stops import first_stop

#: The options a spec may set.
OPTIONS = ("delay", "fail_marker", "answer_from", "crash_marker", "oom_above")

#: The context the echo engine claims, in whitespace-separated words.
ECHO_CONTEXT = 1_000_000

#: Exit status of a worker process killed by the ``crash_marker`` option.
CRASH_EXIT_CODE = 70


class PoisonItem(FleetError, RuntimeError):
    """Raised for a prompt carrying the configured fail marker."""


@dataclass
class EchoEngine:
    name = "echo"
    max_context = ECHO_CONTEXT

    delay_s: float = 0.0
    fail_marker: str | None = None
    answer_from: str | None = None
    crash_marker: str | None = None
    oom_above: int | None = None

    @classmethod
    def from_spec(cls, spec: str) -> EchoEngine:
        """Parse ``key=value,...``; an empty spec or ``echo`` means no options."""
        options: dict[str, str] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part or part == "echo":
                continue
            key, sep, value = part.partition("=")
            if not sep or key not in OPTIONS:
                raise ConfigError(f"echo engine: unknown option {part!r} in model {spec!r}")
            options[key] = value
        try:
            delay = float(options.get("delay", 0.0))
        except ValueError:
            delay = -1.0
        if not math.isfinite(delay) or delay < 0:
            raise ConfigError(
                f"echo engine: delay must be a number of seconds, finite and >= 0, in {spec!r}"
            )
        oom_above = options.get("oom_above")
        if oom_above is not None and not (oom_above.isdigit() and int(oom_above) > 0):
            raise ConfigError(f"echo engine: oom_above must be a positive integer, in {spec!r}")
        return cls(
            delay_s=delay,
            fail_marker=options.get("fail_marker"),
            answer_from=options.get("answer_from"),
            crash_marker=options.get("crash_marker"),
            oom_above=int(oom_above) if oom_above else None,
        )

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        return [len(prompt.split()) for prompt in _texts(prompts)]

    def render_chat(self, messages: list[Message]) -> str:
        return plain_chat(messages)

    def truncate(self, prompts: Sequence[Prompt], max_tokens: int, side: str) -> list[Prompt]:
        cut: list[Prompt] = []
        for prompt in _texts(prompts):
            words = prompt.split()
            kept = words[-max_tokens:] if side == "left" else words[:max_tokens]
            cut.append(" ".join(kept) if max_tokens > 0 else "")
        return cut

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Completion]:
        return self._generate(_texts(prompts), params)

    def _generate(self, prompts: list[str], params: GenerationParams) -> list[Completion]:
        if self.oom_above is not None:
            cost = len(prompts) * (max(self.count_tokens(prompts)) + params.max_new_tokens)
            if cost > self.oom_above:
                import torch

                raise torch.cuda.OutOfMemoryError(
                    f"simulated: batch of {cost} tokens over oom_above={self.oom_above}"
                )
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.crash_marker and any(self.crash_marker in prompt for prompt in prompts):
            os._exit(CRASH_EXIT_CODE)
        if self.fail_marker:
            for prompt in prompts:
                if self.fail_marker in prompt:
                    raise PoisonItem(
                        f"prompt {prompt[:40]!r} contains the fail marker {self.fail_marker!r}"
                    )
        if self.answer_from is not None:
            return [self._scripted(prompt) for prompt in prompts]
        return [_echoed(prompt, params) for prompt in prompts]

    def _scripted(self, prompt: str) -> Completion:
        key = re.escape(self.answer_from or "")
        found = re.search(rf"(?:^|\s){key}=(\S*)", prompt)
        answer = found.group(1) if found else ""
        return Completion(answer, len(prompt.split()), 1 if answer else 0)


def _echoed(prompt: str, params: GenerationParams) -> Completion:
    """The prompt's last ``max_new_tokens`` words, ended before a stop text."""
    words = prompt.split()
    answer = words[-params.max_new_tokens :]
    finish = "length" if len(answer) == params.max_new_tokens else "stop"
    text = " ".join(answer)
    cut = first_stop(text, params.stop)
    if cut is not None:
        text, finish = text[:cut], "stop"
        answer = text.split()
    return Completion(text, len(words), len(answer), finish)


def _texts(prompts: Sequence[Prompt]) -> list[str]:
    """The prompts as texts, a conversation as ``role: content`` lines."""
    return [plain_chat(p.messages) if isinstance(p, Chat) else p for p in prompts]
