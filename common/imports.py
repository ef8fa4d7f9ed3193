"""Loading what a user names as ``module:name``: a scorer, a permutation, a pydantic model."""

from __future__ import annotations

import importlib
from typing import Any

from common.errors import ConfigError


def user_attribute(module_name: str, name: str, *, label: str) -> Any:
    """``module_name.name`` (None if the module lacks it); a ConfigError if the import fails.

    ``label`` opens the error message, e.g. ``scorer 'mymod:judge'``.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{label}: cannot import {module_name}: {error}") from error
    return getattr(module, name, None)
