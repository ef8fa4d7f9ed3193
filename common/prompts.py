"""Prompts, in one place: a record (or a lane's permuted payload) becomes what a model is asked.

- The record's text: the run's template filled from the record
  (``"Context: {context}\\nQuestion: {query}\\nAnswer:"``), else its ``prompt``, else
  its ``context`` and ``query``. Only plain field names are allowed in braces, so a
  template cannot reach into attributes or indexes of the values it is given. The
  producer checks it at enqueue (every record, every permutation); a worker renders
  each lane's text with the same rules.
- The prompt an engine gets (:func:`build_prompt`): that text with the JSON Schema
  instruction of a structured-output run, or, for a record with ``messages``, images or
  a video (``common.media``), or a run with a system prompt, a :class:`Chat` the engine
  puts into its model's chat format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from string import Formatter
from typing import Any

from common.constants import CONTEXTS_TEMPLATE
from common.errors import ConfigError, FleetError
from common.media import append_text, content_text, has_media_fields, is_parts, user_content


class MissingField(FleetError, KeyError):
    """A template field the record does not have."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order; ConfigError for a malformed template."""
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as error:
        raise ConfigError(f"template {template!r}: {error}") from error
    fields: list[str] = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ConfigError(
                f"template {template!r}: '{{{field}}}' must be a plain field name "
                "(use {{ and }} for literal braces)"
            )
        fields.append(field)
    if not fields:
        raise ConfigError(f"template {template!r} names no field")
    return fields


def render(template: str, fields: list[str], record: dict[str, Any]) -> str:
    """Fill the template; raises MissingField for a field the record lacks."""
    values: dict[str, str] = {}
    for field in fields:
        if field not in record:
            raise MissingField(field)
        value = record[field]
        values[field] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return template.format_map(values)


def record_text(template: str | None, record: dict[str, Any]) -> str:
    """A record's prompt by the input rules: the template, else ``prompt``, else contexts.

    For records already validated at enqueue; a lane's permuted payload is rendered
    with it. Raises MissingField (or KeyError) for a field the record lacks.
    """
    if template:
        return render(template, template_fields(template), record)
    if "prompt" in record:
        return str(record["prompt"])
    return render(CONTEXTS_TEMPLATE, ["context", "query"], record)


#: One chat message: ``{"role": ..., "content": ...}``; the content is a string or a list
#: of content parts (``common.media``).
Message = dict[str, Any]


@dataclass(frozen=True)
class Chat:
    """A conversation, for the engine to put into its model's chat format."""

    messages: list[Message]


#: What an engine is asked: a text, or a conversation.
Prompt = str | Chat


def build_prompt(
    payload: dict[str, Any], text: str, *, system: str | None, schema: dict[str, Any] | None
) -> Prompt:
    """One item's prompt: its ``text`` (or its ``messages``), the run's system prompt and
    the schema instruction of a structured-output run."""
    if schema is not None:
        text = with_schema(text, schema)
    messages = chat_messages(payload, text, system)
    if messages is None:
        return text
    if schema is not None and "messages" in payload:
        last = messages[-1]
        content = last["content"]
        if is_parts(content):
            content = append_text(content, with_schema("", schema).lstrip())
        else:
            content = with_schema(content, schema)
        messages[-1] = {**last, "content": content}
    return Chat(messages)


def with_schema(text: str, schema: dict[str, Any]) -> str:
    """``text`` followed by the instruction to answer with JSON matching ``schema``."""
    return (
        f"{text}\n\nAnswer with a single JSON object that matches this JSON Schema, "
        f"and nothing else:\n{json.dumps(schema, ensure_ascii=False)}\n"
    )


def chat_messages(payload: dict[str, Any], text: str, system: str | None) -> list[Message] | None:
    """The conversation of one item, or None when it is a plain prompt.

    The payload's ``messages`` were validated at enqueue (``producer.inputs``); an item
    without them becomes one user message under the run's system prompt, holding its
    images and video first if it has any.
    """
    messages = payload.get("messages")
    media = has_media_fields(payload)
    if messages is None and system is None and not media:
        return None
    if messages is None:
        messages = [{"role": "user", "content": user_content(payload, text) if media else text}]
    conversation = [{"role": str(m["role"]), "content": _content(m["content"])} for m in messages]
    if system is not None and not (conversation and conversation[0]["role"] == "system"):
        conversation.insert(0, {"role": "system", "content": system})
    return conversation


def _content(content: Any) -> Any:
    """A message's content: its parts as they are (copied), anything else as a string."""
    return [dict(part) for part in content] if is_parts(content) else str(content)


def plain_chat(messages: list[Message]) -> str:
    """A template-free rendering (``role: content`` lines) for engines without one."""
    lines = [f"{message['role']}: {content_text(message['content'])}" for message in messages]
    return "\n".join([*lines, "assistant:"])
