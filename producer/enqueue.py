"""Creating a run in SQL: validate every record, insert items in bulk, cut slices.

All of it happens in one transaction: a file with a bad record leaves nothing
behind (unless ``skip_invalid``, which records the rejects as failed items).
Publishing the work orders comes after the commit (``common.publish``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from common import scoring
from common.db import session_scope
from common.errors import ConfigError, InputError, InvalidInputFile
from common.models import Item, Lane, Run, Slice, utcnow
from common.results import ErrorKind, ResultRow
from common.routing import model_queue
from common.runconfig import RunConfig
from common.store import (
    insert_items,
    insert_run,
    insert_slices,
    order_items_by_length,
    save_results,
    set_run_counts,
)
from producer.datasets import (
    DEFAULT_DATASET,
    Dataset,
    check_dataset_files,
    check_lanes,
    sample_stable,
    unreadable_as_reject,
)
from producer.inputs import InputRecord, RecordReader, Rejected
from producer.openai_batch import reader_for
from producer.pipelines import source_run_id, stage_reader
from producer.records import RECORDS_SOURCE, RecordsReader
from producer.slicing import cut

#: Rows per bulk INSERT of items.
INSERT_CHUNK = 1000

#: Errors listed in full in the message of an invalid file.
ERRORS_SHOWN = 20


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
    input_path: Path | None = None,
    records: Iterable[Any] | None = None,
    config: RunConfig,
    queue: str,
    skip_invalid: bool = False,
    reference_field: str | None = None,
    model_queues: bool = False,
) -> Enqueued:
    """Validate every dataset and create the run, items and slices in one transaction.

    The inputs, in this order: the results of ``config.from_run`` (a pipeline stage),
    ``input_path`` or ``records`` (dicts, from Python; dataset ``default``), then
    ``config.datasets``. ``model_queues``:
    each lane's slices go to its model's own queue (``common.routing``), for workers
    pinned to one model; else all go to ``queue``.
    """
    if reference_field is not None:
        config = config.model_copy(update={"reference_field": reference_field})
    if config.from_run is not None:  # stored by id: ``latest`` names another run tomorrow
        config = config.model_copy(update={"from_run": source_run_id(db, config.from_run)})
    datasets = open_datasets(
        db, input_path=input_path, records=records, config=config, skip_invalid=skip_invalid
    )
    lanes = config.lanes()
    run_id = new_run_id()
    with session_scope(db) as session:
        insert_run(
            session,
            run=Run(
                id=run_id,
                input_path=", ".join(dataset.source for dataset in datasets),
                engine=config.engine,
                queue=queue,
                config=config.model_dump(mode="json"),
                lane_count=len(lanes),
            ),
            lanes=[
                Lane(
                    run_id=run_id,
                    index=index,
                    model=model,
                    permutation=permutation,
                    queue=model_queue(queue, model) if model_queues else queue,
                )
                for index, (model, permutation) in enumerate(lanes)
            ],
        )
        count = error_total = 0
        for dataset in datasets:
            entries = _entries(dataset, config, skip_invalid)
            added, errors, dataset_errors = _insert_records(
                session, run_id, entries, skip_invalid, count, dataset.name
            )
            if dataset_errors and not skip_invalid:
                raise InvalidInputFile(dataset.source, errors, dataset_errors)
            if added == 0:
                # With --skip-invalid an empty dataset among others is one reject: it shows
                # in the results, and the others run.
                message = "no records in the file" + (" after sampling" if config.sample else "")
                empty = InputError(dataset.source, 0, message)
                if not skip_invalid or len(datasets) == 1:
                    raise InvalidInputFile(dataset.source, [empty], 1)
                added, _, dataset_errors = _insert_records(
                    session, run_id, [Rejected(0, "", empty)], True, count, dataset.name
                )
            count += added
            error_total += dataset_errors
        if config.sort_by_length:
            order_items_by_length(session, run_id=run_id)
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
                    "by_length": config.sort_by_length,
                }
                for lane in range(len(lanes))
                for index, (start, end) in enumerate(ranges)
            ],
        )
        if error_total:
            _fail_rejects(session, run_id, config.slice_size, config.sort_by_length)
        slices = len(ranges) * len(lanes)
        set_run_counts(
            session,
            run_id=run_id,
            item_count=count,
            rejected_count=error_total,
            slice_count=slices,
        )
    return Enqueued(run_id=run_id, items=count, rejected=error_total, slices=slices)


def open_datasets(
    db: Engine,
    *,
    input_path: Path | None,
    records: Iterable[Any] | None = None,
    config: RunConfig,
    skip_invalid: bool = False,
) -> list[Dataset]:
    """The run's named inputs; ConfigError when there are none or a name repeats.

    Each dataset reads its records with its own template and reference field (a run
    file's ``[datasets.NAME]``, else the run's). A missing dataset file is an error,
    except with ``skip_invalid`` in a run of several datasets: then the file is one
    rejected record of its dataset, and the others run.
    """
    datasets: list[Dataset] = []
    if config.from_run is not None:
        check_scorer(config, DEFAULT_DATASET)
        run_id = source_run_id(db, config.from_run)
        stage = stage_reader(
            db, run_id=run_id, template=config.template, reference_field=config.reference_field
        )
        datasets.append(Dataset(DEFAULT_DATASET, str(stage.path), stage))
    given = _given_input(input_path, records, config)
    if given is not None:
        datasets.append(given)
    several = len(datasets) + len(config.datasets) > 1
    if not (skip_invalid and several):
        check_dataset_files(config.datasets)
    for name, path in config.datasets.items():
        if any(dataset.name == name for dataset in datasets):
            raise ConfigError(
                f"dataset {name!r} is given twice (INPUT is named '{DEFAULT_DATASET}')"
            )
        datasets.append(Dataset(name, path, _reader(Path(path), config, name)))
    if not datasets:
        raise ConfigError("no input: give INPUT, --dataset name=path or --from-run RUN")
    return datasets


def check_scorer(config: RunConfig, dataset: str) -> None:
    """The dataset's scorer parses and has a reference field; ConfigError saying which."""
    scorer = config.scorer_for(dataset)
    if scorer is None:
        return
    scoring.parse(scorer)
    if config.reference_field_for(dataset) is None:
        if scorer == config.scorer:
            raise ConfigError(f"--scorer {scorer} needs --reference-field")
        raise ConfigError(f"dataset {dataset!r}: scorer {scorer} needs a reference_field")


