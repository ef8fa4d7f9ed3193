"""What a test does when a real service it needs is not there: skip, or fail in CI.

On a developer's machine without Redis or PostgreSQL, the tests that need them are
skipped with the reason shown. Under ``CI=true`` the same absence fails the test:
CI must never go green having skipped the real parts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import pytest

#: Values of ``CI`` that mean "this is CI" (GitHub Actions, GitLab and most others set true).
_TRUTHY = ("1", "true", "yes", "on")


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment says this run is CI (``CI=true``, ``CI=1`` ...)."""
    environ = os.environ if environ is None else environ
    return environ.get("CI", "").strip().lower() in _TRUTHY


def service_missing(reason: str, environ: Mapping[str, str] | None = None) -> NoReturn:
    """Skip the test for ``reason``; fail it instead when running in CI."""
    if in_ci(environ):
        pytest.fail(f"{reason} (CI=true: a service the tests need must be there)", pytrace=False)
    pytest.skip(reason)
