"""The Celery app factory and configuration: the half of the broker contract both sides build.

The producer builds an app to publish work orders, a worker's ``worker.app`` to consume
them; both take the same configuration from here. It is built from the settings when
Celery first needs it, not at import, so creating an app connects to nothing.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from common.constants import DEFAULT_QUEUE
from common.errors import ConfigError
from common.settings import Settings, process_settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """The fleet's Celery settings: JSON only, late acks, one message at a time."""
    if settings.broker_url is None:
        raise ConfigError(
            "FLEET_BROKER_URL is not set: a worker needs the fleet's broker "
            "(fleet run sets it for the local workers it starts)"
        )
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # Reconnect for as long as the broker is away (a restart, a failover).
        "broker_connection_max_retries": None,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # Results live in SQL; Celery's result backend is not used.
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": DEFAULT_QUEUE,
        "task_time_limit": settings.slice_time_limit,
        "task_soft_time_limit": settings.slice_soft_time_limit,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        # Preloading a model happens in worker_process_init: give it time.
        "worker_proc_alive_timeout": settings.worker_start_timeout,
    }
    if settings.broker_url.startswith("rediss://") and "ssl_cert_reqs" not in settings.broker_url:
        # kombu would accept any certificate by default: verify it unless the URL says otherwise.
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return config


def create_app(settings: Settings | None = None) -> Celery:
    """A fleet app; ``settings`` None means this process's own (``process_settings``),
    read from the environment when Celery first needs its configuration.

    The task modules are named, not imported: only a worker loads them.
    """
    app = Celery(
        "fleet",
        include=["worker.tasks", "worker.upkeep", "worker.control", "worker.lifeline"],
        set_as_current=False,
    )
    app.add_defaults(lambda: celery_config(settings or process_settings()))
    return app
