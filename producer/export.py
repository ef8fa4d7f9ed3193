"""Results out of SQL: JSONL records in the fleet's output shape, and the run summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine
from sqlmodel import Session

from common.db import session_scope
from common.errors import ConfigError
from common.models import Run, RunStatus
from common.queries import lanes_of, resolve_run, stored_stats
from common.stats import nest, run_statistics
from producer.evaluation_summary import evaluation_blocks
from producer.result_lines import record, run_lines

__all__ = [
    "iter_records",
    "record",
    "run_lines",
    "stream_jsonl",
    "summary",
    "write_json",
    "write_jsonl",
]


def write_jsonl(db: Engine, *, run_ref: str, path: Path, with_prompts: bool = False) -> int:
    """Write one record per item and lane, in input order, to ``path``; returns the count."""
    refuse_other_kind(path, "jsonl")
    if with_prompts:
        with session_scope(db) as session:  # refused before the file is touched
            _check_prompts_kept(resolve_run(session, run_ref))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        return stream_jsonl(db, run_ref=run_ref, out=out, with_prompts=with_prompts)


def stream_jsonl(db: Engine, *, run_ref: str, out: TextIO, with_prompts: bool = False) -> int:
    """Write one record per item and lane, in input order, to ``out``; returns the count."""
    count = 0
    for line in iter_records(db, run_ref=run_ref, with_prompts=with_prompts):
        out.write(json.dumps(line, ensure_ascii=False))
        out.write("\n")
        count += 1
    return count


def iter_records(
    db: Engine, *, run_ref: str, with_prompts: bool = False
) -> Iterator[dict[str, Any]]:
    """One output record per item and lane, in input order, streamed from SQL.

    A scored run's records carry their item's ensemble (``producer.ensemble``); a run
    that kept its prompts carries each record's ``rendered_prompt``. ``with_prompts``
    asks for them: ConfigError for a run that did not keep them.
    """
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        if with_prompts:
            _check_prompts_kept(run)
        yield from run_lines(session, run)


def _check_prompts_kept(run: Run) -> None:
    if not run.config.get("keep_prompts"):
        raise ConfigError(
            f"run {run.id} did not keep its prompts: run it with --keep-prompts to export them"
        )


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
