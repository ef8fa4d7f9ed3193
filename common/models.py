"""The SQL schema: every input, every answer, every error, every slice state.

SQL is the source of truth; Redis only carries work orders that point here.
The unique keys are what make at-least-once delivery write each answer once:
a Result is unique on (run, item, lane), a Slice on (run, lane, index).

The two tables a slice writes per item, ``Result`` and ``Attempt``, name their run,
item and slice without foreign keys: each check is a lookup and a row lock per row
(on PostgreSQL about 5 microseconds a row each, six per item: about half of what
the database spends on a slice). Their ids are the ones the slice's worker read
from those rows in the same transaction, and nothing deletes a run, an item or a
slice. Every other table keeps its foreign keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Index, String, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel

from common.constants import DEFAULT_QUEUE


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware (SQLModel stores and returns it as such)."""
    return datetime.now(UTC)


def elapsed_s(start: datetime | None, end: datetime | None) -> float:
    """Seconds from ``start`` to ``end``; 0 when either is unknown or the clock went back."""
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


class RunStatus(StrEnum):
    pending = "pending"
    running = "running"
    finalizing = "finalizing"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class SliceStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    cancelled = "cancelled"


class StatusColumn(TypeDecorator[StrEnum]):
    """A status enum stored as its value in a plain VARCHAR, read back as the enum.

    No database enum type: a new state needs no migration, and a misspelled one is
    refused (ValueError) before it reaches SQL.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int = 16) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)


#: Slice states that still owe results.
OPEN_SLICE_STATES = (SliceStatus.pending.value, SliceStatus.running.value)


class Run(SQLModel, table=True):
    """One job: its inputs, lanes, settings and status."""

    id: str = Field(primary_key=True, max_length=32)
    status: RunStatus = Field(
        default=RunStatus.pending,
        sa_column=Column(
            StatusColumn(RunStatus), index=True, nullable=False, default=RunStatus.pending
        ),
    )
    input_path: str
    engine: str = Field(max_length=32)
    queue: str = Field(max_length=200)
    #: Everything that decides the answers: template, generation and batching settings.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    item_count: int = 0
    rejected_count: int = 0
    lane_count: int = 0
    slice_count: int = 0
    #: Results of the run's done slices, added as each slice finishes (``store.finish_slice``):
    #: what ``fleet status`` and the progress bar read, at the same cost for any run size.
    results_ok: int = 0
    results_failed: int = 0
    slices_done: int = 0
    #: How many times finalize ran to completion: 1 on a healthy run, never more.
    finalize_count: int = 0
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Lane(SQLModel, table=True):
    """One (model, permutation) pair of a run; every item runs once in every lane."""

    __table_args__ = (UniqueConstraint("run_id", "index"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    index: int
    model: str
    permutation: str = Field(max_length=200)
    #: Broker queue of this lane's slices: the run's queue, or the model's own
    #: (``common.routing.model_queue``) when the run was enqueued with model queues.
    queue: str = Field(default=DEFAULT_QUEUE, max_length=200)


class Item(SQLModel, table=True):
    """One input record as read: its position, ids, payload and rendered prompt."""

    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        Index("ix_item_run_custom_id", "run_id", "custom_id"),
        Index("ix_item_run_slice_pos", "run_id", "slice_pos"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", max_length=32)
    #: 0-based position among the run's items; slices are ranges of it.
    seq: int
    #: With ``--sort-by-length``: the position in the slicing order (longest prompt
    #: first), which the run's slices are ranges of instead of ``seq``.
    slice_pos: int | None = None
    custom_id: str
    dataset: str = Field(default="default", max_length=200)
    #: 1-based line of the source file, for error messages.
    line_no: int
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: The identity lane's text prompt (template, ``prompt``, or context and query). For a
    #: chat record it is the messages' text, for ``--sort-by-length`` and display only:
    #: the worker builds the model's prompt from the messages in ``payload``
    #: (``common.prompts.build_prompt``).
    prompt: str | None = Field(default=None, sa_column=Column(Text))
    reference: str | None = Field(default=None, sa_column=Column(Text))
    #: The reference was a JSON object or array: ``reference`` holds its JSON text.
    reference_is_json: bool | None = None
    #: Set when the record was rejected at enqueue (``--skip-invalid``).
    reject_reason: str | None = Field(default=None, sa_column=Column(Text))
    #: The item's own generation settings over the run's (an OpenAI Batch request's:
    #: ``common.request_settings.RequestSettings``); None: the run's.
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class Slice(SQLModel, table=True):
    """A contiguous range of items in one lane: one Celery task, the unit of retry."""

    __table_args__ = (
        UniqueConstraint("run_id", "lane_index", "index"),
        Index("ix_slice_run_status", "run_id", "status"),
        #: The reconciler's question "has this worker claimed anything since?".
        Index("ix_slice_worker_started", "worker", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", max_length=32)
    lane_index: int
    index: int
    seq_start: int
    #: Exclusive end of the range.
    seq_end: int
    #: The range is over ``Item.slice_pos`` (``--sort-by-length``), not ``Item.seq``.
    by_length: bool = False
    status: SliceStatus = Field(
        default=SliceStatus.pending,
        sa_column=Column(StatusColumn(SliceStatus), nullable=False, default=SliceStatus.pending),
    )
    attempts: int = 0
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The slice's results when it was marked done: what it added to its run's counts,
    #: and takes back if it is reopened.
    results_ok: int = 0
    results_failed: int = 0


class Result(SQLModel, table=True):
    """The answer (or error) of one item in one lane.

    Every result names the slice that holds its item in its lane (rejected records
    too), so a slice finds its own results through ``ix_result_slice`` alone, at the
    same cost in a run of any size. The unique key leads with (run, lane), so the
    run-wide statistics need no index of their own.
    """

    __table_args__ = (
        UniqueConstraint("run_id", "lane_index", "item_id", name="uq_result_run_lane_item"),
        Index("ix_result_slice", "slice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=32)
    item_id: int
    lane_index: int
    slice_id: int | None = None
    ok: bool
    answer: str | None = Field(default=None, sa_column=Column(Text))
    parsed: Any | None = Field(default=None, sa_column=Column(JSON))
    score: float | None = None
    #: A multi-metric scorer's metrics (name -> value); ``score`` is one of them.
    scores: dict[str, float] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    #: The prompt as the engine rendered it, for a run asked to keep prompts.
    prompt: str | None = Field(default=None, sa_column=Column(Text))
    #: Seconds from the batch's start to its answers: what this item waited on the engine.
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    batch_size: int = 0
    worker: str | None = None
    gpu_group: str | None = None
    attempts: int = 1
    error_kind: str | None = Field(default=None, max_length=32)
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    #: Why generation ended: ``stop`` (end of sequence or a stop string) or ``length``
    #: (max_new_tokens reached); None when the engine could not tell.
    finish_reason: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)


class RunStat(SQLModel, table=True):
    """One figure of a finished run, e.g. (``overall``, ``latency_p95_s``, 0.41)."""

    __table_args__ = (UniqueConstraint("run_id", "scope", "metric"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    #: ``overall``, ``worker:<name>`` or ``lane:<index>``.
    scope: str = Field(max_length=300)
    metric: str = Field(max_length=64)
    value: float


#: One statistic as computed, before it is stored as a ``RunStat``: (scope, metric, value).
Stat = tuple[str, str, float]


class Attempt(SQLModel, table=True):
    """How often one item was handed to an engine in one lane, and how it last went wrong.

    Counted before each batch runs, in its own transaction, so a worker that dies
    on an item still leaves the count behind; the count is what quarantines a
    poison item instead of letting redelivery run it forever.
    """

    __table_args__ = (
        UniqueConstraint("run_id", "lane_index", "item_id", name="uq_attempt_run_lane_item"),
        Index("ix_attempt_slice", "slice_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(max_length=32)
    item_id: int
    lane_index: int
    #: The slice holding the item in this lane: a slice reads its items' counts by it.
    slice_id: int | None = None
    count: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class Receipt(SQLModel, table=True):
    """Which worker took a slice's work order from the broker, before any claim.

    Between the broker handing a worker the message and its pool process claiming
    the slice, the slice is still ``pending`` and nothing in SQL names the holder. A
    worker killed in that gap (while its pool process starts or loads the model)
    leaves the message unacknowledged in Redis until the visibility timeout, an hour
    or more. The worker's main process writes this row as it receives the message,
    so the reconciler can hand the slice out again once that worker goes silent.
    """

    slice_id: int = Field(primary_key=True, foreign_key="slice.id")
    #: The Celery node name, as on ``WorkerBeat.name``.
    worker: str = Field(max_length=200)
    received_at: datetime


class WorkerBeat(SQLModel, table=True):
    """A worker's sign of life, written by its main process every few seconds.

    A slice held by a worker whose beats stopped, or whose worker restarted since
    the claim (``booted_at`` after the slice's ``started_at``), is abandoned: the
    reconciler hands it out again without waiting for the slice's lease.
    """

    #: The Celery node name, as stored on ``Slice.worker`` (e.g. ``gpu0@host``).
    name: str = Field(primary_key=True, max_length=200)
    booted_at: datetime
    seen_at: datetime


class ReconcileTurn(SQLModel, table=True):
    """Whose turn the fleet's reconciler pass is: one row, taken by compare-and-set.

    Every worker offers a pass every ``FLEET_RECONCILE_INTERVAL`` seconds; the one
    that moves ``started_at`` forward runs it, the others skip, so a fleet of any
    size makes about one pass per interval instead of one per worker.
    """

    name: str = Field(primary_key=True, max_length=32)
    worker: str = Field(max_length=200)
    started_at: datetime


class SchemaMark(SQLModel, table=True):
    """The schema this database was last made or upgraded to: one row, a fingerprint
    of every table's columns and indexes as ``common.models`` declares them.

    Every process opens its database through ``common.db.make_engine``; a database
    whose mark matches is not inspected table by table (about thirty statements, a
    tenth of a second of a worker's first slice), only read once (``common.db``).
    """

    id: int = Field(default=1, primary_key=True)
    fingerprint: str = Field(max_length=64)
