"""In-memory input records (the Python API's list of dicts), validated as a file's lines are.

Each record is written as one JSON line and read by the file reader's own checks,
so a dict is refused for exactly what would refuse its line in a file (a missing
``id``, an empty prompt, NaN, a NUL character, a field the template names...).
The errors name the record by its index in the list (``RecordError``) instead of a
file and line. A value JSON cannot hold (a ``set``, a ``datetime``) is refused
naming its field. The records are read one at a time: a generator of millions
costs the memory of one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from common.constants import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_LINE_BYTES
from common.errors import InputError, RecordError
from producer.inputs import RAW_KEPT, InputRecord, RecordReader, Rejected

#: What a run's inputs are called when they came as records, not a file.
RECORDS_SOURCE = "records"

#: Types a record's values may have, as JSON holds them.
_JSON_SCALARS = (str, int, float, bool, type(None))


class RecordsReader(RecordReader):
    """Turns an iterable of dicts into InputRecord or Rejected, in order."""

    def __init__(
        self,
        records: Iterable[Any],
        *,
        template: str | None = None,
        reference_field: str | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__(
            Path(RECORDS_SOURCE),
            template=template,
            reference_field=reference_field,
            max_line_bytes=max_line_bytes,
            max_image_pixels=max_image_pixels,
        )
        self.records = records

    def __iter__(self) -> Iterator[InputRecord | Rejected]:
        for index, record in enumerate(self.records):
            line_no = index + 1
            try:
                raw = _json_line(index, record)
            except RecordError as error:
                yield Rejected(line_no, repr(record)[:RAW_KEPT], error)
                continue
            entry = self._entry(line_no, raw, len(raw) - 1)
            if entry is not None:
                yield entry

    def _fail(self, line_no: int, message: str, field: str | None = None) -> InputError:
        return RecordError(line_no - 1, message, field)


def _json_line(index: int, record: Any) -> bytes:
    """``record`` as one JSON line; RecordError naming what JSON cannot hold."""
    if not isinstance(record, Mapping):
        raise RecordError(index, f"expected a dict, got {type(record).__name__}")
    try:
        text = json.dumps(dict(record), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        field, value = _first_foreign(record)
        if value is None:
            raise RecordError(index, f"not JSON: {error}") from None
        kind = type(value).__name__
        raise RecordError(
            index, f"a {kind} is no JSON value (str, number, bool, None, list or dict)", field
        ) from None
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: escaped, the reader names its field
        return json.dumps(dict(record)).encode("ascii") + b"\n"


def _first_foreign(value: Any) -> tuple[str | None, Any]:
    """The path and value of the first part of ``value`` that JSON cannot hold, if any.

    A container met twice (a record that holds itself) is not walked again.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    seen: set[int] = set()
    while stack:
        part, path = stack.pop()
        if isinstance(part, (Mapping, list, tuple)):
            if id(part) in seen:
                continue
            seen.add(id(part))
        if isinstance(part, Mapping):
            for key, child in reversed(list(part.items())):
                if not isinstance(key, _JSON_SCALARS):
                    return path or None, key
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(part, (list, tuple)):
            stack.extend((child, f"{path}[{n}]") for n, child in reversed(list(enumerate(part))))
        elif not isinstance(part, _JSON_SCALARS):
            return path, part
    return None, None
