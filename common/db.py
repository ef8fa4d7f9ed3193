"""Database engines and sessions: SQLite (WAL, busy timeout) or PostgreSQL (psycopg 3).

Tables are created on first use, under a lock so that many workers starting at
once against an empty database do not trip over each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel

import common.models  # noqa: F401  (registers the tables on SQLModel.metadata)

#: How long an SQLite writer waits for the lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 60_000

#: Connection pool of a server database (PostgreSQL): checked before use, so a
#: restarted server is picked up.
_SERVER_POOL: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}

#: Key of the PostgreSQL advisory lock held while creating tables.
_SCHEMA_LOCK_KEY = 0x466C656574  # "Fleet"


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for ``url`` with the tables created.

    ``pooled=False``: every session opens its own connection and closes it at the
    end, so between uses the process holds no connection, no socket and no SQLite
    lock state that a forked child could inherit (``worker.upkeep``).
    """
    unpooled: dict[str, Any] = {"poolclass": NullPool}
    if make_url(url).get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, {} if pooled else unpooled)
    else:
        engine = create_engine(url, **(_SERVER_POOL if pooled else unpooled))
    create_tables(engine)
    return engine


def _sqlite_engine(url: str, pool_args: dict[str, Any]) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        **pool_args,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then
        # writes can fail with "database is locked" without waiting at all.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_tables(engine: Engine) -> None:
    """Create the tables that do not exist yet; safe to call from many processes."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
            )
        SQLModel.metadata.create_all(connection)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session
