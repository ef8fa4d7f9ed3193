"""The worker side: the Celery app, the slice and finalize tasks, engines and batching.

``celery -A worker worker --concurrency=1`` asks this package for ``app``; the app is
made then (``worker.app``), not when a module of the package is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.app import app

        globals()["app"] = app  # the submodule's import bound ``app`` to the module
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
