"""The engine contract: a batch of prompts in, one completion per prompt out.

An engine knows nothing of Celery or SQL. The slice task hands it prompts and
generation parameters; it returns completions in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.errors import FleetError
from common.prompts import Message, Prompt
from common.results import ErrorKind


@dataclass(frozen=True)
class GenerationParams:
    """How to generate: the same for every prompt of a batch."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    #: Texts that end a completion where they first appear (they are not part of it).
    stop: tuple[str, ...] = ()
    #: The JSON Schema the answer must match, for an engine that can hold a server to it
    #: (``openai``: ``response_format``); the prompt asks for it in any case.
    output_schema: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Completion:
    """One prompt's answer and what it cost."""

    text: str
    tokens_in: int
    tokens_out: int
    #: ``stop`` (an end of sequence or a stop text) or ``length`` (``max_new_tokens``
    #: reached); None when the engine cannot tell.
    finish_reason: str | None = None


class Engine(Protocol):
    """Turns prompts into completions. Implementations: ``hf``, ``echo``."""

    #: The engine's name as given on the command line (``hf``, ``echo``).
    name: str

    #: The longest prompt plus completion the model accepts, in tokens.
    max_context: int

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        """The prompt length of each prompt, in the engine's own tokens."""
        ...

    def render_chat(self, messages: list[Message]) -> Prompt:
        """A conversation as this engine's model takes it: a text in the model's chat
        format, or the conversation itself for an engine that sends messages."""
        ...

    def truncate(self, prompts: Sequence[Prompt], max_tokens: int, side: str) -> list[Prompt]:
        """Each prompt cut to at most ``max_tokens`` tokens, dropping its ``left`` or ``right``."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Completion]:
        """One completion per prompt, in order. Raises on a failure of the batch."""
        ...


@dataclass(frozen=True)
class ItemError:
    """Why one prompt of a batch failed on its own (a remote engine's per-request error)."""

    error_kind: ErrorKind
    message: str


class PartialFailure(FleetError):
    """Raised by an engine whose prompts fail one by one: the answers that did come back
    and the errors of the rest, in prompt order. Nothing needs bisecting."""

    def __init__(self, results: list[Completion | ItemError]) -> None:
        failed = sum(isinstance(result, ItemError) for result in results)
        super().__init__(f"{failed} of {len(results)} prompts failed")
        self.results = results


class EngineBroken(FleetError):
    """The engine fails whatever it is given (a test generation at load, or every item of
    a batch alike): the load or the slice fails, instead of each item on its own."""
