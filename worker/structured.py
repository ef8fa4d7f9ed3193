"""Structured output: the schema goes into the prompt, a JSON object comes out, validated.

Models wrap JSON in prose or code fences, so the answer is looked for in order: the
whole text, a fenced code block, then the first balanced ``{...}`` or ``[...]`` found by
a scanner that knows strings (a brace inside a string does not count). The object
found is checked against the run's JSON Schema; a failure is
``error_kind=invalid_output`` with the raw text kept as the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from common.errors import FleetError
from common.results import MAX_ERROR_CHARS, ErrorKind
from worker.inference import Outcome

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


class InvalidOutput(FleetError, ValueError):
    """The answer holds no JSON value that the schema accepts."""


def candidates(text: str) -> Iterator[str]:
    """Pieces of ``text`` that may be the JSON answer, most likely first."""
    yield text.strip()
    for match in _FENCE.finditer(text):
        yield match.group(1).strip()
    for start, char in enumerate(text):
        if char in "{[":
            end = _balanced_end(text, start)
            if end is not None:
                yield text[start:end]


def _balanced_end(text: str, start: int) -> int | None:
    """The end (exclusive) of the bracketed value opening at ``start``; strings skipped."""
    closing = {"{": "}", "[": "]"}
    stack: list[str] = []
    position = start
    while position < len(text):
        char = text[position]
        if char == '"':
            position = _string_end(text, position)
            continue
        if char in closing:
            stack.append(closing[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
            if not stack:
                return position + 1
        position += 1
    return None


def _string_end(text: str, start: int) -> int:
    """The position after the JSON string opening at ``start`` (escapes honoured)."""
    position = start + 1
    while position < len(text):
        if text[position] == "\\":
            position += 2
            continue
        if text[position] == '"':
            return position + 1
        position += 1
    return position


def parse_output(text: str, schema: dict[str, Any]) -> Any:
    """The first JSON value in ``text`` that ``schema`` accepts; raises InvalidOutput."""
    import jsonschema  # here: a worker whose runs have no schema starts without it

    validator = jsonschema.Draft202012Validator(schema)
    first_error: str | None = None
    for candidate in candidates(text):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return value
        if first_error is None:
            where = "/".join(str(part) for part in error.absolute_path) or "(root)"
            first_error = f"schema violation at {where}: {error.message}"
    raise InvalidOutput(first_error or "no JSON object found in the answer")


def validate_outcomes(
    outcomes: Sequence[Outcome],
    schema: dict[str, Any],
    *,
    retries: int,
    regenerate: Callable[[list[int]], list[Outcome]],
) -> list[Outcome]:
    """Outcomes with ``parsed`` set, or failed as invalid_output after ``retries`` retries.

    ``regenerate`` runs the items at the given positions again (one batch) and returns
    their new outcomes in the same order.
    """
    result = list(outcomes)
    pending = list(range(len(result)))
    for attempt in range(retries + 1):
        invalid: list[int] = []
        for position in pending:
            outcome = result[position]
            if outcome.completion is None:
                continue
            try:
                parsed = parse_output(outcome.completion.text, schema)
            except InvalidOutput as error:
                invalid.append(position)
                result[position] = replace(
                    outcome,
                    error_kind=ErrorKind.invalid_output,
                    error_message=str(error)[:MAX_ERROR_CHARS],
                )
            else:
                result[position] = replace(outcome, parsed=parsed)
        if not invalid or attempt == retries:
            break
        for position, outcome in zip(invalid, regenerate(invalid), strict=True):
            result[position] = outcome
        pending = invalid
    return result
