"""The inputs of a run: named datasets, each a file (or a pipeline's source run).

A run reads one or more datasets (``INPUT``, ``--dataset name=path`` repeated, or a
run file's ``[datasets]`` table); every item is tagged with its dataset's name.
``--sample N --seed S`` keeps N records of each dataset: those whose id hashes
lowest under S. The subset depends only on (N, S, the ids), not on the order of the
file, so it is the same on every machine and after a reshuffle of the file.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from common import permutations
from common.constants import IDENTITY
from common.errors import ConfigError, InputError
from common.prompts import record_text
from producer.inputs import InputRecord, RecordReader, Rejected

#: Dataset name of the positional INPUT file.
DEFAULT_DATASET = "default"

Entry = InputRecord | Rejected


@dataclass(frozen=True)
class Dataset:
    """One named input: where it comes from (for messages) and its records."""

    name: str
    source: str
    reader: RecordReader


def parse_dataset_option(text: str) -> tuple[str, str]:
    """``name=path`` from ``--dataset``; ConfigError saying what is wrong."""
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ConfigError(
            f"--dataset {text!r}: expected name=path, e.g. --dataset gsm8k=gsm8k.jsonl"
        )
    return name, path


def dataset_map(texts: list[str]) -> dict[str, str]:
    """``--dataset`` options as ``{name: path}``; ConfigError for a repeated name."""
    datasets: dict[str, str] = {}
    for text in texts:
        name, path = parse_dataset_option(text)
        if name in datasets:
            raise ConfigError(f"--dataset {text!r}: the name {name!r} is given twice")
        datasets[name] = path
    return datasets


def check_dataset_files(datasets: dict[str, str]) -> None:
    """Every dataset file exists and is a file; ConfigError naming the dataset."""
    for name, path in datasets.items():
        if not Path(path).is_file():
            raise ConfigError(f"dataset {name!r}: no such file {path}")


def sample_stable(entries: Iterable[Entry], *, size: int, seed: int) -> Iterator[Entry]:
    """The ``size`` valid records whose ids hash lowest under ``seed``, in file order.

    Rejected records all pass through, so every error of the file is still reported.
    Memory holds ``size`` records, not the file.
    """
    rejects: list[Rejected] = []

    def valid() -> Iterator[InputRecord]:
        for entry in entries:
            if isinstance(entry, Rejected):
                rejects.append(entry)
            else:
                yield entry

    chosen = heapq.nsmallest(size, valid(), key=lambda record: sample_rank(seed, record.custom_id))
    merged: list[Entry] = [*chosen, *rejects]
    yield from sorted(merged, key=lambda entry: entry.line_no)


def sample_rank(seed: int, custom_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{custom_id}".encode()).digest()


def check_lanes(
    entries: Iterable[Entry], *, specs: list[str], template: str | None, path: str
) -> Iterator[Entry]:
    """Reject a record a lane's permutation cannot transform or render, at enqueue.

    The workers render each lane's prompt themselves; trying every permutation here
    means a bad record is reported with its file and line before anything is stored.
    """
    active = [permutations.parse(spec) for spec in specs if spec != IDENTITY]
    for entry in entries:
        if isinstance(entry, InputRecord):
            for permutation in active:
                try:
                    record_text(template, permutation.payload(entry.payload))
                except (ValueError, KeyError, TypeError) as error:
                    message = f"permutation {permutation.spec}: {error}"
                    refusal = InputError(path, entry.line_no, message)
                    entry = Rejected(entry.line_no, "", refusal, entry.payload.get("id"))
                    break
        yield entry


def unreadable_as_reject(entries: Iterable[Entry], path: str) -> Iterator[Entry]:
    """The entries, then, if the file cannot be read (missing, a folder, no permission),
    one reject saying so: with ``--skip-invalid`` a bad file stops only its own dataset."""
    try:
        yield from entries
    except OSError as error:
        problem = InputError(path, 0, f"cannot read the file: {error.strerror or error}")
        yield Rejected(0, "", problem)
