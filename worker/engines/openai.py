"""The ``openai`` engine: any OpenAI-compatible server (vLLM, TGI, TogetherAI...).

The model runs elsewhere, so a batch is a set of concurrent HTTP requests, at most
``FLEET_OPENAI_CONCURRENCY`` at once per worker process. Each request is retried with
exponential backoff on 429, 5xx, connection errors and timeouts; one that still fails
fails its item alone, classified ``rate_limit``, ``timeout`` or ``api``. Images and
videos go as content parts, a local file as a ``data:`` URL (``worker.media``). The base URL and
the key come from the settings (``FLEET_OPENAI_BASE_URL``, ``FLEET_OPENAI_API_KEY``),
never from the command line, where they would show in ``ps`` and shell history.

Prompt lengths are estimated (about 4 characters a token): they only shape batches
here; the server enforces its own context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from common.errors import ConfigError, FleetError
from common.prompts import Chat, Message, Prompt
from common.results import ErrorKind
from common.settings import Settings
from worker.engines.base import Completion, GenerationParams, ItemError, PartialFailure
from worker.media import MediaError, inline_media

#: Characters per token assumed when estimating prompt lengths.
CHARS_PER_TOKEN = 4

#: The context the engine claims; the server checks the real one.
REMOTE_CONTEXT = 1_000_000

#: A server's ``finish_reason`` values kept on a result (others are stored as unknown).
FINISH_REASONS = ("stop", "length")


class RemoteError(FleetError):
    """One request's failure, with its ``error_kind`` and whether a retry may help."""

    def __init__(self, error_kind: ErrorKind, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.error_kind = error_kind
        self.retryable = retryable


class OpenAIEngine:
    """Completions or chat completions from an OpenAI-compatible HTTP API."""

    name = "openai"
    max_context = REMOTE_CONTEXT

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
    ) -> None:
        self.model = model
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency),
        )

    @classmethod
    def from_settings(cls, model: str, settings: Settings) -> OpenAIEngine:
        if not settings.openai_base_url:
            raise ConfigError("--engine openai needs FLEET_OPENAI_BASE_URL (e.g. http://host/v1)")
        key = settings.openai_api_key
        return cls(
            model,
            base_url=settings.openai_base_url,
            api_key=key.get_secret_value() if key else None,
            concurrency=settings.openai_concurrency,
            timeout_s=settings.openai_timeout_s,
            max_attempts=settings.openai_max_attempts,
        )

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        return [len(_text(prompt)) // CHARS_PER_TOKEN + 1 for prompt in prompts]

    def render_chat(self, messages: list[Message]) -> Chat:
        """The conversation itself: it goes to ``/chat/completions`` as messages."""
        return Chat(messages)

    def truncate(self, prompts: Sequence[Prompt], max_tokens: int, side: str) -> list[Prompt]:
        """Texts cut by their estimated tokens; a conversation is left to the server."""
        chars = max(max_tokens - 1, 0) * CHARS_PER_TOKEN
        return [_cut(prompt, chars, side) for prompt in prompts]

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Completion]:
        """Every prompt as its own request, ``concurrency`` at a time; per-item errors are
        raised together as one PartialFailure once the whole batch is back."""
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(len(prompts), 1))) as pool:
            results = list(pool.map(lambda prompt: self._one(prompt, params), prompts))
        if any(isinstance(result, ItemError) for result in results):
            raise PartialFailure(results)
        return [result for result in results if isinstance(result, Completion)]

    def close(self) -> None:
        self.client.close()

    def _one(self, prompt: Prompt, params: GenerationParams) -> Completion | ItemError:
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=60 * self.backoff_s),
            retry=retry_if_exception(lambda error: getattr(error, "retryable", False)),
        )
        try:
            return retrying(self._request, prompt, params)
        except RetryError as exhausted:
            error = exhausted.last_attempt.exception()
            kind = getattr(error, "error_kind", ErrorKind.api)
            return ItemError(kind, f"{error} (gave up after {self.max_attempts} tries)")
        except (RemoteError, MediaError) as error:
            return ItemError(error.error_kind, str(error))

    def _request(self, prompt: Prompt, params: GenerationParams) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        body.update(_request_settings(params))
        chat = isinstance(prompt, Chat)
        if isinstance(prompt, Chat):
            body["messages"] = inline_media(prompt.messages)  # local files as data: URLs
        else:
            body["prompt"] = prompt
        try:
            response = self.client.post("chat/completions" if chat else "completions", json=body)
        except httpx.TimeoutException as error:
            raise RemoteError(
                ErrorKind.timeout, f"request timed out: {error}", retryable=True
            ) from None
        except httpx.HTTPError as error:
            raise RemoteError(
                ErrorKind.api, f"{type(error).__name__}: {error}", retryable=True
            ) from None
        if response.status_code == 429:
            raise RemoteError(ErrorKind.rate_limit, "HTTP 429 Too Many Requests", retryable=True)
        if response.status_code >= 400:
            raise RemoteError(
                ErrorKind.api,
                f"HTTP {response.status_code}: {response.text[:500]}",
                retryable=response.status_code >= 500,
            )
        return _completion(response, chat, self.count_tokens([prompt])[0])


def _completion(response: httpx.Response, chat: bool, estimated_in: int) -> Completion:
    """The first choice of a (chat) completions response; a malformed one is an api error."""
    try:
        document = response.json()
        choice = document["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        usage = document.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise RemoteError(
            ErrorKind.api, f"malformed response ({error!r}): {response.text[:300]}", retryable=False
        ) from None
    if not isinstance(text, str):
        raise RemoteError(ErrorKind.api, "response text is not a string", retryable=False)
    finish = choice.get("finish_reason")
    return Completion(
        text=text,
        tokens_in=int(usage.get("prompt_tokens", estimated_in)),
        tokens_out=int(usage.get("completion_tokens", len(text) // CHARS_PER_TOKEN)),
        finish_reason=finish if finish in FINISH_REASONS else None,
    )


def _request_settings(params: GenerationParams) -> dict[str, Any]:
    """The optional fields of a request: seed, stop texts and the answer's JSON Schema."""
    settings: dict[str, Any] = {}
    if params.seed is not None:
        settings["seed"] = params.seed
    if params.stop:
        settings["stop"] = list(params.stop)
    if params.output_schema is not None:
        settings["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": params.output_schema},
        }
    return settings


def _text(prompt: Prompt) -> str:
    """What a length estimate counts: the text, or a conversation's JSON."""
    return json.dumps(prompt.messages, ensure_ascii=False) if isinstance(prompt, Chat) else prompt


def _cut(prompt: Prompt, chars: int, side: str) -> Prompt:
    if isinstance(prompt, Chat):
        return prompt
    return prompt[len(prompt) - chars :] if side == "left" else prompt[:chars]
