"""Prompt templates: ``"Context: {context}\\nQuestion: {query}\\nAnswer:"`` filled from a record.

Only plain field names are allowed in braces, so a template cannot reach into
attributes or indexes of the values it is given.
"""

from __future__ import annotations

import json
from string import Formatter
from typing import Any

from common.constants import CONTEXTS_TEMPLATE
from common.errors import ConfigError, FleetError


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


def render_prompt(template: str | None, record: dict[str, Any]) -> str:
    """A record's prompt by the input rules: the template, else ``prompt``, else contexts.

    For records already validated at enqueue; a lane's permuted payload is rendered
    with it. Raises MissingField (or KeyError) for a field the record lacks.
    """
    if template:
        return render(template, template_fields(template), record)
    if "prompt" in record:
        return str(record["prompt"])
    return render(CONTEXTS_TEMPLATE, ["context", "query"], record)
