"""What a test does when a real service it needs is not there: skip, or fail in CI.

On a developer's machine without Redis or PostgreSQL, the tests that need them are
skipped with the reason shown. Under ``CI=true`` the same absence fails the test:
CI must never go green having skipped the real parts.

Under pytest-xdist each process takes a Redis database of its own
(``redis_url_of_this_process``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

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


def redis_url_of_this_process(base: str, xdist_worker: str | None) -> str:
    """``base``, or for pytest-xdist's worker ``gwN`` the database N below base's.

    Each xdist worker flushes its database and starts workers on the default queue:
    in one shared database they would take each other's work orders and answer each
    other's pings. ``redis://host:6379/15`` serves ``gw0`` from 15, ``gw1`` from 14 ...
    """
    if not xdist_worker:
        return base
    parts = urlsplit(base)
    database = int(parts.path.strip("/") or 0) - int(xdist_worker.removeprefix("gw"))
    if database < 0:
        raise pytest.UsageError(
            f"{xdist_worker} would need Redis database {database} below {base}: "
            "fewer xdist workers, or a higher database in FLEET_TEST_REDIS_URL"
        )
    return urlunsplit(parts._replace(path=f"/{database}"))
