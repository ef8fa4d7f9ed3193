"""Engines turn a batch of prompts into completions: ``hf`` (transformers) and ``echo``.

They import neither Celery nor SQL; ``load_engine`` picks one by name.
"""

from __future__ import annotations

from common.errors import ConfigError
from worker.engines.base import Completion, Engine, GenerationParams

#: Engine names accepted by ``--engine``.
ENGINES = ("hf", "echo")


def load_engine(name: str, model: str, *, dtype: str = "auto") -> Engine:
    """Load engine ``name`` for ``model``; imports heavy libraries only when needed."""
    if name == "echo":
        from worker.engines.echo import EchoEngine

        return EchoEngine.from_spec(model)
    if name == "hf":
        from worker.engines.hf import HFEngine

        return HFEngine.load(model, dtype=dtype)
    raise ConfigError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Completion", "Engine", "GenerationParams", "load_engine"]
