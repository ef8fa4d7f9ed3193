"""``producer.inputs.RecordReader``: every record validated, every error located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.constants import CONTEXTS_TEMPLATE, DEFAULT_MAX_LINE_BYTES
from common.errors import ConfigError, InputError
from producer.inputs import (
    MAX_DEPTH,
    InputRecord,
    RecordReader,
    Rejected,
)

BOM = b"\xef\xbb\xbf"


def write(tmp_path: Path, content: bytes | str, name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def jsonl(*records: Any) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def read(path: Path, **options: Any) -> list[InputRecord | Rejected]:
    return list(RecordReader(path, **options))


def records(entries: list[InputRecord | Rejected]) -> list[InputRecord]:
    assert all(isinstance(entry, InputRecord) for entry in entries), entries
    return [entry for entry in entries if isinstance(entry, InputRecord)]


def single_error(entries: list[InputRecord | Rejected]) -> InputError:
    rejected = [entry for entry in entries if isinstance(entry, Rejected)]
    assert len(rejected) == 1, entries
    assert rejected[0].line_no == rejected[0].error.line
    return rejected[0].error


def assert_error(
    error: InputError, path: Path, line: int, field: str | None, *fragments: str
) -> None:
    assert error.path == str(path)
    assert error.line == line
    assert error.field == field
    for fragment in fragments:
        assert fragment in error.message, (fragment, error.message)
    where = f"{path}:{line}" + (f": field '{field}'" if field else "")
    assert str(error) == f"{where}: {error.message}"


# --- valid records ---------------------------------------------------------------------


def test_contexts_record_keeps_extra_fields_and_uses_contexts_template(tmp_path: Path) -> None:
    record = {
        "id": "q-1",
        "query": "What is returned?",
        "context": "Send a GET request.",
        "source": "docs",
        "meta": {"difficulty": 2, "tags": ["http"]},
    }
    path = write(tmp_path, jsonl(record))
    [entry] = records(read(path))
    assert entry.line_no == 1
    assert entry.custom_id == "q-1"
    assert entry.payload == record
    assert entry.prompt == CONTEXTS_TEMPLATE.format(
        context="Send a GET request.", query="What is returned?"
    )
    assert entry.prompt == "Context: Send a GET request.\nQuestion: What is returned?\nAnswer:"
    assert entry.reference is None


def test_contexts_record_with_non_string_context_is_json_encoded(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "a", "query": "q", "context": ["x", 1]}))
    [entry] = records(read(path))
    assert entry.prompt == CONTEXTS_TEMPLATE.format(context='["x", 1]', query="q")


def test_plain_prompt_record(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "p1", "prompt": "Hello there"}))
    [entry] = records(read(path))
    assert (entry.custom_id, entry.prompt, entry.payload) == (
        "p1",
        "Hello there",
        {"id": "p1", "prompt": "Hello there"},
    )


def test_explicit_prompt_wins_over_context_and_query(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "a", "prompt": "P", "context": "c", "query": "q"}))
    assert records(read(path))[0].prompt == "P"


@pytest.mark.parametrize(("raw_id", "expected"), [(7, "7"), (0, "0"), (-3, "-3"), ("07", "07")])
def test_integer_ids_become_strings(tmp_path: Path, raw_id: Any, expected: str) -> None:
    path = write(tmp_path, jsonl({"id": raw_id, "prompt": "x"}))
    [entry] = records(read(path))
    assert entry.custom_id == expected
    assert entry.payload["id"] == raw_id  # the payload is kept as read


def test_template_builds_prompt_from_any_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        jsonl(
            {"id": 1, "title": "Numpy", "body": "How to use numpy.array?", "prompt": "ignored"},
            {"id": 2, "title": "Lists", "body": {"n": 3}},
        ),
    )
    entries = records(read(path, template="Title: {title}\nBody: {body}\n{{Answer}}:"))
    assert [entry.prompt for entry in entries] == [
        "Title: Numpy\nBody: How to use numpy.array?\n{Answer}:",
        'Title: Lists\nBody: {"n": 3}\n{Answer}:',
    ]


def test_bad_template_is_a_config_error_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        RecordReader(tmp_path / "never-read.jsonl", template="{record.attr}")


@pytest.mark.parametrize(
    ("value", "expected"), [("Paris", "Paris"), (42, "42"), (["a", "b"], '["a", "b"]')]
)
def test_reference_field_is_read(tmp_path: Path, value: Any, expected: str) -> None:
    path = write(tmp_path, jsonl({"id": "a", "prompt": "x", "answer": value}))
    [entry] = records(read(path, reference_field="answer"))
    assert entry.reference == expected


def test_missing_reference_field_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, jsonl({"id": "a", "prompt": "x", "answer": "y"}, {"id": "b", "prompt": "x"})
    )
    error = single_error(read(path, reference_field="answer"))
    assert_error(error, path, 2, "answer", "missing")


def test_crlf_line_endings_and_missing_final_newline_are_fine(tmp_path: Path) -> None:
    content = '{"id": "a", "prompt": "x"}\r\n{"id": "b", "prompt": "y"}'
    entries = records(read(write(tmp_path, content)))
    assert [(entry.custom_id, entry.prompt) for entry in entries] == [("a", "x"), ("b", "y")]


def test_utf8_bom_on_first_line_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path, BOM + jsonl({"id": "a", "prompt": "déjà"}, {"id": "b", "prompt": "x"}).encode()
    )
    entries = records(read(path))
    assert [(entry.line_no, entry.custom_id, entry.prompt) for entry in entries] == [
        (1, "a", "déjà"),
        (2, "b", "x"),
    ]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    content = (
        "\n" + jsonl({"id": "a", "prompt": "x"}) + "   \n\t\n" + jsonl({"id": "b", "prompt": "y"})
    )
    content += "\n" + "{bad json\n"
    entries = read(write(tmp_path, content))
    assert [(type(entry).__name__, entry.line_no) for entry in entries] == [
        ("InputRecord", 2),
        ("InputRecord", 5),
        ("Rejected", 7),
    ]


def test_entries_come_in_file_order_and_errors_do_not_stop_the_reader(tmp_path: Path) -> None:
    content = jsonl({"id": "a", "prompt": "x"}, [1, 2], {"id": "b", "prompt": "y"}, {"prompt": "z"})
    entries = read(write(tmp_path, content))
    assert [(type(entry).__name__, entry.line_no) for entry in entries] == [
        ("InputRecord", 1),
        ("Rejected", 2),
        ("InputRecord", 3),
        ("Rejected", 4),
    ]
    rejected = entries[1]
    assert isinstance(rejected, Rejected)
    assert rejected.raw == "[1, 2]\n"


def test_ten_megabyte_record_is_accepted(tmp_path: Path) -> None:
    size = 10 * 1024 * 1024
    path = write(
        tmp_path, jsonl({"id": "big", "prompt": "x" * size}, {"id": "next", "prompt": "y"})
    )
    entries = records(read(path))
    assert [entry.custom_id for entry in entries] == ["big", "next"]
    assert len(entries[0].prompt) == size


def test_ten_megabyte_contexts_record_builds_full_prompt(tmp_path: Path) -> None:
    size = 10 * 1024 * 1024
    path = write(tmp_path, jsonl({"id": "big", "query": "q", "context": "é" * size}))
    # 10 M characters written as \u00e9: a line of 60 MiB, over the default limit: raise it.
    [entry] = records(read(path, max_line_bytes=64 * 1024 * 1024))
    assert len(entry.prompt) == len(CONTEXTS_TEMPLATE.format(context="", query="q")) + size


# --- rejected records ------------------------------------------------------------------


def test_malformed_json_is_rejected_with_column(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "a", "prompt": "x"}) + '{"id": "b", "prompt": x}\n')
    error = single_error(read(path))
    assert_error(error, path, 2, None, "not valid JSON", "column")
    assert "truncated" not in error.message


def test_truncated_last_line_says_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "a", "prompt": "x"}) + '{"id": "b", "pro')
    error = single_error(read(path))
    assert_error(error, path, 2, None, "not valid JSON", "truncated")


def test_last_line_truncated_inside_a_utf8_character_says_truncated(tmp_path: Path) -> None:
    cut_line = '{"id": "b", "prompt": "déjà'.encode()[:-1]  # half of the 'à'
    path = write(tmp_path, jsonl({"id": "a", "prompt": "x"}).encode() + cut_line)
    error = single_error(read(path))
    assert error.line == 2
    assert "truncated" in error.message


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[1, 2, 3]", "list"),
        ("42", "int"),
        ("1.5", "float"),
        ('"text"', "str"),
        ("null", "NoneType"),
        ("true", "bool"),
    ],
)
def test_non_object_line_is_rejected(tmp_path: Path, line: str, kind: str) -> None:
    path = write(tmp_path, line + "\n")
    error = single_error(read(path))
    assert_error(error, path, 1, None, "expected a JSON object", f"got {kind}")


def test_missing_id_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"prompt": "x"}))
    assert_error(single_error(read(path)), path, 1, "id", "missing")


@pytest.mark.parametrize("raw_id", ["", True, False, None, 1.5, ["a"], {"k": 1}], ids=repr)
def test_bad_id_is_rejected(tmp_path: Path, raw_id: Any) -> None:
    path = write(tmp_path, jsonl({"id": "ok", "prompt": "x"}, {"id": raw_id, "prompt": "x"}))
    error = single_error(read(path))
    assert_error(error, path, 2, "id", "non-empty string or integer", repr(raw_id))


def test_duplicate_id_names_the_first_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        jsonl({"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}),
    )
    entries = read(path)
    assert_error(single_error(entries), path, 3, "id", "duplicate id 'a'", "first on line 1")


def test_integer_and_string_spelling_of_an_id_are_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "\n" + jsonl({"id": 5, "prompt": "x"}, {"id": "5", "prompt": "y"}))
    assert_error(single_error(read(path)), path, 3, "id", "duplicate id '5'", "first on line 2")


def test_non_utf8_bytes_are_rejected(tmp_path: Path) -> None:
    bad_line = b'{"id": "b", "prompt": "\xff"}\n'
    path = write(tmp_path, jsonl({"id": "a", "prompt": "x"}).encode() + bad_line)
    entries = read(path)
    error = single_error(entries)
    offset = bad_line.index(b"\xff")  # 0-based byte offset within the line
    assert_error(error, path, 2, None, "not valid UTF-8", f"byte {offset}:", "\\xff")
    rejected = entries[1]
    assert isinstance(rejected, Rejected)
    assert "\ufffd" in rejected.raw  # the raw line is kept, with a replacement character


def test_bom_after_first_line_is_not_silently_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path, jsonl({"id": "a", "prompt": "x"}).encode() + BOM + b'{"id": "b", "prompt": "y"}\n'
    )
    assert_error(single_error(read(path)), path, 2, None, "not valid JSON")


@pytest.mark.parametrize("prompt", [5, None, ["x"], {"text": "x"}, True], ids=repr)
def test_prompt_of_wrong_type_is_rejected(tmp_path: Path, prompt: Any) -> None:
    path = write(tmp_path, jsonl({"id": "a", "prompt": prompt}))
    assert_error(single_error(read(path)), path, 1, "prompt", "must be a string")


@pytest.mark.parametrize(
    "record",
    [{"id": "a"}, {"id": "a", "context": "c"}, {"id": "a", "query": "q"}, {"id": "a", "text": "t"}],
    ids=["nothing", "context-only", "query-only", "other-field"],
)
def test_no_prompt_and_no_context_query_and_no_template_is_rejected(
    tmp_path: Path, record: dict[str, Any]
) -> None:
    path = write(tmp_path, jsonl(record))
    assert_error(
        single_error(read(path)), path, 1, "prompt", "missing", "context", "query", "template"
    )


def test_template_field_missing_from_record_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        jsonl(
            {"id": "a", "title": "T", "body": "B"}, {"id": "b", "title": "T", "prompt": "unused"}
        ),
    )
    error = single_error(read(path, template="{title}: {body}"))
    assert_error(error, path, 2, "body", "template", "missing")


def test_rejected_raw_text_is_capped(tmp_path: Path) -> None:
    path = write(tmp_path, '{"id": "a", "prompt": ' + "x" * 10_000 + "}\n")
    [entry] = read(path)
    assert isinstance(entry, Rejected)
    assert len(entry.raw) == 2000


@pytest.mark.parametrize(
    ("messages", "field", "message"),
    [
        ([], "messages", "non-empty list"),
        ("hello", "messages", "non-empty list"),
        (["hi"], "messages[0]", "role and content"),
        ([{"role": "robot", "content": "x"}], "messages[0].role", "one of system, user"),
        (
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": 3}],
            "messages[1].content",
            "must be a string",
        ),
    ],
)
def test_chat_messages_validated(
    tmp_path: Path, messages: object, field: str, message: str
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"id": 1, "messages": messages}) + "\n")
    (entry,) = list(RecordReader(path))
    assert isinstance(entry, Rejected)
    assert (entry.line_no, entry.error.field) == (1, field)
    assert message in str(entry.error)


def test_chat_messages_accepted(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    path.write_text(json.dumps({"id": "a", "messages": messages}) + "\n")
    (entry,) = list(RecordReader(path))
    assert isinstance(entry, InputRecord)
    assert entry.payload["messages"] == messages
    assert entry.prompt == "system: Be kind.\nuser: Hi"


# --- values no database stores alike: refused at the reader, the same everywhere -------

NESTED_TOO_DEEP = (
    '{"id": "d", "prompt": "p", "meta": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}\n"
)
NESTED_TOO_DEEP_FOR_PYTHON = '{"id": "d", "prompt": "p", "meta": ' + "[" * 100_000 + "\n"


@pytest.mark.parametrize(
    ("line", "field", "fragments"),
    [
        (NESTED_TOO_DEEP, "meta" + "[0]" * (MAX_DEPTH - 1), ("nested deeper than",)),
        (NESTED_TOO_DEEP_FOR_PYTHON, None, ("nested deeper than",)),
        ('{"id": "s", "prompt": "a \\ud800 b"}\n', "prompt", ("lone surrogate", "\\ud800")),
        ('{"id": "s", "prompt": "p", "x": {"\\udfff": 1}}\n', "x.\\udfff", ("its name",)),
        ('{"id": "n", "prompt": "a\\u0000b"}\n', "prompt", ("NUL",)),
        ('{"id": "n", "prompt": "p", "tags": ["ok", "\\u0000"]}\n', "tags[1]", ("NUL",)),
        ('{"id": "f", "prompt": "p", "score": NaN}\n', "score", ("nan", "not a JSON number")),
        ('{"id": "f", "prompt": "p", "w": [1, Infinity]}\n', "w[1]", ("inf",)),
        ('{"id": "f", "prompt": "p", "w": -Infinity}\n', "w", ("-inf",)),
        ('{"id": "f", "prompt": "p", "w": 1e999}\n', "w", ("inf",)),
        ('{"id": "i", "prompt": "p", "n": ' + "9" * 5000 + "}\n", None, ("not valid JSON",)),
        ('{"id": "e", "prompt": ""}\n', "prompt", ("empty",)),
        ('{"id": "e", "prompt": " \\n\\t "}\n', "prompt", ("only whitespace",)),
        ('{"id": "e", "messages": [{"role": "user", "content": "  "}]}\n', "messages", ()),
    ],
    ids=[
        "nested too deep",
        "nested too deep for the parser",
        "lone surrogate",
        "lone surrogate in a key",
        "NUL",
        "NUL in a list",
        "NaN",
        "Infinity in a list",
        "-Infinity",
        "a number that overflows",
        "an integer of 5000 digits",
        "empty prompt",
        "whitespace prompt",
        "whitespace chat",
    ],
)
def test_values_no_database_stores_alike_are_refused_with_their_field(
    tmp_path: Path, line: str, field: str | None, fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, jsonl({"id": "ok", "prompt": "fine"}) + line)
    entries = read(path)
    assert isinstance(entries[0], InputRecord)
    error = single_error(entries)
    assert_error(error, path, 2, field, *fragments)
    shown = str(error) + entries[1].raw  # type: ignore[union-attr]
    shown.encode("utf-8")  # printable and storable: no lone surrogate
    assert "\x00" not in shown


def test_a_template_rendering_an_empty_prompt_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "a", "text": "  "}))
    error = single_error(read(path, template="{text}"))
    assert_error(error, path, 1, "prompt", "empty")


def test_a_line_over_the_limit_is_refused_unparsed_and_the_next_one_read(tmp_path: Path) -> None:
    huge = '{"id": "big", "prompt": "' + "x" * 5000 + '"}'
    path = write(tmp_path, huge + "\n" + jsonl({"id": "next", "prompt": "y"}))
    entries = read(path, max_line_bytes=1000)
    error = single_error(entries)
    assert_error(error, path, 1, None, f"line of {len(huge):,} bytes", "limit of 1,000",
                 "--max-line-bytes")  # fmt: skip
    assert len(entries[0].raw) <= 2000  # type: ignore[union-attr]
    assert [entry.custom_id for entry in entries[1:]] == ["next"]  # type: ignore[union-attr]


def test_a_line_at_the_limit_is_read(tmp_path: Path) -> None:
    line = json.dumps({"id": "a", "prompt": "x" * 100})
    path = write(tmp_path, line + "\n" + line.replace('"a"', '"b"'))  # the last without newline
    entries = records(read(path, max_line_bytes=len(line)))
    assert [entry.custom_id for entry in entries] == ["a", "b"]
    assert isinstance(read(path, max_line_bytes=len(line) - 1)[1], Rejected)


def test_thirty_megabyte_line_is_refused_by_default(tmp_path: Path) -> None:
    size = 30 * 1000 * 1000
    assert size > DEFAULT_MAX_LINE_BYTES
    path = write(tmp_path, jsonl({"id": "big", "prompt": "x" * size}, {"id": "n", "prompt": "y"}))
    entries = read(path)
    assert_error(single_error(entries), path, 1, None, "over the limit")
    assert isinstance(entries[1], InputRecord)
