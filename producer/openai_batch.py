"""Reading OpenAI Batch files: one request per line, every line validated at enqueue.

A line is ``{"custom_id", "method": "POST", "url", "body"}`` (OpenAI's Batch API, and
``vllm run-batch``'s input). ``url`` is ``/v1/chat/completions`` (``body.messages``) or
``/v1/completions`` (``body.prompt``). The request's own settings (``max_tokens`` or
``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``,
``response_format``, read by ``producer.openai_settings``) become the item's
``params`` (``common.request_settings``); a setting the request leaves out is the
run's. Whatever the fleet cannot honour is refused on its line, naming the field
(``body.n``, ``body.logit_bias``...), never silently ignored: settings that change
nothing at their neutral value (``n: 1``, ``presence_penalty: 0``...) and fields that
do not touch the answer (``user``, ``metadata``...) are accepted.

``body.model``, when given, must name one of the run's models (as given to
``--model``, as resolved, or a local checkpoint by its folder name): a request for a
model the run does not serve is refused on its line, as a server refuses it.

The stored record is the request in the fleet's own shape, ``{"id", "url", "messages"
| "prompt", "model"?}``: the workers render it like any chat or prompt record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.constants import DEFAULT_MAX_IMAGE_PIXELS
from common.errors import ConfigError
from common.runconfig import RunConfig
from producer.inputs import InputRecord, RecordReader, bounded_lines
from producer.media import BadMedia
from producer.openai_settings import SETTINGS, BodyError, body_settings

#: The endpoints a request may name, and the body field holding its input.
ENDPOINTS = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}

#: Fields of a request line.
LINE_FIELDS = ("custom_id", "method", "url", "body")

#: Body fields accepted at their neutral value only (or null): anything else would ask
#: for what the fleet does not do.
NEUTRAL: dict[str, Any] = {
    "n": 1,
    "best_of": 1,
    "stream": False,
    "logprobs": False,
    "echo": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
}

#: Body fields that do not touch the answer: accepted and left aside.
IGNORED = ("user", "metadata", "store", "service_tier", "stream_options")

#: Chat roles understood; ``developer`` is OpenAI's newer name for ``system``.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

#: How ``--input-format`` names this format.
OPENAI = "openai"


def reader_for(path: Path, *, config: RunConfig, options: dict[str, Any]) -> RecordReader:
    """The reader of one input file, with the reader ``options`` (template, reference field,
    limits): an OpenAI Batch file's, or the fleet's own records'."""
    if reads_openai_batch(path, config.input_format):
        return OpenAIBatchReader(path, models=config.models, **options)
    return RecordReader(path, **options)


def reads_openai_batch(path: Path, input_format: str) -> bool:
    """Whether ``path`` is read as an OpenAI Batch file: asked for, or told by its first line
    (a JSON object with ``custom_id`` and ``body``)."""
    if input_format != "auto":
        return input_format == OPENAI
    try:
        with path.open("rb") as stream:
            for line, _ in bounded_lines(stream, 1 << 20):
                if line.strip():
                    first = json.loads(line)
                    return isinstance(first, dict) and "custom_id" in first and "body" in first
    except (OSError, ValueError, RecursionError):
        return False  # the fleet's own reader reports what is wrong with it
    return False


