"""Results out of SQL: JSONL records in the fleet's output shape, and the run summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine
from sqlmodel import Session

from common.constants import IDENTITY
from common.db import session_scope
from common.errors import ConfigError
from common.models import Item, Result, Run, RunStatus
from common.queries import iter_results, lanes_of, resolve_run, stored_stats
from common.stats import nest, run_statistics
from producer.datasets import DEFAULT_DATASET
from producer.evaluation_summary import evaluation_blocks


def record(
    item: Item, model: str, lane: int, result: Result | None, permutation: str = IDENTITY
) -> dict[str, Any]:
    """One output line: the input's fields, then the answer and how it went."""
    inference_time = result.latency_s if result else None
    retrieval = item.payload.get("retrieval_time")
    if isinstance(retrieval, bool) or not isinstance(retrieval, (int, float)):
        retrieval = 0.0
    total_time = None if inference_time is None else inference_time + retrieval
    return {
        **item.payload,
        "id": item.payload.get("id", item.custom_id),
        "model": model,
        "lane": lane,
        "permutation": permutation,
        "answer": result.answer if result else None,
        "parsed": result.parsed if result else None,
        "inference_time": inference_time,
        "total_time": total_time,
        "tokens_in": result.tokens_in if result else None,
        "tokens_out": result.tokens_out if result else None,
        "worker": result.worker if result else None,
        "gpu_group": result.gpu_group if result else None,
        "success": bool(result and result.ok),
        "error_kind": result.error_kind if result else "pending",
        "error": result.error_message if result else None,
        "score": result.score if result else None,
        **_evaluation_fields(item),
    }


def _evaluation_fields(item: Item) -> dict[str, Any]:
    """``dataset`` and ``reference``, unless only their defaults would hide an input field."""
    fields: dict[str, Any] = {}
    if item.dataset != DEFAULT_DATASET or "dataset" not in item.payload:
        fields["dataset"] = item.dataset
    if item.reference is not None or "reference" not in item.payload:
        fields["reference"] = item.reference
    return fields


def write_jsonl(db: Engine, *, run_ref: str, path: Path) -> int:
    """Write one record per item and lane, in input order, to ``path``; returns the count."""
    refuse_other_kind(path, "jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        return stream_jsonl(db, run_ref=run_ref, out=out)


def stream_jsonl(db: Engine, *, run_ref: str, out: TextIO) -> int:
    """Write one record per item and lane, in input order, to ``out``; returns the count."""
    count = 0
    for line in iter_records(db, run_ref=run_ref):
        out.write(json.dumps(line, ensure_ascii=False))
        out.write("\n")
        count += 1
    return count


def iter_records(db: Engine, *, run_ref: str) -> Iterator[dict[str, Any]]:
    """One output record per item and lane, in input order, streamed from SQL."""
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        lanes = {lane.index: lane for lane in lanes_of(session, run_id=run.id)}
        for item, index, result in iter_results(session, run_id=run.id):
            lane = lanes[index]
            yield record(item, lane.model, index, result, lane.permutation)


def refuse_other_kind(path: Path, kind: str) -> None:
    """ConfigError when ``path`` holds something else than a ``kind`` export.

    A summary never lands on a results file, nor results on a summary: an export
    replaces only a file of its own kind (or an empty one).
    """
    found = file_kind(path)
    if found is None or found == kind:
        return
    names = {"jsonl": "results (jsonl)", "json": "a summary (json)", "other": "something else"}
    raise ConfigError(
        f"{path} holds {names[found]}; not overwriting it with {names[kind]}: give another "
        "-o, or remove the file first"
    )


def file_kind(path: Path) -> str | None:
    """``jsonl``, ``json`` or ``other`` by the first line of an existing file; None if none."""
    if not path.exists():
        return None
    if not path.is_file():
        return "other"
    with path.open("rb") as stream:
        first = stream.readline(1 << 20).strip()
    if not first:
        return None if path.stat().st_size == 0 else "other"
    if first == b"{":
        return "json"  # the summary is indented: its first line is its opening brace
    try:
        return "jsonl" if isinstance(json.loads(first), dict) else "other"
    except ValueError:
        return "other"


def summary(db: Engine, *, run_ref: str) -> dict[str, Any]:
    """The run, its config and statistics; computed live when the run is not finished."""
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        nested = nest(_statistics(session, run))
        lanes = lanes_of(session, run_id=run.id)
        return {
            "run": {
                "id": run.id,
                "status": run.status,
                "input": run.input_path,
                "engine": run.engine,
                "created_at": _iso(run.created_at),
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
                "finalize_count": run.finalize_count,
                "statistics_final": run.status == RunStatus.completed,
            },
            "config": {
                **run.config,
                "created_at": _iso(run.created_at),
                "start_time": _iso(run.started_at),
            },
            "lanes": [
                {"index": lane.index, "model": lane.model, "permutation": lane.permutation}
                for lane in lanes
            ],
            "statistics": nested,
            **evaluation_blocks(run, lanes, nested),
        }


def write_json(db: Engine, *, run_ref: str, path: Path) -> dict[str, Any]:
    refuse_other_kind(path, "json")
    document = summary(db, run_ref=run_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_text(document), encoding="utf-8")
    return document


def summary_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _statistics(session: Session, run: Run) -> list[tuple[str, str, float]]:
    if run.status == RunStatus.completed:
        return stored_stats(session, run_id=run.id)
    return run_statistics(session, run_id=run.id)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
