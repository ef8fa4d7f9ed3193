"""Does a model load? Its config and tokenizer, offline first, before a run starts.

``fleet run``, ``fleet enqueue`` and ``fleet doctor --model`` ask the same question
of the same reference (``producer.checkpoints.model_ref``: a training run's folder
means its latest ``step_N``), so a misspelled hub id or a folder that is no
checkpoint stops the command at once, naming the model, instead of every item
failing on the workers. Only the small files are read: config and tokenizer, never
the weights. A hub id not in the local cache is tried online once (unless
``HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.runconfig import RunConfig


@dataclass(frozen=True)
class ModelInfo:
    ref: str
    model_type: str
    context: int | None


def check_run_models(config: RunConfig) -> list[ModelInfo]:
    """Every model of an ``hf`` run loads its config and tokenizer; ConfigError otherwise."""
    if config.engine != "hf":
        return []
    return [check_model(ref, trust_remote_code=config.trust_remote_code) for ref in config.models]


def check_model(ref: str, *, trust_remote_code: bool = False) -> ModelInfo:
    """``ref`` (a resolved model reference) loads its config and tokenizer, or ConfigError."""
    path = Path(ref).expanduser()
    local = path.exists()
    if local and not (path / "config.json").is_file():
        raise ConfigError(f"--model {ref}: no config.json there, not a checkpoint folder")
    try:
        config = _load(str(path) if local else ref, trust_remote_code, offline=True)
    except (OSError, ValueError) as offline_error:
        if local or _offline():
            raise ConfigError(f"--model {ref} does not load: {_first(offline_error)}") from None
        try:
            config = _load(ref, trust_remote_code, offline=False)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"--model {ref}: not a local folder, not in the hub cache, and the hub "
                f"does not give it: {_first(error)}"
            ) from None
    context = getattr(config, "max_position_embeddings", None)
    return ModelInfo(ref, str(config.model_type), context if isinstance(context, int) else None)


def _load(name: str, trust_remote_code: bool, *, offline: bool) -> Any:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(
        name, local_files_only=offline, trust_remote_code=trust_remote_code
    )
    AutoTokenizer.from_pretrained(
        name, local_files_only=offline, trust_remote_code=trust_remote_code
    )
    return config


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
