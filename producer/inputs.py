"""Reading input JSONL: streamed line by line, every record validated.

Three record shapes are understood: contexts records (``id``, ``query``,
``context`` and any extra fields, which are kept and passed through), plain
``{"id", "prompt"}`` and chat ``{"id", "messages": [{"role", "content"}...]}``.
A ``--template`` builds the prompt from any fields. Any of them may carry images and
a video (``images``/``video`` fields, or content parts in ``messages``): each is
checked and its path made absolute by ``producer.media``.

Every value is checked before anything is stored, so the verdict is the same on
SQLite and PostgreSQL and nothing fails later in a worker or an export: a line
longer than ``max_line_bytes`` is refused unread (before any JSON parsing or
tokenising); then nesting deeper than ``MAX_DEPTH``, a lone surrogate
(``"\\ud800"``: not text in any encoding), a NUL character (``"\\u0000"``:
PostgreSQL stores none), ``NaN``/``Infinity`` (not JSON: no export could write
them) and an empty or whitespace-only prompt are refused naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common.constants import (
    CONTEXTS_TEMPLATE,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_LINE_BYTES,
)
from common.errors import InputError
from common.media import content_text, has_media_fields, is_parts
from common.prompts import MissingField, render, template_fields
from producer.idlines import IdLines
from producer.media import BadMedia, MediaCheck

_BOM = b"\xef\xbb\xbf"

#: Roles a chat record's ``messages`` may use.
CHAT_ROLES = ("system", "user", "assistant")

#: Deepest nesting of objects and arrays in a record (the record itself is level 1).
MAX_DEPTH = 100

#: Bytes of a rejected line kept with its reject.
RAW_KEPT = 2000


@dataclass(frozen=True)
class InputRecord:
    """One valid record with its rendered prompt."""

    line_no: int
    custom_id: str
    payload: dict[str, Any]
    prompt: str
    reference: str | None
    #: The reference is a JSON object or array (``reference`` is its JSON text).
    reference_is_json: bool = False
    #: The record's own generation settings (``common.request_settings``), or None.
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rejected:
    """One invalid record: where it was and why."""

    line_no: int
    raw: str
    error: InputError
    #: The record's own id when it has a usable one (its export keeps it), else None.
    record_id: str | int | None = None


class RecordReader:
    """Turns the lines of one file into InputRecord or Rejected, in order."""

    #: The field holding a record's own id.
    id_field = "id"

    def __init__(
        self,
        path: Path,
        *,
        template: str | None = None,
        reference_field: str | None = None,
        lines: Iterable[bytes] | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.path = path
        #: Lines to read instead of the file (a pipeline stage's records); path names them.
        self.lines = lines
        self.template = template
        self.fields = template_fields(template) if template else None
        self.reference_field = reference_field
        self.max_line_bytes = max_line_bytes
        self.media = MediaCheck(path.parent, max_image_pixels)
        self._seen = IdLines()

    def __iter__(self) -> Iterator[InputRecord | Rejected]:
        if self.lines is not None:
            yield from self._read((line, _size(line)) for line in self.lines)
            return
        with self.path.open("rb") as stream:
            yield from self._read(bounded_lines(stream, self.max_line_bytes))

    def _read(self, lines: Iterable[tuple[bytes, int]]) -> Iterator[InputRecord | Rejected]:
        for line_no, (raw, size) in enumerate(lines, start=1):
            entry = self._entry(line_no, raw, size)
            if entry is not None:
                yield entry

    def _entry(self, line_no: int, raw: bytes, size: int) -> InputRecord | Rejected | None:
        """The record of one line of ``size`` bytes, or why it is refused; None when blank."""
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            if size > self.max_line_bytes:
                raise self._fail(
                    line_no,
                    f"line of {size:,} bytes is over the limit of {self.max_line_bytes:,} "
                    "(--max-line-bytes or FLEET_MAX_LINE_BYTES raises it)",
                )
            if not raw.strip():
                return None
            return self._record(line_no, raw)
        except InputError as error:
            shown = _shown(raw[:RAW_KEPT].decode("utf-8", "replace"))
            return Rejected(line_no, shown, error, _record_id(raw, size, error, self, line_no))

    def seen_first(self, custom_id: str, line_no: int) -> bool:
        """Whether ``custom_id`` is the record's on ``line_no``: not taken by an earlier
        record of the file (it is taken for this one from now on)."""
        return self._seen.setdefault(custom_id, line_no) == line_no

    def _fail(self, line_no: int, message: str, field: str | None = None) -> InputError:
        return InputError(str(self.path), line_no, message, field)

    def _record(self, line_no: int, raw: bytes) -> InputRecord:
        record = self._parse(line_no, raw)
        record = self._media(line_no, record)  # before the id is taken: a reject keeps it
        custom_id = self._custom_id(line_no, record)
        return InputRecord(
            line_no=line_no,
            custom_id=custom_id,
            payload=record,
            prompt=self._prompt(line_no, record),
            reference=self._reference(line_no, record),
            reference_is_json=isinstance(record.get(self.reference_field or ""), (dict, list)),
        )

    def _parse(self, line_no: int, raw: bytes) -> dict[str, Any]:
        """The line as a JSON object whose every value can be stored and exported."""
        # Only the last line of a file can lack its newline: a cut-off write.
        hint = " (truncated last line?)" if not raw.endswith(b"\n") else ""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.end]
            raise self._fail(
                line_no, f"not valid UTF-8 (byte {error.start}: {bad!r}){hint}"
            ) from error
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            message = f"not valid JSON: {error.msg} at column {error.colno}{hint}"
            raise self._fail(line_no, message) from None
        except RecursionError:
            raise self._fail(line_no, f"nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as error:  # e.g. an integer of more than 4,300 digits
            raise self._fail(line_no, f"not valid JSON: {error}") from None
        if not isinstance(record, dict):
            raise self._fail(line_no, f"expected a JSON object, got {type(record).__name__}")
        self._check_values(line_no, record)
        return record

    def _check_values(self, line_no: int, record: dict[str, Any]) -> None:
        """Refuse what no database stores alike, or no export writes, naming the field."""
        stack: list[tuple[Any, str, int]] = [(record, "", 1)]
        while stack:
            value, where, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise self._fail(line_no, f"nested deeper than {MAX_DEPTH} levels", where)
            if isinstance(value, dict):
                for key in value:
                    self._check_text(line_no, key, _join(where, key), "its name")
                children = [(child, _join(where, key)) for key, child in value.items()]
            elif isinstance(value, list):
                children = [(child, f"{where}[{index}]") for index, child in enumerate(value)]
            else:
                children = []
                self._check_scalar(line_no, value, where)
            stack.extend((child, path, depth + 1) for child, path in reversed(children))

    def _check_scalar(self, line_no: int, value: Any, where: str) -> None:
        if isinstance(value, str):
            self._check_text(line_no, value, where, "its text")
        elif isinstance(value, float) and not math.isfinite(value):
            raise self._fail(
                line_no, f"{value} is not a JSON number (NaN and Infinity cannot be stored)", where
            )

    def _check_text(self, line_no: int, text: str, where: str, what: str) -> None:
        if "\x00" in text:
            raise self._fail(line_no, f"{what} holds a NUL character (\\u0000)", where or None)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            code = f"\\u{ord(text[error.start]):04x}"
            raise self._fail(
                line_no, f"{what} holds a lone surrogate ({code}), which is not text", where or None
            ) from None

    def _media(self, line_no: int, record: dict[str, Any]) -> dict[str, Any]:
        """The record with its images and video checked and their paths absolute."""
        messages = record.get("messages")
        parts = isinstance(messages, list) and any(
            isinstance(message, dict) and is_parts(message.get("content")) for message in messages
        )
        if not parts and not has_media_fields(record):
            return record
        try:
            return self.media.resolve(record)
        except BadMedia as bad:
            raise self._fail(line_no, bad.message, bad.field) from None

    def _custom_id(self, line_no: int, record: dict[str, Any]) -> str:
        if "id" not in record:
            raise self._fail(line_no, "missing", "id")
        value = record["id"]
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise self._fail(line_no, f"must be a non-empty string or integer, got {value!r}", "id")
        custom_id = str(value)
        first = self._seen.setdefault(custom_id, line_no)
        if first != line_no:
            raise self._fail(line_no, f"duplicate id {custom_id!r} (first on line {first})", "id")
        return custom_id

    def _prompt(self, line_no: int, record: dict[str, Any]) -> str:
        prompt = self._render(line_no, record)
        if not prompt.strip():
            field = "messages" if "messages" in record and not self.template else "prompt"
            raise self._fail(line_no, "is empty or only whitespace: nothing to answer", field)
        return prompt

    def _render(self, line_no: int, record: dict[str, Any]) -> str:
        if self.template and self.fields:
            try:
                return render(self.template, self.fields, record)
            except MissingField as missing:
                raise self._fail(
                    line_no, "named by the template but missing", missing.field
                ) from None
        if "messages" in record:
            return self._messages(line_no, record["messages"])
        if "prompt" in record:
            if not isinstance(record["prompt"], str):
                raise self._fail(line_no, "must be a string", "prompt")
            return record["prompt"]
        if "context" in record and "query" in record:
            return render(CONTEXTS_TEMPLATE, ["context", "query"], record)
        raise self._fail(
            line_no, "missing (or give 'context' and 'query', or a --template)", "prompt"
        )

    def _messages(self, line_no: int, messages: Any) -> str:
        """Check a chat record's ``messages``; the prompt kept for display is their text.

        The worker renders the messages themselves through the model's chat template.
        """
        if not isinstance(messages, list) or not messages:
            raise self._fail(line_no, "must be a non-empty list of {role, content}", "messages")
        for position, message in enumerate(messages):
            where = f"messages[{position}]"
            if not isinstance(message, dict):
                raise self._fail(line_no, "must be an object with role and content", where)
            role = message.get("role")
            if role not in CHAT_ROLES:
                raise self._fail(
                    line_no,
                    f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}",
                    where + ".role",
                )
            content = message.get("content")
            if not isinstance(content, str) and not is_parts(content):
                raise self._fail(line_no, "must be a string or a list of parts", where + ".content")
        texts = [content_text(message["content"]) for message in messages]
        if not any(text.strip() for text in texts):
            raise self._fail(line_no, "every content is empty or only whitespace", "messages")
        return "\n".join(
            f"{message['role']}: {text}" for message, text in zip(messages, texts, strict=True)
        )

    def _reference(self, line_no: int, record: dict[str, Any]) -> str | None:
        if self.reference_field is None:
            return None
        if self.reference_field not in record:
            raise self._fail(line_no, "missing", self.reference_field)
        value = record[self.reference_field]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def bounded_lines(stream: IO[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """The stream's lines with their sizes (newline not counted). Past ``limit`` bytes
    only a line's head is kept and the rest read in chunks and dropped: a huge line
    costs no memory."""
    while line := stream.readline(limit + 1):
        size = _size(line)
        if size > limit and not line.endswith(b"\n"):
            while chunk := stream.readline(1 << 20):
                size += _size(chunk)
                if chunk.endswith(b"\n"):
                    break
            line = line[:RAW_KEPT]
        yield line, size


def _size(line: bytes) -> int:
    return len(line) - line.endswith(b"\n")


def _join(where: str, key: str) -> str:
    return f"{where}.{_shown(key)}" if where else _shown(key)


def _shown(text: str) -> str:
    """``text`` safe to print and store: NULs and lone surrogates as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _record_id(
    raw: bytes, size: int, error: InputError, reader: RecordReader, line_no: int
) -> str | int | None:
    """A rejected line's own id, when it parses and the id is usable and not taken."""
    if error.field == reader.id_field or size > reader.max_line_bytes:
        return None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    value = record.get(reader.id_field) if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return None
    return value if reader.seen_first(str(value), line_no) else None
