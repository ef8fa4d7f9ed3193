"""The reconciler inside every worker: no beat process, no extra service to run.

``celery -A worker worker`` imports this module (it is in the app's ``include``).
When the worker is ready, a daemon thread in its main process runs one
reconciler pass (``producer.reconcile``) every ``FLEET_RECONCILE_INTERVAL``
seconds, with jitter so a fleet's workers do not all pass at once; the passes
are compare-and-set, so running them in every worker is safe. Errors (broker or
database down) are logged and the next pass tries again.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from common.db import make_engine
from common.settings import Settings

log = logging.getLogger(__name__)

_stop = threading.Event()


def _loop(app: Any, settings: Settings) -> None:
    from producer.reconcile import reconcile

    db = None
    while not _stop.wait(settings.reconcile_interval * random.uniform(0.5, 1.5)):
        try:
            db = db or make_engine(settings.sqlalchemy_url)
            done = reconcile(db, app, lease_s=settings.slice_lease)
        except Exception:  # an outage must not end the loop: log it, try again later
            log.warning(
                "reconciler pass failed; next pass in about %ss",
                settings.reconcile_interval,
                exc_info=True,
            )
            continue
        if done.requeued or done.finalized:
            log.info(
                "reconciler: slices re-enqueued %s, runs finalized %s",
                done.requeued,
                done.finalized,
            )


@worker_ready.connect
def _start_reconciler(sender: Any = None, **_: object) -> None:
    settings = Settings()
    if settings.reconcile_interval == 0 or sender is None:
        return
    _stop.clear()
    thread = threading.Thread(
        target=_loop, args=(sender.app, settings), name="fleet-reconciler", daemon=True
    )
    thread.start()


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    _stop.set()
