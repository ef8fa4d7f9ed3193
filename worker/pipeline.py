"""The slice pipeline: load the slice from SQL, batch, infer, store, maybe finalize.

Each batch's results are written in one transaction, so a worker killed mid-slice
leaves whole batches behind and a redelivered slice only runs what is missing.

Round trips per slice, whatever the size of its run: one statement to claim the
slice (a compare-and-set, ``claim_slice``), one to read its items (and, only when
it was claimed before, its results and attempts, to screen them), one per batch,
one for the finalize check of a run's last slice. A batch's step stores the
previous batch's results and counts its own items' attempts, or, after the last,
marks the slice done; so a batch's items are counted before the engine sees them,
as ``worker.attempts`` requires, without a transaction of their own. On PostgreSQL
each of these steps is one statement (``claim_slice``, ``count_attempts``,
``finish_slice``), run as its own transaction without BEGIN and COMMIT
(``common.db.single_statements``): a warm slice of four batches, seven round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlmodel import select

from common.db import session_scope
from common.errors import ForeignWorkOrder
from common.messages import SliceOrder
from common.models import Item, Lane, Run
from common.prompts import Prompt
from common.queries import open_items
from common.results import ResultRow
from common.runconfig import RunConfig
from common.store import begin_finalize, claim_slice, finish_slice
from worker.attempts import AttemptGuard, screen_items
from worker.batching import iter_batches
from worker.engines import Engine
from worker.inference import Outcome, generate_isolated
from worker.lanes import answer_score, lane_prompts
from worker.prompting import shown_prompt
from worker.runtime import WorkerRuntime
from worker.settings_groups import SettingsGroup, prepare_groups, settings_groups
from worker.structured import validate_outcomes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceOutcome:
    """What the task must do next: enqueue finalize on ``queue`` or not."""

    processed: int
    finalize: bool
    queue: str


@dataclass
class _Work:
    run: Run
    lane: Lane
    config: RunConfig
    items: list[Item]
    guard: AttemptGuard
    #: Marking the slice done closed the run's last slice: try to finalize.
    last_slice: bool = False
    #: Each item's prompt as the engine got it, for a run that keeps prompts.
    kept_prompts: list[str | None] = field(default_factory=list)


def process_slice(runtime: WorkerRuntime, order: SliceOrder, *, worker: str) -> SliceOutcome:
    """Run every open item of the slice; True in the outcome if this finished the run.

    An order naming a slice of another run is refused with nothing written.
    """
    try:
        work = _claim(runtime, order, worker)
    except ForeignWorkOrder as refused:
        log.error("%s", refused)
        return SliceOutcome(0, False, "")
    if work is not None and work.items:
        engine = runtime.engine_for(
            work.config.engine,
            work.lane.model,
            work.config.dtype,
            attn_implementation=work.config.attn_implementation,
            trust_remote_code=work.config.trust_remote_code,
        )
        _run_items(runtime, engine, work, order.slice_id, worker)
    if work is not None and not work.last_slice:
        return SliceOutcome(len(work.items), False, work.run.queue)
    with session_scope(runtime.db) as session:
        finalize = begin_finalize(session, run_id=order.run_id, by_count=work is not None)
        if work is not None:
            queue = work.run.queue
        else:
            queue = session.exec(select(Run.queue).where(Run.id == order.run_id)).one()
    return SliceOutcome(len(work.items) if work else 0, finalize, queue)


def _claim(runtime: WorkerRuntime, order: SliceOrder, worker: str) -> _Work | None:
    """Claim the slice (one statement), then read what it must run, its exhausted items
    quarantined; a slice with nothing left to run is finished here.

    On the single-statement engine: on PostgreSQL each statement is its own
    transaction (the items never change, and the slice's results and attempts are
    written only under the claim this worker now holds); on SQLite, which has no
    round trips to save, all of it is one transaction, one take of the write lock.
    """
    with session_scope(runtime.single_db) as session:
        slice_row = claim_slice(
            session, run_id=order.run_id, slice_id=order.slice_id, worker=worker
        )
        if slice_row is None:
            return None
        run, lane, config = runtime.lane(session, order.run_id, slice_row.lane_index)
        guard, items = screen_items(
            session,
            slice_row=slice_row,
            items=open_items(session, slice_row=slice_row, first_claim=slice_row.attempts == 1),
            max_attempts=config.max_attempts,
            worker=worker,
            gpu_group=runtime.gpu_group,
        )
        work = _Work(run, lane, config, items, guard)
        if not items:
            work.last_slice = finish_slice(session, run_id=order.run_id, slice_id=order.slice_id)
        return work


def _run_items(
    runtime: WorkerRuntime, engine: Engine, work: _Work, slice_id: int, worker: str
) -> None:
    """Every batch of the slice, each stored in one transaction; the last marks it done.

    Items of unequal generation settings (their own requests') go in separate batches
    (``worker.settings_groups``). Stops early, with the slice left as the cancel set it,
    when the run is cancelled.
    """
    texts = lane_prompts(work.config, work.lane.permutation, work.items)
    settings = settings_groups(work.config, work.items)
    prepared = prepare_groups(
        engine,
        [(item.payload, text) for item, text in zip(work.items, texts, strict=True)],
        settings,
    )
    prompts, lengths = prepared.prompts, prepared.lengths
    if work.config.keep_prompts:
        work.kept_prompts = [shown_prompt(prompt) for prompt in prompts]
    unrunnable = sorted(prepared.failed)
    rows = _rows(
        runtime,
        work,
        slice_id,
        worker,
        unrunnable,
        [Outcome(None, 0.0, 0, *prepared.failed[index]) for index in unrunnable],
        lengths,
    )
    batches = _groups(work, runtime, settings, set(prepared.runnable), lengths)
    step = next(batches, None)
    while True:
        # Each step is one statement on PostgreSQL, its own transaction without BEGIN.
        with session_scope(runtime.single_db) as session:
            if step is None:
                work.last_slice = finish_slice(
                    session, run_id=work.run.id, slice_id=slice_id, saving=rows
                )
                return
            if not work.guard.begin(session, step[1], saving=rows):
                return  # the run was cancelled: hand the engine nothing more
        group, batch = step
        with work.guard.recording(runtime.db, batch):
            outcomes = _answer(runtime, engine, group, prompts, lengths, batch)
        rows = _rows(runtime, work, slice_id, worker, batch, outcomes, lengths)
        # Planned now, after this batch: an OOM in it lowered the budget for the rest.
        step = next(batches, None)


def _groups(
    work: _Work,
    runtime: WorkerRuntime,
    settings: list[SettingsGroup],
    runnable: set[int],
    lengths: list[int],
) -> Iterator[tuple[SettingsGroup, list[int]]]:
    """The slice's batches in running order, each with its settings; each suspect item
    split off to run alone."""
    batching = work.config.batching
    for group in settings:
        batches = iter_batches(
            {index: lengths[index] for index in group.indexes if index in runnable},
            batch_size=batching.batch_size,
            max_new_tokens=group.config.generation.max_new_tokens,
            max_padding=batching.max_padding,
            # Re-read before every batch: an OOM lowers it for the rest of the slice too.
            budget=lambda: runtime.memory.limit(batching.max_batch_tokens),
        )
        for batch in batches:
            for part in work.guard.groups(batch):
                yield group, part


def _answer(
    runtime: WorkerRuntime,
    engine: Engine,
    group: SettingsGroup,
    prompts: list[Prompt],
    lengths: list[int],
    indexes: list[int],
) -> list[Outcome]:
    """The items' outcomes: failing items isolated, OOM backed off, output checked."""
    config, params = group.config, group.params

    def generate(positions: list[int]) -> list[Outcome]:
        chosen = [indexes[position] for position in positions]
        return generate_isolated(
            engine,
            [prompts[index] for index in chosen],
            params,
            lengths=[lengths[index] for index in chosen],
            memory=runtime.memory,
        )

    outcomes = generate(list(range(len(indexes))))
    if config.output_schema is not None:
        outcomes = validate_outcomes(
            outcomes, config.output_schema, retries=config.retries_on_invalid, regenerate=generate
        )
    return outcomes


def _rows(
    runtime: WorkerRuntime,
    work: _Work,
    slice_id: int,
    worker: str,
    indexes: list[int],
    outcomes: list[Outcome],
    lengths: list[int],
) -> list[ResultRow]:
    """The result rows of a batch's items."""
    rows: list[ResultRow] = []
    for index, outcome in zip(indexes, outcomes, strict=True):
        completion = outcome.completion
        score, scores = answer_score(
            work.config,
            work.lane.permutation,
            work.items[index],
            completion.text if completion and outcome.error_kind is None else None,
        )
        rows.append(
            ResultRow(
                run_id=work.run.id,
                item_id=work.items[index].id or 0,
                lane_index=work.lane.index,
                slice_id=slice_id,
                ok=completion is not None and outcome.error_kind is None,
                answer=completion.text if completion else None,
                score=score,
                scores=scores,
                prompt=work.kept_prompts[index] if work.kept_prompts else None,
                parsed=outcome.parsed,
                latency_s=outcome.latency_s,
                tokens_in=completion.tokens_in if completion else lengths[index],
                tokens_out=completion.tokens_out if completion else 0,
                batch_size=outcome.batch_size,
                worker=worker,
                gpu_group=runtime.gpu_group,
                error_kind=outcome.error_kind,
                error_message=outcome.error_message,
                finish_reason=completion.finish_reason if completion else None,
            )
        )
    return rows
