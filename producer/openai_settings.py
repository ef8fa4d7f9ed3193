"""The generation settings of one OpenAI request's body, each checked on its own.

``max_tokens`` (or, on chat, ``max_completion_tokens``), ``temperature`` (0 to 2),
``top_p`` (above 0 up to 1), ``seed``, ``stop`` (a text or up to 4) and
``response_format`` (``json_schema``: its schema, checked as ``--json-schema`` checks
one; ``json_object``: any object; ``text``: none) become a ``RequestSettings``. A bad
value is a :class:`BodyError` naming its field (``body.top_p``); the reader of the file
puts it on its line.
"""

from __future__ import annotations

from typing import Any

from common.errors import FleetError
from common.request_settings import RequestSettings
from producer.output_schema import check_schema

#: Body fields read as generation settings (besides the input and ``model``).
SETTINGS = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "response_format",
)

#: Most stop texts a request may give (OpenAI's limit).
MAX_STOPS = 4


class BodyError(FleetError, ValueError):
    """A setting of a request's body that cannot be honoured: its field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def body_settings(body: dict[str, Any], *, chat: bool) -> RequestSettings:
    """The settings ``body`` gives (None for each it leaves to the run)."""
    return RequestSettings(
        max_new_tokens=_max_tokens(body, chat=chat),
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0, low_open=True),
        seed=_integer(body, "seed"),
        stop=_stop(body),
        output_schema=_schema(body),
    )


def _max_tokens(body: dict[str, Any], *, chat: bool) -> int | None:
    given = _integer(body, "max_tokens", low=1)
    if not chat and "max_completion_tokens" in body:
        raise BodyError("body.max_completion_tokens", "is for chat requests; use max_tokens")
    newer = _integer(body, "max_completion_tokens", low=1)
    if given is not None and newer is not None and given != newer:
        raise BodyError("body.max_completion_tokens", f"{newer} contradicts max_tokens {given}")
    return newer if newer is not None else given


def _integer(body: dict[str, Any], name: str, low: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(f"body.{name}", f"must be an integer, got {value!r}")
    if low is not None and value < low:
        raise BodyError(f"body.{name}", f"must be at least {low}, got {value}")
    return value


def _number(
    body: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    valid = not isinstance(value, bool) and isinstance(value, (int, float))
    if not valid or value > high or value < low or (low_open and value == low):
        bounds = f"above {low:g} up to {high:g}" if low_open else f"from {low:g} to {high:g}"
        raise BodyError(f"body.{name}", f"must be a number {bounds}, got {value!r}")
    return float(value)


def _stop(body: dict[str, Any]) -> tuple[str, ...] | None:
    value = body.get("stop")
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or not 0 < len(stops) <= MAX_STOPS
        or not all(isinstance(stop, str) and stop for stop in stops)
    ):
        raise BodyError("body.stop", f"must be a non-empty string or a list of 1 to {MAX_STOPS}")
    return tuple(stops)


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema ``response_format`` asks for: its ``json_schema.schema``, any
    object for ``json_object``, none for ``text``."""
    value = body.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise BodyError("body.response_format", "type must be text, json_object or json_schema")
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    try:
        return check_schema(schema)
    except ValueError as error:
        raise BodyError("body.response_format.json_schema.schema", str(error)) from None