class OpenAIBatchReader(RecordReader):
    """The requests of an OpenAI Batch file as records, with their own settings."""

    id_field = "custom_id"

    def __init__(
        self,
        path: Path,
        *,
        models: list[str],
        template: str | None = None,
        reference_field: str | None = None,
        max_line_bytes: int,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if template is not None:
            raise ConfigError(f"{path}: an OpenAI Batch file takes no --template")
        if reference_field is not None:
            raise ConfigError(f"{path}: an OpenAI Batch file has no --reference-field")
        super().__init__(path, max_line_bytes=max_line_bytes, max_image_pixels=max_image_pixels)
        self.models = models

    def _record(self, line_no: int, raw: bytes) -> InputRecord:
        line = self._parse(line_no, raw)
        for name in line:
            if name not in LINE_FIELDS:
                raise self._fail(line_no, "not a field of an OpenAI Batch request", name)
        custom_id = self._custom_id(line_no, line)
        body = self._body(line_no, line)
        field = ENDPOINTS[line["url"]]
        payload: dict[str, Any] = {"id": custom_id, "url": line["url"]}
        if field == "messages":
            payload["messages"] = self._chat(line_no, body)
            payload = self._with_media(line_no, payload)
            prompt = self._messages(line_no, payload["messages"])
        else:
            payload["prompt"] = prompt = self._completion_prompt(line_no, body)
        if "model" in body and body["model"] is not None:
            payload["model"] = self._model(line_no, body["model"])
        return InputRecord(
            line_no=line_no,
            custom_id=custom_id,
            payload=payload,
            prompt=prompt,
            reference=None,
            params=self._settings(line_no, body, chat=field == "messages"),
        )

    def _custom_id(self, line_no: int, record: dict[str, Any]) -> str:
        if "custom_id" not in record:
            raise self._fail(line_no, "missing", "custom_id")
        value = record["custom_id"]
        if not isinstance(value, str) or not value.strip():
            raise self._fail(line_no, f"must be a non-empty string, got {value!r}", "custom_id")
        first = self._seen.setdefault(value, line_no)
        if first != line_no:
            raise self._fail(
                line_no, f"duplicate custom_id {value!r} (first on line {first})", "custom_id"
            )
        return value

    def _body(self, line_no: int, line: dict[str, Any]) -> dict[str, Any]:
        """The request's body, once its method and url are ones the fleet serves."""
        method = line.get("method", "POST")
        if method != "POST":
            raise self._fail(line_no, f"must be POST, got {method!r}", "method")
        url = line.get("url")
        if url is None:
            raise self._fail(line_no, "missing", "url")
        if url not in ENDPOINTS:
            raise self._fail(
                line_no, f"{url!r} is not supported; expected {' or '.join(ENDPOINTS)}", "url"
            )
        body = line.get("body")
        if not isinstance(body, dict):
            raise self._fail(line_no, "must be an object (the request's body)", "body")
        field = ENDPOINTS[url]
        if field not in body:
            raise self._fail(line_no, f"missing: a {url} request needs it", f"body.{field}")
        for name, value in body.items():
            self._check_body_field(line_no, name, value, field)
        return body

    def _check_body_field(self, line_no: int, name: str, value: Any, field: str) -> None:
        where = f"body.{name}"
        if name in (field, "model", *SETTINGS, *IGNORED):
            return
        if name in NEUTRAL:
            if value is not None and value != NEUTRAL[name]:
                raise self._fail(line_no, f"only {json.dumps(NEUTRAL[name])} is supported", where)
            return
        raise self._fail(line_no, "not supported by this fleet", where)

    def _chat(self, line_no: int, body: dict[str, Any]) -> list[dict[str, Any]]:
        """``body.messages`` as ``{role, content}`` (text parts joined, media parts kept)."""
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise self._fail(line_no, "must be a non-empty list of messages", "body.messages")
        return [
            self._message(line_no, message, f"body.messages[{position}]")
            for position, message in enumerate(messages)
        ]

    def _message(self, line_no: int, message: Any, where: str) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise self._fail(line_no, "must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise self._fail(
                line_no, f"must be one of {', '.join(ROLES)}, got {role!r}", where + ".role"
            )
        return {"role": ROLES[role], "content": self._content(line_no, message, where)}

    def _content(self, line_no: int, message: dict[str, Any], where: str) -> str | list[Any]:
        """A string; text parts joined into one; parts with images kept as parts (their
        media checked with the request's: ``_with_media``)."""
        content = message.get("content")
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise self._fail(line_no, "must be a string or a list of parts", where + ".content")
        if all(isinstance(part, dict) and part.get("type") == "text" for part in content):
            for position, part in enumerate(content):
                if not isinstance(part.get("text"), str):
                    raise self._fail(
                        line_no, "must be a string", f"{where}.content[{position}].text"
                    )
            return "".join(part["text"] for part in content)
        return content

    def _with_media(self, line_no: int, payload: dict[str, Any]) -> dict[str, Any]:
        """The request with its images (``image_url`` parts) checked, paths made absolute."""
        try:
            return self.media.resolve(payload)
        except BadMedia as bad:
            raise self._fail(line_no, bad.message, f"body.{bad.field}") from None

    def _completion_prompt(self, line_no: int, body: dict[str, Any]) -> str:
        prompt = body["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise self._fail(
                line_no,
                "must be a string (lists of prompts and token ids are not supported)",
                "body.prompt",
            )
        if not prompt.strip():
            raise self._fail(
                line_no, "is empty or only whitespace: nothing to answer", "body.prompt"
            )
        return prompt

    def _settings(self, line_no: int, body: dict[str, Any], *, chat: bool) -> dict[str, Any] | None:
        """The request's own generation settings, as ``Item.params`` stores them."""
        try:
            return body_settings(body, chat=chat).stored()
        except BodyError as error:
            raise self._fail(line_no, error.message, error.field) from None

    def _model(self, line_no: int, model: Any) -> str:
        """``body.model`` if it names one of the run's models (see the module's docstring)."""
        if isinstance(model, str) and any(model in _names(served) for served in self.models):
            return model
        raise self._fail(
            line_no,
            f"{model!r} is not a model of this run (--model: {', '.join(self.models)})",
            "body.model",
        )


def _names(model: str) -> tuple[str, ...]:
    """What a request may call a run's model: the reference, and a local folder's name."""
    path = Path(model)
    return (model, path.name) if path.is_absolute() else (model,)
