"""Chat models: an item's ``messages`` (or its prompt under a ``--system`` prompt) become
the model's own chat format through the engine's chat template.

An item without ``messages`` in a run without a system prompt is sent as it is.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, str]


def chat_messages(payload: dict[str, Any], prompt: str, system: str | None) -> list[Message] | None:
    """The conversation to render for one item, or None when it is a plain prompt.

    The payload's ``messages`` were validated at enqueue (``producer.inputs``).
    """
    messages = payload.get("messages")
    if messages is None and system is None:
        return None
    if messages is None:
        messages = [{"role": "user", "content": prompt}]
    conversation = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if system is not None and not (conversation and conversation[0]["role"] == "system"):
        conversation.insert(0, {"role": "system", "content": system})
    return conversation


def plain_chat(messages: list[Message]) -> str:
    """A template-free rendering (``role: content`` lines) for engines without one."""
    lines = [f"{message['role']}: {message['content']}" for message in messages]
    return "\n".join([*lines, "assistant:"])
