"""Does a model load? Its config and tokenizer, offline first, before a run starts.

``fleet run``, ``fleet enqueue`` and ``fleet doctor --model`` ask the same question
of the same reference (``producer.checkpoints.model_ref``: a training run's folder
means its latest ``step_N``), so a misspelled hub id or a folder that is no
checkpoint stops the command at once, naming the model, instead of every item
failing on the workers. Only the small files are read, as files: the config (JSON
naming a ``model_type``) and the tokenizer's files, never the weights, and without
importing transformers, so that checking before anything starts costs a
``fleet run`` almost nothing (the workers import it while they start). A hub id
not in the local cache is tried online once (unless ``HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import json
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
    """``ref`` (a resolved model reference) has a config and a tokenizer, or ConfigError.

    ``trust_remote_code`` changes nothing here: no code of the checkpoint is run.
    """
    path = Path(ref).expanduser()
    local = path.exists()
    if local and not (path / "config.json").is_file():
        raise ConfigError(f"--model {ref}: no config.json there, not a checkpoint folder")
    try:
        config = _load(path if local else ref, offline=True)
    except (OSError, ValueError) as offline_error:
        if local or _offline():
            raise ConfigError(f"--model {ref} does not load: {_first(offline_error)}") from None
        try:
            config = _load(ref, offline=False)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"--model {ref}: not a local folder, not in the hub cache, and the hub "
                f"does not give it: {_first(error)}"
            ) from None
    context = config.get("max_position_embeddings")
    return ModelInfo(ref, str(config["model_type"]), context if isinstance(context, int) else None)


#: Files of which a checkpoint's tokenizer has at least one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load(name: Path | str, *, offline: bool) -> dict[str, Any]:
    """The checkpoint's config, once its config and a tokenizer file are found."""
    if isinstance(name, Path):
        found = [
            name / file for file in ("config.json", *TOKENIZER_FILES) if (name / file).is_file()
        ]
    else:
        found = _from_hub(name, offline=offline)
    config_file = next((file for file in found if file.name == "config.json"), None)
    if config_file is None:
        raise ValueError("no config.json")
    if not any(file.name in TOKENIZER_FILES for file in found):
        raise ValueError(f"no tokenizer: none of {', '.join(TOKENIZER_FILES)}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"config.json is not JSON: {error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ValueError("config.json names no model_type")
    return config


def _from_hub(repo: str, *, offline: bool) -> list[Path]:
    """The config and tokenizer files of hub model ``repo``: from the cache, or fetched."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    found = [Path(hf_hub_download(repo, "config.json", local_files_only=offline))]
    for file in TOKENIZER_FILES:
        try:
            found.append(Path(hf_hub_download(repo, file, local_files_only=offline)))
            break
        except (EntryNotFoundError, OSError, ValueError):
            continue
    return found


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
