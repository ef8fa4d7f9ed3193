"""``fleet batch``: OpenAI Batch files in, OpenAI Batch output out, read back with the
official ``openai`` client's types; bad lines, Ctrl-C and resume, the ``openai`` engine
and the fleet behind ``FLEET_BROKER_URL``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from common.db import make_engine
from common.models import Item, Result, Slice
from common.results import ResultRow
from common.runconfig import RunConfig
from common.store import save_results
from producer.enqueue import create_run
from producer.openai_export import write_openai
from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import fleet, fleet_env, run_fleet
from tests.integration.test_interrupt_resume import heed_sigint, results_stored
from tests.media_files import write_png
from tests.unit.worker.engines.test_openai import FakeServer

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

#: The run's own --max-new-tokens: what a request without max_tokens gets.
RUN_TOKENS = 6

PROMPTS = ["The quick brown fox", "Once upon a time", "Hello, world"]


def request(custom_id: str, url: str, text: str, **body: Any) -> dict[str, Any]:
    field = {"messages": [{"role": "user", "content": text}]} if url == CHAT else {"prompt": text}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {**field, **body}}


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text().splitlines()]


def stored(tmp_path: Path, run_id: str) -> dict[str, Result]:
    """The run's results by custom_id."""
    db = make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")
    with Session(db) as session:
        rows = session.exec(
            select(Item.custom_id, Result)
            .join(Result, Result.item_id == Item.id)  # type: ignore[arg-type]
            .where(Item.run_id == run_id)
        ).all()
    db.dispose()
    return dict(rows)


def run_id_of(answers: list[dict[str, Any]]) -> str:
    """The run id inside an output line's id (``batch_req_RUN-SEQ``)."""
    return str(answers[0]["id"]).removeprefix("batch_req_").rsplit("-", 1)[0]


def mixed_requests(url: str, plain: dict[str, str]) -> list[dict[str, Any]]:
    """Greedy requests on the run's settings, others with their own: max_tokens, a stop
    text taken from the plain answer, sampling with a seed."""
    stop = plain[PROMPTS[1]][3:6]
    return [
        *(request(f"greedy-{n}", url, text) for n, text in enumerate(PROMPTS)),
        request("short", url, PROMPTS[0], max_tokens=2),
        request("long", url, PROMPTS[0], max_tokens=11, temperature=0, model="demo"),
        request("stop", url, PROMPTS[1], stop=[stop, "never-said"]),
        request("sampled", url, PROMPTS[2], temperature=0.9, top_p=0.9, seed=5, max_tokens=4),
    ]


