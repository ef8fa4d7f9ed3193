"""Pipeline stages: a run whose inputs are another run's answers.

``fleet enqueue --from-run RUN --template "...{answer}..."`` reads every successful
result of a completed run as one input record: the item's own fields, then

| field | what |
| --- | --- |
| ``id`` | the id; ``<dataset>/<id>`` with several datasets; ``...@<lane>`` with several lanes |
| ``source_id`` | the item's id in the source run |
| ``answer`` | the source lane's answer (a permuted lane's mapped back) |
| ``lane``, ``model``, ``permutation`` | the source lane |
| ``score`` | the source score (null when the source run was not scored) |
| ``reference`` | the source item's reference (null if none) |
| ``dataset`` | the source item's dataset |
| ``source_answer``, ``source_lane``, ``source_model`` | copies kept in the stage's export |
| ``source_permutation``, ``source_score`` | copies kept in the stage's export |
| ``source_reference``, ``source_dataset`` | copies kept in the stage's export |

These fields (``STAGE_FIELDS``) are the fleet's own: the stage's export writes its
own ``answer``, ``lane``, ``model``, ... over them (the ``source_*`` copies stay),
while the item's input fields are kept as every export keeps them
(``producer.result_lines``).

Failed results are not passed on: there is no answer to judge. The records go
through the same validation as a file's lines; errors name ``run:<id>`` and the
record's position.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, distinct, func
from sqlmodel import col, select

from common.answers import original_answer
from common.db import session_scope
from common.errors import ConfigError
from common.models import Item, RunStatus
from common.queries import iter_results, lanes_of, resolve_run
from producer.inputs import RecordReader

#: Prefix of a pipeline stage's source in messages and ``Run.input_path``.
RUN_SOURCE = "run:"

#: Fields a stage's record gets from its source lane, which the stage's export replaces.
STAGE_FIELDS = ("answer", "lane", "model", "permutation", "score", "reference", "dataset")


def source_run_id(db: Engine, run_ref: str) -> str:
    """The id of a completed run; ConfigError when it is not finished."""
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        if run.status != RunStatus.completed:
            raise ConfigError(
                f"--from-run {run.id}: the run is {run.status}; a pipeline stage reads a "
                "completed run"
            )
        return run.id


def stage_reader(
    db: Engine, *, run_id: str, template: str | None, reference_field: str | None
) -> RecordReader:
    """A RecordReader over the source run's answers (a stage needs its own template)."""
    if not template:
        raise ConfigError("--from-run needs a --template that uses the answer, e.g. {answer}")
    return RecordReader(
        Path(f"{RUN_SOURCE}{run_id}"),
        template=template,
        reference_field=reference_field,
        # Read before the new run's write transaction opens (SQLite: one writer).
        lines=list(stage_lines(db, run_id=run_id)),
    )


def stage_lines(db: Engine, *, run_id: str) -> Iterator[bytes]:
    """One JSON line per successful result of the run, in input then lane order."""
    with session_scope(db) as session:
        lanes = {lane.index: lane for lane in lanes_of(session, run_id=run_id)}
        several = len(lanes) > 1
        datasets = session.exec(
            select(func.count(distinct(col(Item.dataset)))).where(Item.run_id == run_id)
        ).one()
        for item, index, result in iter_results(session, run_id=run_id):
            if result is None or not result.ok:
                continue
            lane = lanes[index]
            custom_id = f"{item.dataset}/{item.custom_id}" if datasets > 1 else item.custom_id
            answer = original_answer(lane.permutation, item, result.answer or "")
            record = {
                **item.payload,
                "id": f"{custom_id}@{index}" if several else custom_id,
                "source_id": item.custom_id,
                "answer": answer,
                "lane": index,
                "model": lane.model,
                "permutation": lane.permutation,
                "score": result.score,
                "reference": item.reference,
                "dataset": item.dataset,
                "source_answer": answer,
                "source_lane": index,
                "source_model": lane.model,
                "source_permutation": lane.permutation,
                "source_score": result.score,
                "source_reference": item.reference,
                "source_dataset": item.dataset,
            }
            yield json.dumps(record, ensure_ascii=False).encode() + b"\n"
