"""Creating a run in SQL: validate every record, insert items in bulk, cut slices.

All of it happens in one transaction: a file with a bad record leaves nothing
behind (unless ``skip_invalid``, which records the rejects as failed items).
Publishing the work orders comes after the commit (``producer.publish``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from common.constants import IDENTITY
from common.db import session_scope
from common.errors import InputError, InvalidInputFile
from common.models import Item, Lane, Run, utcnow
from common.routing import model_queue
from common.runconfig import RunConfig
from common.store import insert_items, insert_run, insert_slices, save_results, set_run_counts
from producer.inputs import InputRecord, RecordReader, Rejected
from producer.slicing import cut

#: Rows per bulk INSERT of items.
INSERT_CHUNK = 1000

#: Errors listed in full in the message of an invalid file.
ERRORS_SHOWN = 20

#: ``Result.error_kind`` of a record rejected at enqueue.
INVALID_INPUT = "invalid_input"


@dataclass(frozen=True)
class Enqueued:
    run_id: str
    items: int
    rejected: int
    slices: int


def new_run_id() -> str:
    """Sortable and readable: ``20261123-101500-3fa9c1``."""
    return f"{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def create_run(
    db: Engine,
    *,
    input_path: Path,
    config: RunConfig,
    queue: str,
    skip_invalid: bool = False,
    reference_field: str | None = None,
    model_queues: bool = False,
) -> Enqueued:
    """Validate ``input_path`` and create its run, items and slices in one transaction.

    ``model_queues``: each lane's slices go to its model's own queue
    (``common.routing``), for workers pinned to one model; else all go to ``queue``.
    """
    reader = RecordReader(input_path, template=config.template, reference_field=reference_field)
    run_id = new_run_id()
    with session_scope(db) as session:
        insert_run(
            session,
            run=Run(
                id=run_id,
                input_path=str(input_path),
                engine=config.engine,
                queue=queue,
                config=config.model_dump(mode="json"),
                lane_count=len(config.models),
            ),
            lanes=[
                Lane(
                    run_id=run_id,
                    index=index,
                    model=model,
                    permutation=IDENTITY,
                    queue=model_queue(queue, model) if model_queues else queue,
                )
                for index, model in enumerate(config.models)
            ],
        )
        count, errors, error_total = _insert_records(session, run_id, reader, skip_invalid)
        if error_total and not skip_invalid:
            raise InvalidInputFile(str(input_path), errors, error_total)
        if count == 0:
            raise InvalidInputFile(
                str(input_path), [InputError(str(input_path), 0, "no records in the file")], 1
            )
        _fail_rejects(session, run_id, len(config.models))
        ranges = cut(count, config.slice_size)
        insert_slices(
            session,
            rows=[
                {
                    "run_id": run_id,
                    "lane_index": lane,
                    "index": index,
                    "seq_start": start,
                    "seq_end": end,
                }
                for lane in range(len(config.models))
                for index, (start, end) in enumerate(ranges)
            ],
        )
        slices = len(ranges) * len(config.models)
        set_run_counts(
            session,
            run_id=run_id,
            item_count=count,
            rejected_count=error_total,
            slice_count=slices,
        )
    return Enqueued(run_id=run_id, items=count, rejected=error_total, slices=slices)


def _insert_records(
    session: Session, run_id: str, reader: RecordReader, skip_invalid: bool
) -> tuple[int, list[InputError], int]:
    """Stream the records into Item rows; returns (rows, errors shown, error count)."""
    buffer: list[dict[str, Any]] = []
    errors: list[InputError] = []
    error_total = 0
    seq = 0
    for entry in reader:
        if isinstance(entry, Rejected):
            error_total += 1
            if len(errors) < ERRORS_SHOWN:
                errors.append(entry.error)
        if error_total and not skip_invalid:
            continue  # keep reading: the user gets every error of the file at once
        buffer.append(_item_row(run_id, seq, entry))
        seq += 1
        if len(buffer) >= INSERT_CHUNK:
            insert_items(session, rows=buffer)
            buffer.clear()
    insert_items(session, rows=buffer)
    return seq, errors, error_total


def _item_row(run_id: str, seq: int, entry: InputRecord | Rejected) -> dict[str, Any]:
    if isinstance(entry, Rejected):
        return {
            "run_id": run_id,
            "seq": seq,
            "custom_id": f"line-{entry.line_no}",
            "line_no": entry.line_no,
            "payload": {"raw": entry.raw},
            "prompt": None,
            "reference": None,
            "reject_reason": str(entry.error),
            "dataset": "default",
        }
    return {
        "run_id": run_id,
        "seq": seq,
        "custom_id": entry.custom_id,
        "line_no": entry.line_no,
        "payload": entry.payload,
        "prompt": entry.prompt,
        "reference": entry.reference,
        "reject_reason": None,
        "dataset": "default",
    }


def _fail_rejects(session: Session, run_id: str, lanes: int) -> None:
    """A rejected record gets a failed result in every lane, so it is counted, never run."""
    rejects = session.exec(
        select(Item.id, Item.reject_reason).where(
            Item.run_id == run_id, col(Item.reject_reason).is_not(None)
        )
    ).all()
    save_results(
        session,
        rows=[
            {
                "run_id": run_id,
                "item_id": item_id,
                "lane_index": lane,
                "ok": False,
                "error_kind": INVALID_INPUT,
                "error_message": reason,
                "attempts": 0,
            }
            for item_id, reason in rejects
            for lane in range(lanes)
        ],
    )