def _given_input(
    input_path: Path | None, records: Iterable[Any] | None, config: RunConfig
) -> Dataset | None:
    """The dataset ``default`` read from INPUT or from records, when one is given."""
    if input_path is not None and config.from_run is not None:
        raise ConfigError("give INPUT or --from-run, not both")
    if records is not None and (input_path is not None or config.from_run is not None):
        raise ConfigError("give records, INPUT or --from-run: one of them")
    if input_path is not None:
        return Dataset(DEFAULT_DATASET, str(input_path), _reader(input_path, config))
    if records is not None:
        return Dataset(DEFAULT_DATASET, RECORDS_SOURCE, _reader(records, config))
    return None


def _reader(
    source: Path | Iterable[Any], config: RunConfig, dataset: str = DEFAULT_DATASET
) -> RecordReader:
    """The reader of a file (an OpenAI Batch file's: ``producer.openai_batch.reader_for``),
    or of in-memory records (``producer.records``), with the dataset's own template and
    reference field."""
    check_scorer(config, dataset)
    options: dict[str, Any] = {
        "template": config.template_for(dataset),
        "reference_field": config.reference_field_for(dataset),
        "max_line_bytes": config.max_line_bytes,
        "max_image_pixels": config.max_image_pixels,
    }
    if isinstance(source, Path):  # an OpenAI Batch file, or the fleet's own records
        return reader_for(source, config=config, options=options)
    return RecordsReader(source, **options)


