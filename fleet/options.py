"""Keyword options of ``fleet.run`` and ``fleet.enqueue``: the command line's job options.

``fleet.run(inputs, model=..., max_new_tokens=16)`` takes every ``fleet run`` option by
its long name with ``_`` for ``-`` (``producer.cli.options.JobOptions``). They are
checked as the command line checks them: an unknown name, a value of the wrong type,
or one below its option's minimum is a ConfigError naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, get_type_hints

import pydantic

from common.errors import ConfigError
from producer.cli.options import JobOptions

#: Options that take a list; one string is a list of one.
LIST_OPTIONS = ("model", "permutation", "dataset")


def job_options(values: Mapping[str, Any]) -> JobOptions:
    """The JobOptions of keyword ``values``; ConfigError naming a bad one."""
    known = [field.name for field in fields(JobOptions)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    given = {
        name: [value] if name in LIST_OPTIONS and isinstance(value, str) else value
        for name, value in values.items()
    }
    try:
        options = pydantic.TypeAdapter(JobOptions).validate_python(given, strict=False)
    except pydantic.ValidationError as error:
        problem = error.errors()[0]
        name = ".".join(str(part) for part in problem["loc"])
        raise ConfigError(f"option {name}: {problem['msg']}") from None
    _check_bounds(options, given)
    return options


def _check_bounds(options: JobOptions, given: Mapping[str, Any]) -> None:
    """The ``min`` and ``max`` the command line's options declare, for the given values."""
    hints = get_type_hints(JobOptions, include_extras=True)
    for name in given:
        value = getattr(options, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        for info in getattr(hints[name], "__metadata__", ()):
            low, high = getattr(info, "min", None), getattr(info, "max", None)
            if low is not None and value < low:
                raise ConfigError(f"option {name}: {value} is below its minimum {low}")
            if high is not None and value > high:
                raise ConfigError(f"option {name}: {value} is above its maximum {high}")
