"""The JSON Schema of a structured-output run, loaded and checked at enqueue.

``--json-schema FILE`` reads a JSON Schema; ``--pydantic module:Model`` imports a
pydantic model and takes its schema. Either way a bad schema stops the run before
anything is enqueued, and the schema itself is stored in the RunConfig, so workers
need neither the file nor the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from common.errors import ConfigError
from common.imports import user_attribute


def check_schema(schema: Any) -> dict[str, Any]:
    """``schema`` if it is a valid JSON Schema object; raises ValueError with the reason."""
    if not isinstance(schema, dict):
        raise ValueError(f"a JSON Schema must be an object, got {type(schema).__name__}")
    import jsonschema  # here: `fleet run` and `enqueue` without a schema start without it

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        raise ValueError(f"not a valid JSON Schema: {error.message}") from None
    return schema


def load_json_schema(path: Path) -> dict[str, Any]:
    """The schema in ``path``; ConfigError naming the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--json-schema {path}: cannot read: {error.strerror}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"--json-schema {path}: line {error.lineno}: not valid JSON: {error.msg}"
        ) from None
    try:
        return check_schema(schema)
    except ValueError as error:
        raise ConfigError(f"--json-schema {path}: {error}") from None


def load_pydantic_schema(spec: str) -> dict[str, Any]:
    """The JSON Schema of the pydantic model named ``module:Model``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--pydantic {spec}: expected module:Model, e.g. myapp.schemas:Answer")
    model = user_attribute(module_name, attribute, label=f"--pydantic {spec}")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(f"--pydantic {spec}: {attribute} is not a pydantic model class")
    return check_schema(model.model_json_schema())


def output_schema(json_schema: Path | None, pydantic: str | None) -> dict[str, Any] | None:
    """The run's schema from whichever option was given; both at once is an error."""
    if json_schema is not None and pydantic is not None:
        raise ConfigError("give --json-schema or --pydantic, not both")
    if json_schema is not None:
        return load_json_schema(json_schema)
    if pydantic is not None:
        return load_pydantic_schema(pydantic)
    return None
