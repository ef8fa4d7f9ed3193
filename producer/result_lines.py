"""One output line per item and lane: the input's fields, then the fleet's.

The input's fields are written as read, under their own names, and are never
overwritten. Each fleet field (``answer``, ``success``, ``score``, ...) is written
beside them, except one whose name the record's input already uses: that one goes
into the object under ``fleet`` (``fleet_`` if the input has a ``fleet`` field, and
so on), e.g. an input ``{"id": 1, "answer": "Paris"}`` exports as ``{"id": 1,
"answer": "Paris", ..., "fleet": {"answer": "paris"}}``. A reader takes a fleet
field from that object when it is there, else from the line.

``answer`` is the answer in the item's own terms: a permuted lane's answer mapped
back by the lane's inverse (``common.answers``), which is what was scored;
``raw_answer`` is the text as generated. ``reference`` is the reference as the input
gave it (an object stays an object).

:func:`run_lines` yields a run's lines in input order, each with its item's ensemble
(``producer.ensemble``) and, for a run that kept its prompts, its ``rendered_prompt``:
every export format writes these.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from itertools import groupby
from typing import Any

from sqlmodel import Session

from common.answers import original_answer, reference_value
from common.constants import IDENTITY
from common.models import Item, Result, Run
from common.queries import iter_results, lanes_of
from common.runconfig import RunConfig
from producer.datasets import DEFAULT_DATASET
from producer.ensemble import ensemble_fields
from producer.pipelines import STAGE_FIELDS

#: Key of the object holding the fleet fields whose names the input uses.
FLEET_NAMESPACE = "fleet"


def run_lines(session: Session, run: Run) -> Iterator[dict[str, Any]]:
    """Every line of ``run``: one per item and lane, in input order, streamed."""
    config = RunConfig.model_validate(run.config)
    lanes = {lane.index: lane for lane in lanes_of(session, run_id=run.id)}
    rows = iter_results(session, run_id=run.id)
    for _, answered in groupby(rows, key=lambda row: row[0].id):
        group = list(answered)
        item = group[0][0]
        pairs = [(lanes[index], result) for _, index, result in group]
        ensemble = ensemble_fields(config, item, pairs)
        for lane, result in pairs:
            yield _line(config, item, lane.model, lane.index, result, lane.permutation, ensemble)


def blank_line(config: RunConfig, item: Item) -> dict[str, Any]:
    """The line of ``item`` without a result: every field a line of the run has (the
    table exports take their columns from it)."""
    return _line(config, item, "", 0, None, IDENTITY, {})


def _line(
    config: RunConfig,
    item: Item,
    model: str,
    lane: int,
    result: Result | None,
    permutation: str,
    ensemble: dict[str, Any],
) -> dict[str, Any]:
    """One line, the run's optional fields always present (null when they say nothing)."""
    fields = fleet_fields(item, model, lane, result, permutation)
    if config.scored():
        fields.setdefault("metrics", None)
        fields["ensemble_score"] = ensemble.get("ensemble_score")
        if config.aggregate == "majority":
            fields["ensemble_answer"] = ensemble.get("ensemble_answer")
    if config.keep_prompts:
        fields["rendered_prompt"] = result.prompt if result else None
    return merged(item.payload, fields, STAGE_FIELDS if config.from_run else ())


def record(
    item: Item,
    model: str,
    lane: int,
    result: Result | None,
    permutation: str = IDENTITY,
    *,
    replaceable: Collection[str] = (),
) -> dict[str, Any]:
    """One output line: the input's fields, then the answer and how it went.

    ``replaceable``: input fields the fleet wrote itself (a pipeline stage's copy of
    its source's answer), which the fleet's own fields may replace.
    """
    return merged(item.payload, fleet_fields(item, model, lane, result, permutation), replaceable)


def fleet_fields(
    item: Item, model: str, lane: int, result: Result | None, permutation: str = IDENTITY
) -> dict[str, Any]:
    """What the fleet says of one item in one lane."""
    inference_time = result.latency_s if result else None
    retrieval = item.payload.get("retrieval_time")
    if isinstance(retrieval, bool) or not isinstance(retrieval, (int, float)):
        retrieval = 0.0
    total_time = None if inference_time is None else inference_time + retrieval
    raw = result.answer if result else None
    fields: dict[str, Any] = {
        "id": item.payload.get("id", item.custom_id),
        "model": model,
        "lane": lane,
        "permutation": permutation,
        "answer": None if raw is None else original_answer(permutation, item, raw),
        "raw_answer": raw,
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
    if result is not None and result.scores is not None:
        fields["metrics"] = result.scores
    return fields


def merged(
    payload: dict[str, Any], fields: dict[str, Any], replaceable: Collection[str] = ()
) -> dict[str, Any]:
    """The payload as read, then every fleet field whose name it does not use; the
    others under the first of ``fleet``, ``fleet_``, ... that it does not use."""
    clashing = [
        name for name in fields if name in payload and name != "id" and name not in replaceable
    ]
    line = {**payload, **{name: value for name, value in fields.items() if name not in clashing}}
    if clashing:
        key = FLEET_NAMESPACE
        while key in payload:
            key += "_"
        line[key] = {name: fields[name] for name in clashing}
    return line


def _evaluation_fields(item: Item) -> dict[str, Any]:
    """``dataset`` and ``reference``, unless only their defaults would clash with the input."""
    fields: dict[str, Any] = {}
    if item.dataset != DEFAULT_DATASET or "dataset" not in item.payload:
        fields["dataset"] = item.dataset
    if item.reference is not None or "reference" not in item.payload:
        fields["reference"] = reference_value(item)
    return fields
