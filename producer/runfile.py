"""Run files: a whole evaluation in one TOML or YAML file, versionable and repeatable.

``fleet run eval.toml`` (or ``fleet enqueue eval.yaml``) reads the job options from
the file. Its keys are the long option names (``max_new_tokens`` or
``max-new-tokens``), plus:

- ``input``: the INPUT file;
- ``datasets``: a table ``{name = "path"}`` (the ``--dataset`` options);
- ``models``: an alias of ``model``.

Relative paths (``input``, datasets, and models written ``./x`` or ``../x``) are read
from the run file's folder. An option given on the command
line replaces the file's value when it differs from the option's default (a value
typed equal to the default cannot be told from no value, so the file's stays). The
effective options end up in the run's stored config (``Run.config``).
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pydantic
import yaml

from common.errors import ConfigError
from producer.cli.options import JobOptions

#: File suffixes read as run files rather than JSONL input.
RUN_FILE_SUFFIXES = (".toml", ".yaml", ".yml")

#: Options whose value is a list: a single string in the file is a list of one.
_LIST_OPTIONS = ("model", "permutation", "dataset")


def is_run_file(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() in RUN_FILE_SUFFIXES


def load(path: Path) -> tuple[dict[str, Any], Path | None]:
    """The file's option values by JobOptions field, and its INPUT (or None)."""
    raw = _read(path)
    base = path.parent
    values: dict[str, Any] = {}
    input_path: Path | None = None
    known = {field.name for field in fields(JobOptions)}
    for key, value in raw.items():
        name = {"models": "model", "datasets": "dataset"}.get(key, key.replace("-", "_"))
        if name == "input":
            input_path = _path(base, _text(path, key, value))
        elif name == "dataset":
            values[name] = _datasets(path, key, value, base)
        elif name == "model":
            models = [value] if isinstance(value, str) else value
            values[name] = _models(models, base) if isinstance(models, list) else models
        elif name in known:
            values[name] = [value] if name in _LIST_OPTIONS and isinstance(value, str) else value
        else:
            raise ConfigError(f"{path}: unknown key '{key}' (keys are the long option names)")
    try:
        pydantic.TypeAdapter(JobOptions).validate_python(values, strict=False)
    except pydantic.ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise ConfigError(f"{path}: field '{field}': {problem['msg']}") from None
    return values, input_path


def merge(path: Path, options: JobOptions) -> tuple[JobOptions, Path | None]:
    """The run file's options with the command line's non-default values on top."""
    values, input_path = load(path)
    defaults = JobOptions()
    typed = {
        field.name: getattr(options, field.name)
        for field in fields(JobOptions)
        if getattr(options, field.name) != getattr(defaults, field.name)
    }
    return replace(defaults, **{**values, **typed}), input_path


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the run file: {error}") from error
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run file is a table of options, got {type(data).__name__}")
    return data


def _datasets(path: Path, key: str, value: Any, base: Path) -> list[str]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: field '{key}' must be a table of name = path")
    return [
        f"{name}={_path(base, _text(path, f'{key}.{name}', file))}" for name, file in value.items()
    ]


def _models(models: list[Any], base: Path) -> list[Any]:
    """``./ckpt`` and ``../ckpt`` are read from the run file's folder; others as given."""
    return [
        str(base / model) if isinstance(model, str) and model.startswith(("./", "../")) else model
        for model in models
    ]


def _text(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: field '{key}' must be a non-empty string, got {value!r}")
    return value


def _path(base: Path, text: str) -> Path:
    given = Path(text).expanduser()
    return given if given.is_absolute() else base / given
