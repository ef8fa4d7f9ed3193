"""Engines turn a batch of prompts into completions: ``hf`` (transformers), ``openai``
(any OpenAI-compatible server) and ``echo``.

They import neither Celery nor SQL; ``load_engine`` picks one by name.
"""

from __future__ import annotations

from common.constants import ENGINES
from common.errors import ConfigError
from common.settings import Settings
from worker.engines.base import (
    Completion,
    Engine,
    EngineBroken,
    GenerationParams,
    ItemError,
    PartialFailure,
)


def load_engine(
    name: str,
    model: str,
    *,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    settings: Settings,
) -> Engine:
    """Load engine ``name`` for ``model``; imports heavy libraries only when needed."""
    if name == "echo":
        from worker.engines.echo import EchoEngine

        return EchoEngine.from_spec(model)
    if name == "hf":
        _limit_torch_threads(settings)
        from worker.engines.hf import HFEngine
        from worker.engines.hf_vision import HFVisionEngine, is_vision_checkpoint

        if is_vision_checkpoint(model, trust_remote_code=trust_remote_code):
            return HFVisionEngine.load(
                model,
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
        return HFEngine.load(
            model,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            prefill_tokens=settings.prefill_tokens,
        )
    if name == "openai":
        from worker.engines.openai import OpenAIEngine

        return OpenAIEngine.from_settings(model, settings)
    raise ConfigError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


def _limit_torch_threads(settings: Settings) -> None:
    """``FLEET_TORCH_THREADS``, set as torch is first needed: an ``echo`` or ``openai``
    worker never imports torch (two seconds of a processor at its first slice)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineBroken",
    "GenerationParams",
    "ItemError",
    "PartialFailure",
    "load_engine",
]
