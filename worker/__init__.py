"""The worker side: the Celery app, the slice and finalize tasks, engines and batching.

``celery -A worker worker --concurrency=1`` loads ``worker.app``.
"""

from worker.app import app

__all__ = ["app"]
