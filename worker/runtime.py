"""What one worker process keeps between tasks: settings, database, the loaded model.

Built lazily in the pool's child process (after the fork), so the child shares no
pooled connection with the parent and the parent never initialises CUDA (the
parent's own database use, in ``worker.upkeep``, is unpooled and kept clear of
forks). The last model used stays loaded: a worker serving one model loads it once.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from celery.signals import worker_process_init
from sqlalchemy import Engine as Database
from sqlmodel import Session, select

from common.db import make_engine, single_statements
from common.models import Lane, Run
from common.runconfig import RunConfig
from common.settings import Settings, process_settings
from worker import board
from worker.engines import Engine, load_engine
from worker.oom import MemoryBudget

log = logging.getLogger(__name__)

#: Most (run, lane) pairs a worker process keeps read (``WorkerRuntime.lane``).
LANES_KEPT = 256


@dataclass
class WorkerRuntime:
    settings: Settings
    db: Database
    #: How many times this process loaded a model (a reload shows up here).
    loads: int = 0
    #: What this process learned about the batches that fit in memory (OOM back-off).
    memory: MemoryBudget = field(default_factory=MemoryBudget)
    #: Each (run, lane index)'s run, lane and run config, read once (``lane``).
    _lanes: dict[tuple[str, int], tuple[Run, Lane, RunConfig]] = field(
        default_factory=dict, repr=False
    )
    _engine_key: tuple[object, ...] | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerRuntime:
        return cls(
            settings=settings,
            db=make_engine(settings.sqlalchemy_url),
            memory=MemoryBudget(guard_tokens=settings.memory_guard_tokens),
        )

    @functools.cached_property
    def single_db(self) -> Database:
        """``db`` for a slice's one-statement steps (``common.db.single_statements``)."""
        return single_statements(self.db)

    def lane(self, session: Session, run_id: str, index: int) -> tuple[Run, Lane, RunConfig]:
        """The run (as stored: its status is not kept up to date here), its lane
        ``index`` and its config, read from SQL once per process: none of them changes
        once the run is stored. Forgotten when too many runs pile up."""
        key = (run_id, index)
        known = self._lanes.get(key)
        if known is None:
            run, lane = session.exec(
                select(Run, Lane).where(
                    Lane.run_id == run_id, Lane.index == index, Run.id == Lane.run_id
                )
            ).one()
            if len(self._lanes) >= LANES_KEPT:
                self._lanes.clear()
            known = self._lanes[key] = (run, lane, RunConfig.model_validate(run.config))
        return known

    @property
    def gpu_group(self) -> str:
        """The GPUs this process was pinned to, or ``cpu``."""
        return os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu"

    def engine_for(
        self,
        name: str,
        model: str,
        dtype: str,
        *,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> Engine:
        """The engine for ``model``, loading it only when it is not the one in hand."""
        key = (name, model, dtype, attn_implementation, trust_remote_code)
        if self._engine is None or self._engine_key != key:
            if self._engine is not None:
                self._engine = None
                gc.unfreeze()  # frozen with the model (below): collectable again
                gc.collect()  # the model in hand goes before the next one loads
            # What fitted in memory was learned for the model in hand, not for this one.
            self.memory = MemoryBudget(guard_tokens=self.memory.guard_tokens)
            self._engine = load_engine(
                name,
                model,
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
                settings=self.settings,
            )
            self._engine_key = key
            # What the process holds now (the engine's modules, the model) stays while
            # the model does: out of the collector's reach, a full collection does not
            # walk it again (0.2 s each in a process holding a small transformers model).
            # The young generations are collected first (a few milliseconds; a full
            # collection here takes 0.2-0.3 s): the load's own garbage cycles, a caught
            # exception's frames say, are young. An older one stays until the next load.
            gc.collect(1)
            gc.freeze()
            self.loads += 1
            self._post_state()
        return self._engine

    def _post_state(self) -> None:
        """Tell the main process (and the log) what this process now holds."""
        engine, model, dtype = self._engine_key[:3] if self._engine_key else ("", "", "")
        board.post(
            {
                "engine": engine,
                "model": model,
                "dtype": dtype,
                "loads": self.loads,
                "gpu_group": self.gpu_group,
                "pid": os.getpid(),
            }
        )
        log.info("loaded %s model %s (load %d of this process)", engine, model, self.loads)

    def preload(self) -> None:
        """Load ``FLEET_PRELOAD_MODEL`` now, so the first task finds it in hand."""
        settings = self.settings
        model = settings.preload_model
        if model:
            # A local folder is stored on a run as its absolute path: match that key.
            path = Path(model).expanduser()
            if settings.preload_engine == "hf" and path.exists():
                model = str(path.resolve())
            self.engine_for(settings.preload_engine, model, settings.dtype)


_runtime: WorkerRuntime | None = None


def current_runtime() -> WorkerRuntime:
    """This process's runtime, built on first use from the environment."""
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime.from_settings(process_settings())
    return _runtime


@worker_process_init.connect
def _forget_parent_runtime(**_: object) -> None:
    """A forked child must not share the parent's connections or model: it makes its
    own runtime (its database engine, the schema checked) and preloads in it.

    Preloading happens here, in the child after the fork, so the parent never
    initialises CUDA; Celery waits ``worker_proc_alive_timeout`` (set from
    ``FLEET_WORKER_START_TIMEOUT``) for this to return. A preload that fails is
    logged and the process starts without the model.
    """
    global _runtime
    _runtime = None
    try:
        # Connected, the schema checked, before the first order arrives: a fleet of
        # many workers starting at once does not pay for it in its first slices.
        runtime = current_runtime()
    except Exception:
        # A pool process that cannot start is restarted for ever; the first slice
        # tries again (a database still coming up) and its task retries.
        log.warning("could not reach the database yet; the first slice will", exc_info=True)
        return
    if not runtime.settings.preload_model:
        return
    try:
        runtime.preload()
    except Exception:
        # Without the model in hand, the first slice loads it and records what is
        # wrong on its items.
        log.exception("could not preload the model; the first slice will load it")
