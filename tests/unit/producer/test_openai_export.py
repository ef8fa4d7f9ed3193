"""OpenAI Batch output lines (``producer.openai_export``) read back with the official
``openai`` client's types, from a run stored on SQLite."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion
from sqlalchemy import Engine
from sqlmodel import Session, select

from common.errors import ConfigError
from common.models import Item, Slice
from common.results import ErrorKind, ResultRow
from common.runconfig import Generation, RunConfig
from common.store import save_results
from producer.enqueue import create_run
from producer.openai_export import ERROR_CODES, write_openai

CONFIG = RunConfig(
    engine="echo", models=["echo"], input_format="openai", generation=Generation(max_new_tokens=4)
)


def line(custom_id: str, url: str = "/v1/chat/completions", **body: Any) -> str:
    if url.endswith("chat/completions"):
        body = {"messages": [{"role": "user", "content": custom_id}], **body}
    else:
        body = {"prompt": custom_id, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


@pytest.fixture
def run(tmp_path: Path, db: Engine) -> str:
    """Seven requests: answered, answered at their length, structured, failed, not run."""
    path = tmp_path / "in.jsonl"
    lines = [
        line("chat-stop"),
        line("text-length", "/v1/completions", max_tokens=2),
        line("structured", response_format={"type": "json_object"}),
        line("too-long"),
        line("rate-limited", "/v1/completions"),
        line("pending"),
        line("chat-engine-said", max_tokens=9),
        "{broken",
    ]
    path.write_text("\n".join(lines) + "\n")
    enqueued = create_run(db, input_path=path, config=CONFIG, queue="q", skip_invalid=True)
    with Session(db) as session:
        items = {
            item.custom_id: item.id or 0
            for item in session.exec(select(Item).where(Item.run_id == enqueued.run_id))
        }
        slice_id = session.exec(select(Slice.id)).first()

        def row(custom_id: str, **columns: Any) -> ResultRow:
            return ResultRow(
                run_id=enqueued.run_id, item_id=items[custom_id], lane_index=0,
                slice_id=slice_id, **columns,
            )  # fmt: skip

        save_results(
            session,
            rows=[
                row("chat-stop", ok=True, answer="Hi.", tokens_in=5, tokens_out=2),
                row("text-length", ok=True, answer="a b", tokens_in=3, tokens_out=2),
                row("structured", ok=True, answer='Sure: {"a": 1}', parsed={"a": 1},
                    tokens_in=4, tokens_out=4),
                row("too-long", error_kind=ErrorKind.too_long, error_message="prompt too long"),
                row("rate-limited", error_kind=ErrorKind.rate_limit, error_message="HTTP 429"),
                row("chat-engine-said", ok=True, answer="x", tokens_in=1, tokens_out=9,
                    finish_reason="stop"),
            ],
        )  # fmt: skip
        session.commit()
    return enqueued.run_id


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text().splitlines()]


def test_answers_read_as_the_official_types_in_input_order(
    tmp_path: Path, db: Engine, run: str
) -> None:
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    written = write_openai(db, run_ref=run, output=out, errors=errors)
    assert (written.responses, written.errors) == (4, 4)
    answers = read(out)
    assert [answer["custom_id"] for answer in answers] == [
        "chat-stop", "text-length", "structured", "chat-engine-said",
    ]  # fmt: skip
    assert all(answer["error"] is None for answer in answers)
    assert all(answer["response"]["status_code"] == 200 for answer in answers)
    chat = ChatCompletion.model_validate(answers[0]["response"]["body"])
    assert chat.choices[0].message.content == "Hi."
    assert chat.choices[0].finish_reason == "stop"  # 2 of 4 tokens: it ended by itself
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (5, 2)
    assert chat.usage.total_tokens == 7
    assert chat.model == "echo"
    assert abs(chat.created - time.time()) < 600  # stored now, read back as UTC
    text = Completion.model_validate(answers[1]["response"]["body"])
    assert text.choices[0].text == "a b"
    assert text.choices[0].finish_reason == "length"  # all of its own max_tokens=2
    structured = ChatCompletion.model_validate(answers[2]["response"]["body"])
    assert json.loads(structured.choices[0].message.content or "") == {"a": 1}
    said = ChatCompletion.model_validate(answers[3]["response"]["body"])
    assert said.choices[0].finish_reason == "stop"  # as the engine said, not guessed
    assert len({answer["id"] for answer in answers}) == 4


def test_failures_carry_a_code_and_a_status(tmp_path: Path, db: Engine, run: str) -> None:
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    write_openai(db, run_ref=run, output=out, errors=errors)
    failed = {entry["custom_id"]: entry for entry in read(errors)}
    assert list(failed) == ["too-long", "rate-limited", "pending", "line-8"]
    too_long = failed["too-long"]
    assert too_long["error"] == {"code": "context_length_exceeded", "message": "prompt too long"}
    assert too_long["response"]["status_code"] == 400
    assert too_long["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert failed["rate-limited"]["response"]["status_code"] == 429
    assert failed["rate-limited"]["error"]["code"] == "rate_limit_exceeded"
    assert failed["pending"]["response"] is None
    assert failed["pending"]["error"]["code"] == "pending"
    rejected = failed["line-8"]
    assert rejected["response"] is None
    assert rejected["error"]["code"] == "invalid_request"
    assert ":8: not valid JSON" in rejected["error"]["message"]


def test_without_an_error_file_every_line_goes_to_the_output(
    tmp_path: Path, db: Engine, run: str
) -> None:
    out = tmp_path / "out.jsonl"
    write_openai(db, run_ref=run, output=out, errors=None)
    assert len(read(out)) == 8
    assert not list(tmp_path.glob("*.partial"))


def test_an_export_never_lands_on_another_kind_of_file(
    tmp_path: Path, db: Engine, run: str
) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text('{\n  "run": {}\n}\n')
    with pytest.raises(ConfigError, match="not overwriting"):
        write_openai(db, run_ref=run, output=summary, errors=None)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ConfigError, match="is the output file"):
        write_openai(db, run_ref=run, output=out, errors=tmp_path / "." / "out.jsonl")


def test_every_error_kind_has_a_code() -> None:
    assert set(ERROR_CODES) == set(ErrorKind)
    assert all(400 <= status < 600 and code for status, code in ERROR_CODES.values())
