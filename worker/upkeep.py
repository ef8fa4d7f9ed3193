"""Heartbeats and the reconciler inside every worker: no beat process, nothing extra to run.

``celery -A worker worker`` imports this module (it is in the app's ``include``).
When the worker is ready, a daemon thread in its main process (which stays free
while the pool child computes) writes the worker's sign of life to SQL every
``FLEET_HEARTBEAT_INTERVAL`` seconds and runs one reconciler pass
(``producer.reconcile``) every ``FLEET_RECONCILE_INTERVAL`` seconds, jittered so
a fleet's workers do not all pass at once. Passes are compare-and-set, so running
them in every worker is safe. Errors (broker or database down) are logged and the
next tick tries again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import Engine

from common.db import make_engine, session_scope
from common.models import utcnow
from common.settings import Settings
from common.store import beat

log = logging.getLogger(__name__)

_stop = threading.Event()


def _loop(app: Any, settings: Settings, name: str) -> None:
    from producer.reconcile import reconcile

    booted_at = utcnow()
    tick = settings.heartbeat_interval or settings.reconcile_interval
    next_pass = time.monotonic() + settings.reconcile_interval * random.uniform(0.5, 1.5)
    db: Engine | None = None
    while True:
        try:
            db = db or make_engine(settings.sqlalchemy_url)
            if settings.heartbeat_interval:
                with session_scope(db) as session:
                    beat(session, name=name, booted_at=booted_at)
            if settings.reconcile_interval and time.monotonic() >= next_pass:
                next_pass = time.monotonic() + settings.reconcile_interval * random.uniform(
                    0.5, 1.5
                )
                done = reconcile(
                    db,
                    app,
                    lease_s=settings.slice_lease,
                    heartbeat_timeout_s=settings.heartbeat_timeout,
                )
                if done.requeued or done.finalized:
                    log.info(
                        "reconciler: slices re-enqueued %s, runs finalized %s",
                        done.requeued,
                        done.finalized,
                    )
        except Exception:  # an outage must not end the loop: log it, try again next tick
            log.warning("worker upkeep failed; trying again in %ss", tick, exc_info=True)
        if _stop.wait(tick):
            return


@worker_ready.connect
def _start_upkeep(sender: Any = None, **_: object) -> None:
    settings = Settings()
    if sender is None or not (settings.heartbeat_interval or settings.reconcile_interval):
        return
    _stop.clear()
    thread = threading.Thread(
        target=_loop,
        args=(sender.app, settings, sender.hostname),
        name="fleet-upkeep",
        daemon=True,
    )
    thread.start()


@worker_shutdown.connect
def _stop_upkeep(**_: object) -> None:
    _stop.set()
