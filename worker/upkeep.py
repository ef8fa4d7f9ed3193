"""Heartbeats, receipts and the reconciler inside every worker: nothing extra to run.

``celery -A worker worker`` imports this module (it is in the app's ``include``).
When the worker is ready, a daemon thread in its main process (which stays free
while the pool child computes) writes the worker's sign of life to SQL every
``FLEET_HEARTBEAT_INTERVAL`` seconds and offers one reconciler pass
(``common.reconcile``) every ``FLEET_RECONCILE_INTERVAL`` seconds, jittered. The
pass runs only in the worker that takes the fleet's turn (``ReconcileTurn``, a
compare-and-set on one row), so a fleet of any size makes about one pass per
interval; the passes are compare-and-set themselves, so an overlap is harmless.
Errors (broker or database down) are logged and the next tick tries again. As
each slice order arrives, the main process also notes the receipt
(``common.models.Receipt``), so a worker killed before its pool process claims the
slice does not hide the slice until the visibility timeout.

The thread shares its process with the pool's fork: when a pool child dies, the
main process forks a replacement. A child forked while this thread was inside
SQLite inherits SQLite's process-wide lock bookkeeping half-updated and waits
forever for a write lock nobody holds (seen as a slice "received" and never
started). So each tick works under ``_fork_guard``, which ``os.register_at_fork``
takes before every fork (registered as the worker starts, not at import), and the
tick's engine is unpooled: between ticks this process holds no connection a child
could inherit.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from datetime import datetime
from typing import Any

from celery.signals import task_received, worker_init, worker_ready, worker_shutdown
from sqlalchemy import Engine

from common.constants import SLICE_TASK
from common.db import make_engine, session_scope, single_statements
from common.messages import SliceOrder
from common.models import utcnow
from common.reconcile import reconcile
from common.settings import Settings, process_settings
from common.store import beat, note_receipt, take_reconcile_turn

log = logging.getLogger(__name__)

_stop = threading.Event()

#: How long a fork waits for the tick in progress to leave the database.
FORK_WAIT_S = 30.0


class ForkGuard:
    """A lock that ``fork`` takes too, so no child is born mid-tick.

    ``before_fork`` waits at most ``FORK_WAIT_S`` (a database that hangs must not
    hang the worker's event loop for ever); past that it forks anyway and says so.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held_for_fork = False

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *_: object) -> None:
        self._lock.release()

    def before_fork(self) -> None:
        self._held_for_fork = self._lock.acquire(timeout=FORK_WAIT_S)
        if not self._held_for_fork:
            log.warning("forking while worker upkeep is still in the database")

    def after_fork(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._lock.release()


_fork_guard = ForkGuard()


class MainProcessDatabase:
    """The main process's engine, made on first use.

    On SQLite it is unpooled (see the module's doc): between ticks the process
    holds no connection a child could inherit. On a server database it keeps one
    connection, so a receipt per slice order and a beat every few seconds cost a
    statement, not a new server connection each; a forked child drops the pool
    without closing it (``forget_in_child``), as SQLAlchemy prescribes, so the
    parent's connection stays the parent's alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._single: Engine | None = None

    def engine(self, settings: Settings) -> Engine:
        with self._lock:
            if self._engine is None:
                url = settings.sqlalchemy_url
                # Beats, receipts, reconciler passes: a commit need not wait for the disk.
                sqlite = url.startswith("sqlite")
                self._engine = make_engine(url, pooled=not sqlite, lazy_commits=True)
            return self._engine

    def single_statements(self, settings: Settings) -> Engine:
        """The same engine for one-statement writes (``common.db.single_statements``):
        for receipts. Made once (each call of ``execution_options`` makes a new one)."""
        engine = self.engine(settings)
        with self._lock:
            if self._single is None:
                self._single = single_statements(engine)
            return self._single

    def forget_in_child(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
            self._engine = None
        self._single = None


_database = MainProcessDatabase()


@functools.cache
def register_fork_hooks() -> None:
    """Make every fork wait for the tick in progress and drop the pool in the child. Once."""
    os.register_at_fork(
        before=_fork_guard.before_fork,
        after_in_parent=_fork_guard.after_fork,
        after_in_child=_fork_guard.after_fork,
    )
    os.register_at_fork(after_in_child=_database.forget_in_child)


@worker_init.connect
def _prepare_main_process(**_: object) -> None:
    """The worker is starting, its pool not forked yet: the forks must know the upkeep."""
    register_fork_hooks()


def _loop(app: Any, settings: Settings, name: str) -> None:
    booted_at = utcnow()
    tick = settings.heartbeat_interval or settings.reconcile_interval
    next_pass = time.monotonic() + settings.reconcile_interval * random.uniform(0.5, 1.5)
    while True:
        try:
            with _fork_guard:
                db = _database.engine(settings)
                next_pass = _tick(app, settings, db, name, booted_at, next_pass)
        except Exception:  # an outage must not end the loop: log it, try again next tick
            log.warning("worker upkeep failed; trying again in %ss", tick, exc_info=True)
        if _stop.wait(tick):
            return


def _tick(
    app: Any, settings: Settings, db: Engine, name: str, booted_at: datetime, next_pass: float
) -> float:
    """One heartbeat, and a reconciler pass when one is due; the next pass's time."""
    if settings.heartbeat_interval:
        with session_scope(db) as session:
            beat(session, name=name, booted_at=booted_at)
    if settings.reconcile_interval and time.monotonic() >= next_pass:
        next_pass = time.monotonic() + settings.reconcile_interval * random.uniform(0.5, 1.5)
        with session_scope(db) as session:
            turn = take_reconcile_turn(session, worker=name, interval_s=settings.reconcile_interval)
        if not turn:
            return next_pass
        done = reconcile(
            db, app, lease_s=settings.slice_lease, heartbeat_timeout_s=settings.heartbeat_timeout
        )
        if done.requeued or done.finalized:
            log.info(
                "reconciler: slices re-enqueued %s, runs finalized %s",
                done.requeued,
                done.finalized,
            )
    return next_pass


@worker_ready.connect
def _start_upkeep(sender: Any = None, **_: object) -> None:
    settings = process_settings()
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


@task_received.connect
def _note_receipt(sender: Any = None, request: Any = None, **_: object) -> None:
    """Write which slice order this worker took, before its pool process sees it.

    Runs in the main process's event loop as the message arrives, so a worker
    killed from here on is known to hold the slice (``Receipt``). Needs heartbeats:
    the reconciler tells a dead holder by its silence. Best effort: if the write
    fails, the slice still comes back after the broker's visibility timeout.
    """
    if request is None or request.name != SLICE_TASK:
        return
    settings = process_settings()
    if not settings.heartbeat_interval:
        return
    try:
        order = SliceOrder.decode(list(request.args))
        with session_scope(_database.single_statements(settings)) as session:
            note_receipt(session, slice_id=order.slice_id, worker=request.hostname)
    except Exception:
        log.warning("could not note the receipt of task %s", request.id, exc_info=True)


@worker_shutdown.connect
def _stop_upkeep(**_: object) -> None:
    _stop.set()