def _entries(
    dataset: Dataset, config: RunConfig, skip_invalid: bool
) -> Iterator[InputRecord | Rejected]:
    entries: Iterable[InputRecord | Rejected] = dataset.reader
    if skip_invalid:
        entries = unreadable_as_reject(entries, dataset.source)
    if config.sample is not None:
        entries = sample_stable(entries, size=config.sample, seed=config.sample_seed)
    return check_lanes(
        entries,
        specs=config.permutations,
        template=config.template_for(dataset.name),
        path=dataset.source,
    )


def _insert_records(
    session: Session,
    run_id: str,
    entries: Iterable[InputRecord | Rejected],
    skip_invalid: bool,
    first_seq: int,
    dataset: str,
) -> tuple[int, list[InputError], int]:
    """Stream the records into Item rows; returns (rows, errors shown, error count)."""
    buffer: list[dict[str, Any]] = []
    errors: list[InputError] = []
    error_total = 0
    seq = first_seq
    for entry in entries:
        if isinstance(entry, Rejected):
            error_total += 1
            if len(errors) < ERRORS_SHOWN:
                errors.append(entry.error)
        if error_total and not skip_invalid:
            continue  # keep reading: the user gets every error of the file at once
        buffer.append(_item_row(run_id, seq, entry, dataset))
        seq += 1
        if len(buffer) >= INSERT_CHUNK:
            insert_items(session, rows=buffer)
            buffer.clear()
    insert_items(session, rows=buffer)
    return seq - first_seq, errors, error_total


def _item_row(run_id: str, seq: int, entry: InputRecord | Rejected, dataset: str) -> dict[str, Any]:
    if isinstance(entry, Rejected):
        # A rejected record keeps its own id when it has a usable one.
        own_id = entry.record_id
        return {
            "run_id": run_id,
            "seq": seq,
            "custom_id": f"line-{entry.line_no}" if own_id is None else str(own_id),
            "line_no": entry.line_no,
            "payload": {"raw": entry.raw} if own_id is None else {"id": own_id, "raw": entry.raw},
            "prompt": None,
            "reference": None,
            "reference_is_json": False,
            "reject_reason": str(entry.error),
            "dataset": dataset,
            "params": None,
        }
    return {
        "run_id": run_id,
        "seq": seq,
        "custom_id": entry.custom_id,
        "line_no": entry.line_no,
        "payload": entry.payload,
        "prompt": entry.prompt,
        "reference": entry.reference,
        "reference_is_json": entry.reference_is_json,
        "reject_reason": None,
        "dataset": dataset,
        "params": entry.params,
    }


def _fail_rejects(session: Session, run_id: str, slice_size: int, by_length: bool) -> None:
    """A rejected record gets a failed result in every lane, so it is counted, never run.

    Each result names the slice holding its item in its lane, as a worker's would:
    the slice counts it when it finishes.
    """
    position = col(Item.slice_pos) if by_length else col(Item.seq)
    rejects = session.exec(
        select(Item.id, position, Item.reject_reason).where(
            Item.run_id == run_id, col(Item.reject_reason).is_not(None)
        )
    ).all()
    lanes_of_slice: dict[int, list[tuple[int, int | None]]] = {}
    for slice_id, lane, index in session.exec(
        select(Slice.id, Slice.lane_index, Slice.index).where(Slice.run_id == run_id)
    ):
        lanes_of_slice.setdefault(index, []).append((lane, slice_id))
    save_results(
        session,
        rows=[
            ResultRow(
                run_id=run_id,
                item_id=item_id or 0,
                lane_index=lane,
                slice_id=slice_id,
                error_kind=ErrorKind.invalid_input,
                error_message=reason,
                attempts=0,
            )
            for item_id, pos, reason in rejects
            for lane, slice_id in lanes_of_slice[(pos or 0) // slice_size]
        ],
    )
