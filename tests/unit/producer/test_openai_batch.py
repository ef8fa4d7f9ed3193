"""Reading OpenAI Batch files: requests with their own settings, bad lines refused on
their line (``producer.openai_batch``), stored through ``create_run`` on SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from common.errors import ConfigError, InvalidInputFile
from common.models import Item, Result
from common.request_settings import RequestSettings
from common.runconfig import RunConfig
from producer.enqueue import create_run
from producer.openai_batch import OpenAIBatchReader, reads_openai_batch

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
CONFIG = RunConfig(engine="echo", models=["echo"], input_format="openai")


def text_part(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def request(custom_id: Any, url: str = CHAT, **body: Any) -> dict[str, Any]:
    if "messages" not in body and "prompt" not in body:
        body = {"messages": [{"role": "user", "content": f"hi {custom_id}"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def read(path: Path, models: list[str] | None = None) -> list[Any]:
    return list(OpenAIBatchReader(path, models=models or ["echo"], max_line_bytes=1 << 20))


def test_requests_become_records_with_their_own_settings(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    lines = [
        request(
            "c1",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [text_part("Hi "), text_part("you")]},
            ],
            max_completion_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=3,
            stop="\n",
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
            n=1,
            user="someone",
        ),
        request("p1", COMPLETIONS, prompt="Once upon", max_tokens=4, stop=["x", "y"]),
        request("p2", COMPLETIONS, prompt=["Only one"], response_format={"type": "json_object"}),
        request("c2", model="echo"),
    ]  # fmt: skip
    records = read(write(tmp_path / "in.jsonl", lines))
    chat, first, second, plain = records
    assert chat.custom_id == "c1"
    assert chat.payload == {
        "id": "c1",
        "url": CHAT,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi you"},
        ],
    }
    assert RequestSettings.of(chat.params) == RequestSettings(
        max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=("\n",), output_schema=schema
    )
    assert first.payload == {"id": "p1", "url": COMPLETIONS, "prompt": "Once upon"}
    assert first.params == {"max_new_tokens": 4, "stop": ["x", "y"]}
    assert second.prompt == "Only one"
    assert second.params == {"output_schema": {"type": "object"}}
    assert plain.params is None
    assert plain.payload["model"] == "echo"


def test_settings_apply_over_the_run_and_key_equal_settings_alike() -> None:
    config = RunConfig(engine="echo", models=["echo"])
    own = RequestSettings(max_new_tokens=3, stop=("a",), output_schema={"type": "object"})
    applied = own.apply(config)
    assert applied.generation.max_new_tokens == 3
    assert applied.generation.stop == ("a",)
    assert applied.generation.temperature == config.generation.temperature
    assert applied.output_schema == {"type": "object"}
    assert RequestSettings.of(own.stored()) == own
    assert (
        RequestSettings(stop=("a",), max_new_tokens=3, output_schema={"type": "object"}).key()
        == own.key()
    )
    assert RequestSettings(max_new_tokens=4).key() != RequestSettings(max_new_tokens=3).key()
    assert RequestSettings().stored() is None
    assert RequestSettings.of(None) is None


NO_ID = {"method": "POST", "url": CHAT, "body": {"messages": [{"role": "user", "content": "x"}]}}
NO_INPUT = {"custom_id": "nm", "method": "POST", "url": CHAT, "body": {"max_tokens": 3}}
BAD_SCHEMA = {"type": "json_schema", "json_schema": {"schema": {"type": 3}}}
IMAGE = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "gone.png"}}]}]

BAD_LINES: list[tuple[Any, str, str]] = [
    (NO_ID, "custom_id", "missing"),
    (request("dup"), "custom_id", "duplicate custom_id 'dup' (first on line 1)"),
    (request("e1", "/v1/embeddings", input="x"), "url", "'/v1/embeddings' is not supported"),
    (request("n2", n=2), "body.n", "only 1 is supported"),
    (request("nb", COMPLETIONS, max_tokens=3), "body.prompt", "a /v1/completions request needs it"),
    (NO_INPUT, "body.messages", "missing"),
    ({**request("get"), "method": "GET"}, "method", "must be POST"),
    (request("m1", model="gpt-4o"), "body.model", "'gpt-4o' is not a model of this run"),
    (request("lb", logit_bias={"1": 2}), "body.logit_bias", "not supported"),
    (request("st", stop=["a", "b", "c", "d", "e"]), "body.stop", "list of 1 to 4"),
    (request("tp", temperature=3), "body.temperature", "from 0 to 2"),
    (request("mt", max_tokens=0), "body.max_tokens", "at least 1"),
    (request("rf", response_format=BAD_SCHEMA), "body.response_format.json_schema.schema",
     "not a valid JSON Schema"),
    (request("im", messages=IMAGE), "body.messages[0].content[0].image_url.url", "no such file"),
    (request(7), "custom_id", "must be a non-empty string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "field", "why"), BAD_LINES, ids=[b[1] + ":" + b[2][:20] for b in BAD_LINES]
)
def test_a_bad_line_is_refused_with_its_line_and_field(
    tmp_path: Path, line: dict[str, Any], field: str, why: str
) -> None:
    path = write(tmp_path / "in.jsonl", [request("dup"), line])
    first, second = read(path)
    assert first.custom_id == "dup"
    error = second.error
    assert (error.line, error.field) == (2, field)
    assert str(error).startswith(f"{path}:2: field '{field}': ")
    assert why in str(error)


def test_the_format_is_told_by_the_first_line(tmp_path: Path) -> None:
    batch = write(tmp_path / "batch.jsonl", [request("a")])
    own = write(tmp_path / "own.jsonl", [{"id": "a", "prompt": "x"}])
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    assert reads_openai_batch(batch, "auto")
    assert not reads_openai_batch(own, "auto")
    assert not reads_openai_batch(broken, "auto")
    assert reads_openai_batch(own, "openai")
    assert not reads_openai_batch(batch, "fleet")


def test_enqueue_stores_each_request_with_its_settings(tmp_path: Path, db: Engine) -> None:
    path = write(
        tmp_path / "in.jsonl",
        [request("a", max_tokens=2), request("b", COMPLETIONS, prompt="go", temperature=0.2)],
    )
    enqueued = create_run(
        db, input_path=path, config=CONFIG.model_copy(update={"input_format": "auto"}), queue="q"
    )
    with Session(db) as session:
        items = session.exec(
            select(Item).where(Item.run_id == enqueued.run_id).order_by(col(Item.seq))
        ).all()
    assert [(item.custom_id, item.params) for item in items] == [
        ("a", {"max_new_tokens": 2}),
        ("b", {"temperature": 0.2}),
    ]
    assert items[1].prompt == "go"


def test_bad_lines_stop_the_run_with_nothing_stored_or_land_as_rejects(
    tmp_path: Path, db: Engine
) -> None:
    path = write(
        tmp_path / "in.jsonl",
        [
            request("ok1"),
            request("ok1"),
            request("e", "/v1/embeddings"),
            request("n", n=2),
            request("ok2"),
        ],
    )
    with pytest.raises(InvalidInputFile) as refused:
        create_run(db, input_path=path, config=CONFIG, queue="q")
    message = str(refused.value)
    for line, field in ((2, "custom_id"), (3, "url"), (4, "body.n")):
        assert f"{path}:{line}: field '{field}'" in message
    with Session(db) as session:
        assert session.exec(select(Item)).all() == []

    enqueued = create_run(db, input_path=path, config=CONFIG, queue="q", skip_invalid=True)
    assert (enqueued.items, enqueued.rejected) == (5, 3)
    with Session(db) as session:
        rows = session.exec(
            select(Item.custom_id, Result.error_kind)
            .join(Result, col(Result.item_id) == Item.id)
            .order_by(col(Item.seq))
        ).all()
    # A duplicate keeps no id of its own (it is taken); the others keep theirs.
    assert rows == [("line-2", "invalid_input"), ("e", "invalid_input"), ("n", "invalid_input")]


def test_a_template_or_reference_field_does_not_apply(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [request("a")])
    with pytest.raises(ConfigError, match="--template"):
        OpenAIBatchReader(path, models=["echo"], template="{x}", max_line_bytes=100)
    with pytest.raises(ConfigError, match="--reference-field"):
        OpenAIBatchReader(path, models=["echo"], reference_field="x", max_line_bytes=100)


def test_a_local_checkpoint_is_named_by_its_folder(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl",
        [request("a", model="demo"), request("b", model="/m/demo"), request("c", model="m")],
    )
    first, second, third = read(path, models=["/m/demo"])
    assert first.payload["model"] == "demo"
    assert second.payload["model"] == "/m/demo"
    assert third.error.field == "body.model"


def test_image_parts_are_checked_and_kept_as_parts(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(tmp_path / "red.png")
    content = [
        {"type": "text", "text": "What colour?"},
        {"type": "image_url", "image_url": {"url": "red.png"}},
    ]
    path = write(
        tmp_path / "in.jsonl", [request("v1", messages=[{"role": "user", "content": content}])]
    )
    (record,) = read(path)
    (message,) = record.payload["messages"]
    assert message["content"][0] == {"type": "text", "text": "What colour?"}
    assert message["content"][1]["image_url"]["url"] == (tmp_path / "red.png").as_uri()
    assert record.prompt == "user: What colour?<image>"  # the text kept for display