def test_chat_and_completion_files_round_trip_through_fleet_batch(
    tmp_path: Path, demo_model: Path
) -> None:
    env = fleet_env(tmp_path)
    plain_input = tmp_path / "plain.jsonl"
    plain_input.write_text(
        "".join(
            json.dumps({"id": f"c{n}", "messages": [{"role": "user", "content": text}]})
            + "\n"
            + json.dumps({"id": f"p{n}", "prompt": text})
            + "\n"
            for n, text in enumerate(PROMPTS)
        )
    )
    fleet(
        "run", str(plain_input), "--model", str(demo_model),
        "--max-new-tokens", str(RUN_TOKENS), "--output", str(tmp_path / "plain"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    plain = {
        record["id"]: record["answer"] for record in read(tmp_path / "plain" / "results.jsonl")
    }

    for url, kind, prefix in ((CHAT, ChatCompletion, "c"), (COMPLETIONS, Completion, "p")):
        answers_of_plain = {text: plain[f"{prefix}{n}"] for n, text in enumerate(PROMPTS)}
        lines = mixed_requests(url, answers_of_plain)
        name = "chat" if url == CHAT else "completions"
        source = write(tmp_path / f"{name}.jsonl", lines)
        out, errors = tmp_path / f"{name}-out.jsonl", tmp_path / f"{name}-errors.jsonl"
        fleet(
            "batch", "-i", str(source), "-o", str(out), "--errors", str(errors),
            "--model", str(demo_model), "--max-new-tokens", str(RUN_TOKENS),
            env=env, cwd=tmp_path,
        )  # fmt: skip
        answers = read(out)
        assert read(errors) == []
        assert [answer["custom_id"] for answer in answers] == [line["custom_id"] for line in lines]
        results = stored(tmp_path, run_id_of(answers))
        texts: dict[str, str] = {}
        for answer in answers:
            body = kind.model_validate(answer["response"]["body"])
            result = results[answer["custom_id"]]
            assert body.usage is not None
            assert (body.usage.prompt_tokens, body.usage.completion_tokens) == (
                result.tokens_in,
                result.tokens_out,
            )
            choice = body.choices[0]
            texts[answer["custom_id"]] = (
                choice.message.content or "" if isinstance(body, ChatCompletion) else choice.text
            )
            assert choice.finish_reason == result.finish_reason
        _check_answers(lines, answers, results, texts, answers_of_plain, str(demo_model.resolve()))


def _check_answers(
    lines: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    results: dict[str, Result],
    texts: dict[str, str],
    plain: dict[str, str],
    served: str,
) -> None:
    # Greedy requests on the run's settings answer as a plain run of the same prompts does,
    # batched together (one batch of three in a slice of seven).
    for n, text in enumerate(PROMPTS):
        assert texts[f"greedy-{n}"] == plain[text]
        assert results[f"greedy-{n}"].batch_size == len(PROMPTS)
    # Each request gets exactly its own length, in the same slice.
    assert {results[name].slice_id for name in results} == {results["short"].slice_id}
    for name, length in (("short", 2), ("long", 11), ("greedy-0", RUN_TOKENS)):
        assert (results[name].tokens_out, results[name].finish_reason) == (length, "length")
    assert plain[PROMPTS[0]].startswith(texts["short"])
    # A stop text ends the answer, and is left out of it.
    stop = lines[5]["body"]["stop"][0]
    assert texts["stop"] == plain[PROMPTS[1]][: plain[PROMPTS[1]].index(stop)]
    assert results["stop"].finish_reason == "stop"
    assert results["stop"].tokens_out < RUN_TOKENS
    assert results["sampled"].ok
    assert results["sampled"].tokens_out <= 4
    models = {answer["custom_id"]: answer["response"]["body"]["model"] for answer in answers}
    assert models.pop("long") == "demo"  # as the request named it
    assert set(models.values()) == {served}  # the run's model, as resolved


BAD = [
    {"method": "POST", "url": CHAT, "body": {"messages": [{"role": "user", "content": "x"}]}},
    request("dup", CHAT, "again"),
    request("emb", "/v1/embeddings", "x"),
    request("n2", CHAT, "two please", n=2),
    {"custom_id": "empty", "method": "POST", "url": CHAT, "body": {"max_tokens": 3}},
]


def test_bad_lines_are_refused_on_their_line_or_land_in_the_error_file(tmp_path: Path) -> None:
    env = fleet_env(tmp_path)
    lines = [request("dup", CHAT, "first"), *BAD, request("fine", COMPLETIONS, "last words")]
    source = write(tmp_path / "in.jsonl", lines)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    args = ["batch", "-i", str(source), "-o", str(out), "--errors", str(errors)]
    args += ["--engine", "echo", "--model", "echo"]
    refused = run_fleet(*args, env=env, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    for line_no, field in ((2, "custom_id"), (3, "custom_id"), (4, "url"), (5, "body.n")):
        assert f"in.jsonl:{line_no}: field '{field}'" in said
    assert "in.jsonl:6: field 'body.messages'" in said
    assert not out.exists()
    over_input = run_fleet(*args[:3], "-o", str(source), env=env, cwd=tmp_path)
    assert over_input.returncode == 2
    assert "is the input file" in " ".join(over_input.stderr.split())

    fleet(*args, "--skip-invalid", env=env, cwd=tmp_path)
    assert [answer["custom_id"] for answer in read(out)] == ["dup", "fine"]
    rejects = read(errors)
    assert [reject["custom_id"] for reject in rejects] == ["line-2", "line-3", "emb", "n2", "empty"]
    assert {reject["error"]["code"] for reject in rejects} == {"invalid_request"}
    assert all(reject["response"] is None for reject in rejects)
    assert "duplicate custom_id 'dup'" in rejects[1]["error"]["message"]

    # The same output from `fleet export`: every line in one file without --errors.
    again = tmp_path / "again.jsonl"
    fleet("export", "latest", "--format", "openai", "-o", str(again), env=env, cwd=tmp_path)
    assert [line["custom_id"] for line in read(again)] == [
        "dup", "line-2", "line-3", "emb", "n2", "empty", "fine",
    ]  # fmt: skip
    streamed = fleet("export", "latest", "--format", "openai", "-o", "-", env=env, cwd=tmp_path)
    assert streamed.splitlines() == again.read_text().splitlines()
    misused = run_fleet("export", "latest", "--errors", str(errors), env=env, cwd=tmp_path)
    assert misused.returncode == 2
    assert "--errors is for --format openai" in misused.stderr


ITEMS = 24


def test_ctrl_c_then_resume_writes_every_request_once(tmp_path: Path) -> None:
    env = fleet_env(tmp_path)
    lines = [request(f"r{n}", COMPLETIONS, f"item {n}", max_tokens=2) for n in range(ITEMS)]
    source = write(tmp_path / "in.jsonl", lines)
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    db_path = tmp_path / ".fleet" / "fleet.db"
    running = subprocess.Popen(
        [sys.executable, "-m", "producer", "batch", "-i", str(source), "-o", str(out),
         "--errors", str(errors), "--engine", "echo", "--model", "delay=0.3",
         "--slice-size", "3", "--batch-size", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=heed_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while results_stored(db_path) < 4:
        assert running.poll() is None, running.communicate()[0]
        assert time.monotonic() < deadline, "no progress before the interrupt"
        time.sleep(0.2)
    running.send_signal(signal.SIGINT)
    output, _ = running.communicate(timeout=120)
    assert running.returncode == 130, output.decode()
    assert 0 < results_stored(db_path) < ITEMS
    assert not out.exists()
    assert "fleet resume" in output.decode()

    fleet("resume", "latest", env=env, cwd=tmp_path)
    answers = read(out)
    assert [answer["custom_id"] for answer in answers] == [f"r{n}" for n in range(ITEMS)]
    texts = [Completion.model_validate(a["response"]["body"]).choices[0].text for a in answers]
    assert texts == [f"item {n}" for n in range(ITEMS)]  # echo: the prompt's last 2 words
    assert read(errors) == []


@pytest.fixture
def server() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_openai_engine_sends_each_request_its_own_settings(
    tmp_path: Path, server: FakeServer
) -> None:
    host, port = server.server_address[:2]
    env = fleet_env(tmp_path, openai_base_url=f"http://{host!s}:{port}/v1")
    lines = [
        request("a", CHAT, "first", max_completion_tokens=3, temperature=0.5, top_p=0.5, seed=1),
        request("b", COMPLETIONS, "LONG second", max_tokens=7, stop=["x"]),
        request("c", CHAT, "third", response_format={"type": "json_object"}),
    ]
    source = write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    fleet(
        "batch", "-i", str(source), "-o", str(out), "--engine", "openai", "--model", "served",
        "--max-new-tokens", "5",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    sent = {
        (body["messages"][-1]["content"] if "messages" in body else body["prompt"]): body
        for body in server.bodies
    }
    first, second = sent["first"], sent["LONG second"]
    assert (first["max_tokens"], first["temperature"], first["top_p"], first["seed"]) == (
        3, 0.5, 0.5, 1,
    )  # fmt: skip
    assert "stop" not in first
    assert (second["max_tokens"], second["stop"]) == (7, ["x"])
    (third,) = [body for prompt, body in sent.items() if prompt.startswith("third")]
    assert third["max_tokens"] == 5
    assert third["response_format"]["json_schema"]["schema"] == {"type": "object"}
    answers = {answer["custom_id"]: answer for answer in read(out)}
    assert answers["b"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    assert answers["a"]["response"]["body"]["choices"][0]["message"]["content"] == "echo:first"
    # The server echoes the prompt: its JSON is the schema's, which the export gives alone.
    content = answers["c"]["response"]["body"]["choices"][0]["message"]["content"]
    assert json.loads(content) == {"type": "object"}


def test_fleet_batch_uses_the_fleet_behind_the_broker_url(
    tmp_path: Path, redis_url: str, start_workers: WorkerStarter
) -> None:
    database = f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}"
    (tmp_path / ".fleet").mkdir()
    start_workers(1, broker_url=redis_url, database_url=database)
    env = fleet_env(tmp_path, broker_url=redis_url, database_url=database)
    lines = [request(f"r{n}", CHAT, f"say {n}", max_tokens=1) for n in range(5)]
    source = write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    said = fleet(
        "batch", "-i", str(source), "-o", str(out), "--engine", "echo", "--model", "echo",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert "local worker" not in said
    answers = read(out)
    assert [answer["custom_id"] for answer in answers] == [f"r{n}" for n in range(5)]
    contents = [ChatCompletion.model_validate(a["response"]["body"]) for a in answers]
    assert [body.choices[0].message.content for body in contents] == [
        "assistant:" for _ in range(5)
    ]


def test_requests_and_their_settings_are_stored_alike_on_sqlite_and_postgresql(
    tmp_path: Path, db: Engine
) -> None:
    lines = [
        request("a", CHAT, "first", max_tokens=3, stop=["\n"], seed=2),
        request("b", COMPLETIONS, "second"),
        request("b", COMPLETIONS, "a duplicate"),
    ]
    source = write(tmp_path / "in.jsonl", lines)
    config = RunConfig(engine="echo", models=["echo"])
    enqueued = create_run(db, input_path=source, config=config, queue="q", skip_invalid=True)
    with Session(db) as session:
        items = session.exec(
            select(Item).where(Item.run_id == enqueued.run_id).order_by(col(Item.seq))
        ).all()
        slice_id = session.exec(select(Slice.id).where(Slice.run_id == enqueued.run_id)).first()
        save_results(
            session,
            rows=[
                ResultRow(
                    run_id=enqueued.run_id, item_id=items[0].id or 0, lane_index=0,
                    slice_id=slice_id, ok=True, answer="x", tokens_out=1, finish_reason="stop",
                ),
            ],
        )  # fmt: skip
        stored_items = [(item.custom_id, item.params) for item in items]
        session.commit()
    assert stored_items == [
        ("a", {"max_new_tokens": 3, "seed": 2, "stop": ["\n"]}),
        ("b", None),
        ("line-3", None),
    ]
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    write_openai(db, run_ref=enqueued.run_id, output=out, errors=errors)
    (answer,) = read(out)
    assert ChatCompletion.model_validate(answer["response"]["body"]).choices[0].finish_reason == (
        "stop"
    )
    assert [line["custom_id"] for line in read(errors)] == ["b", "line-3"]


def test_image_requests_answer_as_a_plain_run_of_the_same_messages(
    tmp_path: Path, demo_vision_model: Path
) -> None:
    env = fleet_env(tmp_path)
    write_png(tmp_path / "red.png", colour=(200, 30, 30), side=16)
    write_png(tmp_path / "blue.png", colour=(30, 30, 200), side=24)
    conversations = {
        f"v{n}": [{"role": "user", "content": [
            {"type": "text", "text": "What colour is this?"},
            {"type": "image_url", "image_url": {"url": name}},
        ]}]
        for n, name in enumerate(["red.png", "blue.png"])
    }  # fmt: skip
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        "".join(
            json.dumps({"id": key, "messages": value}) + "\n"
            for key, value in conversations.items()
        )
    )
    fleet("run", str(plain), "--model", str(demo_vision_model), "--max-new-tokens", "5",
          "--output", str(tmp_path / "plain"), env=env, cwd=tmp_path)  # fmt: skip
    answers = {r["id"]: r["answer"] for r in read(tmp_path / "plain" / "results.jsonl")}
    lines = [request(key, CHAT, "", messages=value) for key, value in conversations.items()]
    lines.append(request("short", CHAT, "", messages=conversations["v0"], max_tokens=2))
    source = write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    fleet("batch", "-i", str(source), "-o", str(out), "--model", str(demo_vision_model),
          "--max-new-tokens", "5", env=env, cwd=tmp_path)  # fmt: skip
    bodies = {
        a["custom_id"]: ChatCompletion.model_validate(a["response"]["body"]) for a in read(out)
    }
    for key in conversations:
        assert bodies[key].choices[0].message.content == answers[key]
    short = bodies["short"]
    assert short.usage is not None
    assert short.usage.completion_tokens <= 2
    assert answers["v0"].startswith(short.choices[0].message.content or "")
