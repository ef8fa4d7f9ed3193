"""The Celery app: ``celery -A worker worker --concurrency=1`` finds it as ``worker.app``.

The app and its configuration are the broker contract in ``common.celery_app``; the
settings are read from the environment when Celery first needs them, not at import.
"""

from __future__ import annotations

from common.celery_app import create_app

app = create_app()
