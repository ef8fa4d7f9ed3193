"""``fleet doctor``: is this machine ready to produce or serve? One line per check.

Each check returns a ``Check`` (ok, warn or fail, and what to do about it) instead
of raising, so the operator sees every problem at once. Nothing here imports torch
or initialises CUDA: GPUs are listed by ``nvidia-smi``, versions read from package
metadata.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from common.errors import ConfigError
from common.settings import Settings
from producer.gpus import detect_gpus
from producer.valkey import redis_client_url

#: Packages whose versions the report shows (torch read from metadata, never imported).
PACKAGES = ("celery", "kombu", "redis", "flower", "sqlalchemy", "sqlmodel", "transformers", "torch")

#: Seconds each network check may take.
CONNECT_TIMEOUT_S = 3.0


class Level(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str


def check_broker(settings: Settings) -> Check:
    """The broker answers PING, and keeps its queue (appendonly, noeviction)."""
    url = settings.broker_url
    if url is None:
        return Check("broker", Level.warn, "FLEET_BROKER_URL not set: only `fleet run` (embedded)")
    client = redis.Redis.from_url(
        redis_client_url(url),
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=CONNECT_TIMEOUT_S,
    )
    try:
        client.ping()
        config = _redis_config(client)
    except redis.RedisError as error:
        return Check("broker", Level.fail, f"{_redact(url)} does not answer: {error}")
    finally:
        client.close()
    problems = []
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        problems.append(
            f"maxmemory-policy is {config['maxmemory-policy']} "
            "(queued work may be evicted; use noeviction)"
        )
    if config.get("appendonly", "yes") != "yes":
        problems.append("appendonly is off (a restart loses queued work; fleet resume rebuilds it)")
    if problems:
        return Check("broker", Level.warn, f"{_redact(url)} answers, but " + "; ".join(problems))
    return Check("broker", Level.ok, f"{_redact(url)} answers")


def _redis_config(client: redis.Redis) -> dict[str, str]:
    """The two settings that matter, or nothing where CONFIG is not allowed (managed Redis)."""
    try:
        found = client.config_get("maxmemory-policy")
        found.update(client.config_get("appendonly"))
    except redis.ResponseError:
        return {}
    return {str(key): str(value) for key, value in found.items()}


def check_database(settings: Settings) -> Check:
    """The database accepts a connection and a ``SELECT 1``; nothing is created."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            return Check("database", Level.fail, f"SQLite folder {folder} does not exist")
    connect_args = {"connect_timeout": int(CONNECT_TIMEOUT_S)} if "postgresql" in url else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        first = str(error).splitlines()[0]
        return Check("database", Level.fail, f"{_redact(url)}: {first}")
    finally:
        engine.dispose()
    return Check("database", Level.ok, f"{_redact(url)} answers")


def check_gpus(*, require: bool) -> Check:
    """The GPUs nvidia-smi lists; none is fine for CPU workers unless ``require``."""
    gpus = detect_gpus()
    if not gpus:
        level = Level.fail if require else Level.warn
        return Check("gpus", level, "no GPU visible (nvidia-smi absent or lists none): CPU only")
    listed = ", ".join(f"{gpu.index}: {gpu.name} ({gpu.memory})" for gpu in gpus)
    return Check("gpus", Level.ok, f"{len(gpus)} visible: {listed}")


def check_model(model: str) -> Check:
    """The model as ``fleet run --model`` takes it (a training run's folder: its latest
    ``step_N``) loads its config and tokenizer, offline first."""
    from producer.checkpoints import model_ref
    from producer.model_check import check_model as load_check

    try:
        info = load_check(model_ref("hf", model))
    except ConfigError as error:
        return Check("model", Level.fail, str(error))
    context = info.context if info.context is not None else "?"
    return Check("model", Level.ok, f"{info.ref}: {info.model_type}, context {context}")


def check_versions() -> Check:
    """Python and the packages that must agree between producer and workers."""
    found = [f"python {platform.python_version()}"]
    missing = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        return Check(
            "versions", Level.fail, f"not installed: {', '.join(missing)}; " + ", ".join(found)
        )
    return Check("versions", Level.ok, ", ".join(found))


def run_checks(settings: Settings, *, model: str | None, require_gpu: bool) -> list[Check]:
    checks = [
        check_versions(),
        check_broker(settings),
        check_database(settings),
        check_gpus(require=require_gpu),
    ]
    if model is not None:
        checks.append(check_model(model))
    return checks


def _redact(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host``: URLs are shown, passwords not."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    if ":" not in credentials:
        return url  # a user name, no password
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
