"""Database engines and sessions: SQLite (WAL, busy timeout) or PostgreSQL (psycopg 3).

Tables are created on first use, under a lock so that many workers starting at
once against an empty database do not trip over each other. A database made by an
earlier version gets the columns and indexes it lacks (``_upgrade``).

Connections: a pooled engine keeps at most ``_SERVER_POOL``'s pool size plus
overflow open. A worker's pool process uses one at a time (its slice's
transactions follow each other), and its main process opens one only for the
length of a heartbeat or a reconciler pass (``pooled=False``): about two
connections per worker, so a fleet of N workers needs ``max_connections`` of
about 2N plus the producers, or PgBouncer in front (README, "Many workers").
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    MetaData,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel

from common.models import SchemaMark  # (and registers every table on SQLModel.metadata)

#: How long an SQLite writer waits for the lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 60_000

#: Connection pool of a server database (PostgreSQL). Not pinged before each use
#: (a round trip per transaction): a connection that a restarted server dropped
#: fails its transaction, SQLAlchemy then discards the whole pool, and the caller's
#: retry (a slice task's backoff, the watcher's patience) gets fresh connections.
_SERVER_POOL: dict[str, Any] = {"pool_size": 1, "max_overflow": 4}

#: Seconds a new PostgreSQL connection may take (libpq's ``connect_timeout``) unless the
#: URL sets its own: a server that accepts connections and never answers (overloaded,
#: half up, a stuck proxy) fails the attempt, which is then retried like an outage,
#: instead of holding a worker's pool process, or a command, for ever.
CONNECT_TIMEOUT_S = 10

#: Tables written per item whose references are not checked (``common.models``).
_UNCHECKED_TABLES = ("result", "attempt")

#: Key of the PostgreSQL advisory lock held while creating tables.
_SCHEMA_LOCK_KEY = 0x466C656574  # "Fleet"


def make_engine(url: str, *, pooled: bool = True, lazy_commits: bool = False) -> Engine:
    """An engine for ``url`` with the tables created.

    ``pooled=False``: every session opens its own connection and closes it at the
    end, so between uses the process holds no connection, no socket and no SQLite
    lock state that a forked child could inherit (``worker.upkeep``).

    ``lazy_commits``: on PostgreSQL a commit returns before its WAL reaches the disk
    (``synchronous_commit=off``). Only for writes whose loss in a crash of the server
    costs a delay, never a result: a worker's heartbeats and slice receipts, and
    the reconciler's compare-and-sets, which its next pass makes again.
    """
    unpooled: dict[str, Any] = {"poolclass": NullPool}
    if make_url(url).get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, {} if pooled else unpooled)
    else:
        engine = create_engine(
            url,
            **(_SERVER_POOL if pooled else unpooled),
            connect_args=_server_connect(url, lazy_commits),
        )
    create_tables(engine)
    return engine


def _server_connect(url: str, lazy_commits: bool) -> dict[str, Any]:
    """psycopg's connection arguments: the connect timeout, and for ``lazy_commits``
    commits that do not wait for the disk."""
    connect: dict[str, Any] = {}
    if "connect_timeout" not in make_url(url).query:
        connect["connect_timeout"] = CONNECT_TIMEOUT_S
    if lazy_commits:
        connect["options"] = "-c synchronous_commit=off"
    return connect


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
    """Create the tables that do not exist yet, and upgrade those an earlier version
    made; safe to call from many processes. A database already marked with this
    schema (``SchemaMark``) costs two reads."""
    if _marked_current(engine):
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
            )
        SQLModel.metadata.create_all(connection)
        _upgrade(connection)
        connection.execute(delete(SchemaMark))
        connection.execute(insert(SchemaMark).values(id=1, fingerprint=schema_fingerprint()))


@functools.cache
def schema_fingerprint(metadata: MetaData = SQLModel.metadata) -> str:
    """A digest of every table's columns (name, type, nullability), indexes and foreign
    keys, as ``common.models`` declares them (``metadata``): it changes whenever
    ``_upgrade`` has work to do. Computed once per ``metadata``: the declared tables
    do not change while a process runs."""
    shape = [
        (
            table.name,
            sorted((column.name, str(column.type), column.nullable) for column in table.columns),
            sorted(str(index.name) for index in table.indexes),
            sorted(str(key.target_fullname) for key in table.foreign_keys),
        )
        for table in metadata.sorted_tables
    ]
    return hashlib.sha256(repr(shape).encode()).hexdigest()


def _marked_current(engine: Engine) -> bool:
    table = SchemaMark.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        if not inspect(connection).has_table(table.name):
            return False
        mark = connection.execute(select(table.c.fingerprint)).scalar_one_or_none()
    return mark == schema_fingerprint()


def _upgrade(connection: Connection) -> None:
    """Add the columns and indexes an older version's tables lack; on PostgreSQL, drop
    the foreign keys that ``common.models`` no longer declares (``Result``, ``Attempt``).

    New integer columns are counters: existing rows read as zero. Others start NULL.
    SQLite cannot drop a constraint in place: an older embedded database keeps them.
    """
    inspector = inspect(connection)
    if connection.dialect.name == "postgresql":
        for name in _UNCHECKED_TABLES:
            for key in inspector.get_foreign_keys(name):
                connection.execute(text(f'ALTER TABLE "{name}" DROP CONSTRAINT "{key["name"]}"'))
    for table in SQLModel.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=connection.dialect)
            default = " NOT NULL DEFAULT 0" if isinstance(column.type, Integer) else ""
            connection.execute(
                text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{default}')
            )
        for index in table.indexes:
            index.create(connection, checkfirst=True)


def single_statements(engine: Engine) -> Engine:
    """``engine`` for transactions of one statement each. On PostgreSQL in autocommit:
    a statement is then its own transaction, as atomic, without the BEGIN and COMMIT
    round trips around it. Elsewhere ``engine`` itself (SQLite has no round trips)."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session
