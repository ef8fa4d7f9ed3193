"""Run files: a whole evaluation in one TOML or YAML file, versionable and repeatable.

``fleet run eval.toml`` (or ``fleet enqueue eval.yaml``) reads the job options from
the file. Its keys are the long option names (``max_new_tokens`` or
``max-new-tokens``), plus:

- ``input``: the INPUT file;
- ``datasets``: a table ``{name = "path"}`` (the ``--dataset`` options), where a
  dataset may instead be a table of its own, ``{path = "...", template = "...",
  reference_field = "...", scorer = "..."}``: its template, reference field and
  scorer replace the run's for its records;
- ``models``: an alias of ``model``;
- ``workers``: ``fleet run``'s local worker processes (``--workers``).

Relative paths (``input``, datasets, and models written ``./x`` or ``../x``) are read
from the run file's folder. An option given on the command
line replaces the file's value when it differs from the option's default (a value
typed equal to the default cannot be told from no value, so the file's stays). The
effective options end up in the run's stored config (``Run.config``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pydantic
import yaml

from common.errors import ConfigError
from common.runconfig import DatasetOptions
from producer.cli.options import JobOptions

#: File suffixes read as run files rather than JSONL input.
RUN_FILE_SUFFIXES = (".toml", ".yaml", ".yml")

#: Options whose value is a list: a single string in the file is a list of one.
_LIST_OPTIONS = ("model", "permutation", "dataset")

#: Keys of a dataset's own table.
_DATASET_KEYS = ("path", *DatasetOptions.model_fields)


@dataclass(frozen=True)
class RunFile:
    """A run file's options (the command line's on top) and what is not a job option."""

    options: JobOptions
    input_path: Path | None
    #: ``fleet run --workers`` from the file; None when it does not say.
    workers: int | None = None
    #: Dataset name -> its own template, reference field and scorer.
    dataset_options: dict[str, DatasetOptions] = field(default_factory=dict)


def is_run_file(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() in RUN_FILE_SUFFIXES


def load(path: Path) -> tuple[dict[str, Any], Path | None]:
    """The file's option values by JobOptions field, and its INPUT (or None)."""
    values, input_path, _, _ = _load(path)
    return values, input_path


def _load(
    path: Path,
) -> tuple[dict[str, Any], Path | None, int | None, dict[str, DatasetOptions]]:
    raw = _read(path)
    base = path.parent
    values: dict[str, Any] = {}
    input_path: Path | None = None
    workers: int | None = None
    own: dict[str, DatasetOptions] = {}
    known = {field.name for field in fields(JobOptions)}
    for key, value in raw.items():
        name = {"models": "model", "datasets": "dataset"}.get(key, key.replace("-", "_"))
        if name == "input":
            input_path = _path(base, _text(path, key, value))
        elif name == "workers":
            workers = _workers(path, key, value)
        elif name == "dataset":
            values[name], own = _datasets(path, key, value, base)
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
    return values, input_path, workers, own


def merge(path: Path, options: JobOptions) -> tuple[JobOptions, Path | None]:
    """The run file's options with the command line's non-default values on top."""
    run_file = read(path, options)
    return run_file.options, run_file.input_path


def read(path: Path, options: JobOptions) -> RunFile:
    """The run file, the command line's non-default option values on top of its own."""
    values, input_path, workers, own = _load(path)
    defaults = JobOptions()
    typed = {
        field.name: getattr(options, field.name)
        for field in fields(JobOptions)
        if getattr(options, field.name) != getattr(defaults, field.name)
    }
    return RunFile(replace(defaults, **{**values, **typed}), input_path, workers, own)


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


def _datasets(
    path: Path, key: str, value: Any, base: Path
) -> tuple[list[str], dict[str, DatasetOptions]]:
    """``--dataset`` values (``name=path``) and each dataset's own options."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: field '{key}' must be a table of name = path")
    entries: list[str] = []
    own: dict[str, DatasetOptions] = {}
    for name, entry in value.items():
        where = f"{key}.{name}"
        named = where
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - set(_DATASET_KEYS))
            if unknown:
                known = ", ".join(_DATASET_KEYS)
                raise ConfigError(f"{path}: field '{where}.{unknown[0]}' is unknown ({known})")
            settings = {
                option: _text(path, f"{where}.{option}", text)
                for option, text in entry.items()
                if option != "path"
            }
            own[name] = DatasetOptions(**settings)
            entry, named = entry.get("path"), f"{where}.path"
        entries.append(f"{name}={_path(base, _text(path, named, entry))}")
    return entries, own


def _workers(path: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: field '{key}' must be an integer of at least 1, got {value!r}")
    return value


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
