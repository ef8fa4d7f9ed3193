"""Reading input JSONL: streamed line by line, every record validated.

Three record shapes are understood: seed 002's contexts records (``id``, ``query``,
``context`` and any extra fields, which are kept and passed through), plain
``{"id", "prompt"}`` and chat ``{"id", "messages": [{"role", "content"}...]}``.
A ``--template`` builds the prompt from any fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.constants import CONTEXTS_TEMPLATE
from common.errors import InputError
from common.templates import MissingField, render, template_fields

_BOM = b"\xef\xbb\xbf"

#: Roles a chat record's ``messages`` may use.
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class InputRecord:
    """One valid record with its rendered prompt."""

    line_no: int
    custom_id: str
    payload: dict[str, Any]
    prompt: str
    reference: str | None


@dataclass(frozen=True)
class Rejected:
    """One invalid record: where it was and why."""

    line_no: int
    raw: str
    error: InputError


class RecordReader:
    """Turns the lines of one file into InputRecord or Rejected, in order."""

    def __init__(
        self,
        path: Path,
        *,
        template: str | None = None,
        reference_field: str | None = None,
        lines: Iterable[bytes] | None = None,
    ) -> None:
        self.path = path
        #: Lines to read instead of the file (a pipeline stage's records); path names them.
        self.lines = lines
        self.template = template
        self.fields = template_fields(template) if template else None
        self.reference_field = reference_field
        self._seen: dict[str, int] = {}

    def __iter__(self) -> Iterator[InputRecord | Rejected]:
        if self.lines is not None:
            yield from self._read(self.lines)
            return
        with self.path.open("rb") as stream:
            yield from self._read(stream)

    def _read(self, stream: Iterable[bytes]) -> Iterator[InputRecord | Rejected]:
        for line_no, raw in enumerate(stream, start=1):
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if not raw.strip():
                continue
            try:
                yield self._record(line_no, raw)
            except InputError as error:
                yield Rejected(line_no, raw[:2000].decode("utf-8", "replace"), error)

    def _fail(self, line_no: int, message: str, field: str | None = None) -> InputError:
        return InputError(str(self.path), line_no, message, field)

    def _record(self, line_no: int, raw: bytes) -> InputRecord:
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
        if not isinstance(record, dict):
            raise self._fail(line_no, f"expected a JSON object, got {type(record).__name__}")
        custom_id = self._custom_id(line_no, record)
        return InputRecord(
            line_no=line_no,
            custom_id=custom_id,
            payload=record,
            prompt=self._prompt(line_no, record),
            reference=self._reference(line_no, record),
        )

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
            if not isinstance(message.get("content"), str):
                raise self._fail(line_no, "must be a string", where + ".content")
        return "\n".join(f"{message['role']}: {message['content']}" for message in messages)

    def _reference(self, line_no: int, record: dict[str, Any]) -> str | None:
        if self.reference_field is None:
            return None
        if self.reference_field not in record:
            raise self._fail(line_no, "missing", self.reference_field)
        value = record[self.reference_field]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
