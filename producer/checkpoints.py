"""Model references: comma lists, local checkpoints, and a training run's latest step.

``--model`` repeats or takes a comma list of checkpoints (hf engine only: an echo
spec has commas of its own). A local folder with a ``config.json`` is a checkpoint;
a folder without one is a training run whose latest ``step_N`` / ``checkpoint-N``
subfolder (highest N) is taken.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.errors import ConfigError

#: Subfolder names of a training run's saved steps: ``step_1200``, ``checkpoint-1200``.
STEP_FOLDER = re.compile(r"^(?:step_|checkpoint-)(\d+)$")


def model_refs(engine: str, models: list[str]) -> list[str]:
    """Each lane model as workers will load it; ConfigError naming a bad one."""
    refs: list[str] = []
    for given in models:
        parts = given.split(",") if engine == "hf" else [given]
        refs += [model_ref(engine, part.strip()) for part in parts if part.strip()]
    if not refs:
        raise ConfigError("give at least one --model")
    if len(set(refs)) != len(refs):
        raise ConfigError(f"--model repeats a model: {refs}")
    return refs


def model_ref(engine: str, model: str) -> str:
    """A local checkpoint becomes an absolute path, so workers anywhere find it."""
    path = Path(model).expanduser()
    if engine == "hf" and path.exists():
        if not (path / "config.json").exists():
            path = latest_checkpoint(path, given=model)
        return str(path.resolve())
    if engine == "hf" and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise ConfigError(f"--model {model}: no such checkpoint folder")
    return model


def latest_checkpoint(folder: Path, *, given: str) -> Path:
    """The ``step_N``/``checkpoint-N`` subfolder with the highest N that has a config.json."""
    steps = []
    for child in folder.iterdir() if folder.is_dir() else []:
        match = STEP_FOLDER.match(child.name)
        if match and child.is_dir() and (child / "config.json").exists():
            steps.append((int(match.group(1)), child))
    if not steps:
        raise ConfigError(
            f"--model {given}: a folder without config.json is no checkpoint, and it has no "
            "step_N or checkpoint-N subfolder with one"
        )
    return max(steps)[1]
