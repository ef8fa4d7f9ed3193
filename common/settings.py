"""One settings class for the whole fleet, read from ``FLEET_*`` environment variables.

Built in entry points (the CLI command, the worker's app configuration) and passed
down; never read from a module global.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.constants import DEFAULT_MAX_LINE_BYTES
from common.errors import ConfigError

ENV_PREFIX = "FLEET_"

#: Environment names under the prefix that belong to the test-suite, not to settings.
_FOREIGN_PREFIXES = ("FLEET_TEST_",)

_BROKER_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://")


class Settings(BaseSettings):
    """Every knob of the fleet. Misspelled ``FLEET_`` variables are an error, not ignored."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    #: Redis URL of the broker; unset means ``fleet run`` starts an embedded server.
    broker_url: str | None = None
    #: SQLAlchemy URL of the database; unset means SQLite under ``state_dir``.
    database_url: str | None = None
    #: Where the embedded broker, the SQLite database and run outputs live.
    state_dir: Path = Path(".fleet")

    #: Items per slice (one Celery task, the unit of retry).
    slice_size: int = 64
    #: Most prompts in one forward batch.
    batch_size: int = 16
    #: Most tokens in one batch, counting padded prompts plus new tokens.
    max_batch_tokens: int = 32768
    #: Tokens generated per prompt unless a run says otherwise.
    max_new_tokens: int = 64

    #: Seconds a publish keeps retrying while the broker is away (``fleet enqueue``,
    #: ``fleet resume``); then it stops, saying what was sent and how to send the rest.
    publish_retry_s: float = Field(default=60.0, ge=0)

    #: Longest input line ``fleet run``/``enqueue`` read, in bytes (``--max-line-bytes``).
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, ge=1)

    #: Hard time limit of one slice task, in seconds. The soft limit and the
    #: broker's visibility timeout are derived from it so the three always agree.
    slice_time_limit: int = 3600

    #: Times an item may be handed to an engine (its worker dying on it counts)
    #: before it is quarantined instead of retried; a run's ``--max-attempts``.
    max_attempts: int = 3
    #: Seconds between two reconciler passes in each worker; 0 turns them off.
    reconcile_interval: int = 15
    #: Seconds between two signs of life of a worker in SQL; 0 turns them off.
    #: A worker silent for three intervals is presumed dead and its slice handed out.
    heartbeat_interval: int = 5

    #: Torch threads per worker process (unset: torch's own default).
    torch_threads: int | None = None
    #: Torch dtype for the ``hf`` engine: auto, float32, bfloat16, float16.
    dtype: str = "auto"
    #: Most prompt positions (rows x columns) one prefill pass of the ``hf`` engine
    #: computes; bigger batches are prefilled row by row. Unset: 4096 on a CPU (faster
    #: there, see ``bench.batching``), one pass on a GPU; 0: always one pass.
    prefill_tokens: int | None = Field(default=None, ge=0)

    #: Host-memory guard: a batch costing more tokens than this (padded prompts + new
    #: tokens) is treated as out of memory and halved, as a CUDA OOM would be.
    memory_guard_tokens: int | None = None

    #: Base URL of an OpenAI-compatible server for ``--engine openai`` (ends in ``/v1``).
    openai_base_url: str | None = None
    #: Its API key; from the environment only, never the command line.
    openai_api_key: SecretStr | None = None
    #: Requests in flight at once per worker process.
    openai_concurrency: int = 8
    #: Seconds one request may take.
    openai_timeout_s: float = 120.0
    #: Tries per request on 429, 5xx and timeouts (exponential backoff between them).
    openai_max_attempts: int = 5

    #: Model a worker loads when its process starts (before its first task).
    preload_model: str | None = None
    #: Engine of the preloaded model: hf or echo.
    preload_engine: str = "hf"
    #: Seconds a worker's pool process may take to start, preloading included
    #: (Celery's ``worker_proc_alive_timeout``; its own default is 4).
    worker_start_timeout: float = 600.0

    #: Set by ``fleet run`` / ``fleet workers`` for the workers they start: the
    #: launcher's pid. A worker whose launcher is gone shuts down (``worker.lifeline``).
    launcher_pid: int | None = None

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_BROKER_SCHEMES):
            raise ValueError(f"FLEET_BROKER_URL must start with one of {_BROKER_SCHEMES}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str | None) -> str | None:
        """Use psycopg 3 for PostgreSQL whatever spelling of the URL was given."""
        if value is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator(
        "slice_size",
        "batch_size",
        "max_batch_tokens",
        "max_new_tokens",
        "openai_concurrency",
        "openai_max_attempts",
        "max_attempts",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("reconcile_interval", "heartbeat_interval")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (off) or more seconds")
        return value

    @field_validator("memory_guard_tokens")
    @classmethod
    def _positive_or_unset(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("openai_timeout_s")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be above 0 seconds")
        return value

    @field_validator("slice_time_limit")
    @classmethod
    def _long_enough(cls, value: int) -> int:
        if value < 30:
            raise ValueError("must be at least 30 seconds")
        return value

    @model_validator(mode="after")
    def _no_unknown_variables(self) -> Settings:
        known = {ENV_PREFIX + name.upper() for name in type(self).model_fields}
        unknown = sorted(
            name
            for name in os.environ
            if name.startswith(ENV_PREFIX)
            and name not in known
            and not name.startswith(_FOREIGN_PREFIXES)
        )
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to SQLite under the state directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'fleet.db').resolve()}"

    @property
    def slice_soft_time_limit(self) -> int:
        """Raised inside the task a minute before the hard limit kills it."""
        return max(self.slice_time_limit - 60, self.slice_time_limit * 9 // 10)

    @property
    def visibility_timeout(self) -> int:
        """How long Redis hides an unacknowledged message: past the hard limit."""
        return self.slice_time_limit + 300

    @property
    def slice_lease(self) -> int:
        """Seconds after its claim a ``running`` slice is presumed abandoned.

        Past the hard limit no live worker can still hold it (the pool kills the
        task there), so the reconciler may hand it out again; well before the
        visibility timeout, after which Redis would redeliver it anyway.
        """
        return self.slice_time_limit + 10

    @property
    def heartbeat_timeout(self) -> int:
        """Seconds of silence after which a worker is presumed dead."""
        return 3 * self.heartbeat_interval


@functools.cache
def process_settings() -> Settings:
    """This process's settings, read from the environment once, on first use.

    The entry points read them here (a worker when Celery first asks for its
    configuration, each of its signal handlers) and pass them down; below the
    entry points, functions take ``settings`` as an argument.
    """
    return load_settings()


def load_settings() -> Settings:
    """The ``FLEET_*`` settings of the environment, or a ConfigError saying which one is wrong.

    What an entry point calls once (a CLI command, a call of the Python API).
    """
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(f"bad FLEET_* setting: {error}") from error
