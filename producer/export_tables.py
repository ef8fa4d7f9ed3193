"""Results as tables: ``fleet export --format csv`` and ``--format parquet``.

The same records as the JSONL export (``producer.export.iter_records``), in the same
order, with one column per field any record has. The columns are found first, by a
pass over the run's items alone (a record's fields are its input's fields plus the
fleet's own, whatever its results), then the records stream out in batches: memory
holds one batch, whatever the size of the run.

- CSV: a string is written as it is, a missing value as an empty cell, anything else
  (numbers, true/false, nested objects and lists) as its JSON text.
- Parquet: one row group per ``BATCH`` records. The fleet's own fields have fixed
  types; an input field takes the type all its values share (bool, int64, float64
  or string); nested values, and fields whose values mix types, are stored as JSON
  text, marked ``fleet.encoding=json`` in the field's metadata.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine

from common.db import session_scope
from common.errors import ConfigError
from common.queries import iter_items, resolve_run
from common.runconfig import RunConfig
from producer.export import iter_records
from producer.result_lines import blank_line

#: Records per Parquet row group (and per batch held in memory).
BATCH = 10_000

#: Parquet field metadata of a column that holds JSON text.
JSON_ENCODING = {b"fleet.encoding": b"json"}

#: Types of the fleet's own fields; ``json`` marks a field stored as JSON text.
FLEET_TYPES = {
    "model": "string", "lane": "int64", "permutation": "string", "answer": "string",
    "parsed": "json", "inference_time": "float64", "total_time": "float64",
    "tokens_in": "int64", "tokens_out": "int64", "worker": "string", "gpu_group": "string",
    "success": "bool", "error_kind": "string", "error": "string", "score": "float64",
    "dataset": "string", "reference": "string", "raw_answer": "string", "metrics": "json",
    "ensemble_score": "float64", "ensemble_answer": "string", "rendered_prompt": "string",
}  # fmt: skip

#: Largest magnitude an int64 column holds; a field with a larger int is stored as JSON text.
INT64_MAX = 2**63 - 1


def write_csv(db: Engine, *, run_ref: str, path: Path) -> int:
    """Write the run's records to ``path`` as CSV; returns the count."""
    refuse_foreign(path, "csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        return stream_csv(db, run_ref=run_ref, out=out)


def stream_csv(db: Engine, *, run_ref: str, out: IO[str]) -> int:
    """Write the run's records as CSV to ``out``; returns the count."""
    names = list(columns(db, run_ref=run_ref))
    writer = csv.writer(out)
    writer.writerow(names)
    count = 0
    for line in iter_records(db, run_ref=run_ref):
        writer.writerow([csv_cell(line.get(name)) for name in names])
        count += 1
    return count


def csv_cell(value: Any) -> str:
    """A string as it is, None as empty, anything else as its JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def write_parquet(db: Engine, *, run_ref: str, path: Path) -> int:
    """Write the run's records to ``path`` as Parquet, a row group per batch; the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    refuse_foreign(path, "parquet")
    kinds = columns(db, run_ref=run_ref)
    schema = pa.schema(
        [
            pa.field(
                name, _arrow_type(pa, kind), metadata=JSON_ENCODING if kind == "json" else None
            )
            for name, kind in kinds.items()
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for batch in _batches(iter_records(db, run_ref=run_ref), BATCH):
            rows = {
                name: [_parquet_value(line.get(name), kind) for line in batch]
                for name, kind in kinds.items()
            }
            writer.write_table(pa.table(rows, schema=schema))
            count += len(batch)
    partial.replace(path)
    return count


def columns(db: Engine, *, run_ref: str) -> dict[str, str]:
    """Every field of the run's records, in first-seen order, with its column type.

    One pass over the items: a record without a result has every field one with a
    result has, so the items alone decide the columns.
    """
    seen: dict[str, set[str]] = {}
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        config = RunConfig.model_validate(run.config)
        for item in iter_items(session, run_id=run.id):
            for name, value in blank_line(config, item).items():
                kinds = seen.setdefault(name, set())
                if name not in FLEET_TYPES:
                    kinds.add(_kind_of(value))
    return {name: FLEET_TYPES.get(name) or _column_type(kinds) for name, kinds in seen.items()}


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if abs(value) <= INT64_MAX else "json"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "json"


def _column_type(kinds: set[str]) -> str:
    """The type every value of an input field fits: ints widen to floats, else JSON text."""
    kinds = kinds - {"null"}
    if not kinds:
        return "string"
    if len(kinds) == 1:
        return next(iter(kinds))
    return "float64" if kinds == {"int64", "float64"} else "json"


def _arrow_type(pa: Any, kind: str) -> Any:
    types = {
        "bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(),
        "string": pa.string(), "json": pa.string(),
    }  # fmt: skip
    return types[kind]


def _parquet_value(value: Any, kind: str) -> Any:
    if value is None or (kind != "json" and not isinstance(value, (dict, list))):
        return value
    return json.dumps(value, ensure_ascii=False)  # e.g. a reference that is an object


def _batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for line in records:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def refuse_foreign(path: Path, kind: str) -> None:
    """ConfigError when ``path`` holds something other than a ``kind`` export (or nothing).

    A Parquet file starts with ``PAR1``; a CSV export's first line names the fleet's
    ``success`` and ``error_kind`` columns.
    """
    if not path.exists():
        return
    if path.is_file():
        with path.open("rb") as stream:
            head = stream.readline(1 << 20)
        if not head:
            return
        if kind == "parquet" and head.startswith(b"PAR1"):
            return
        if kind == "csv" and {"success", "error_kind"} <= set(
            next(csv.reader([head.decode("utf-8", "replace")]), [])
        ):
            return
    raise ConfigError(
        f"{path} holds something else than a {kind} export; not overwriting it: give another "
        "-o, or remove the file first"
    )
