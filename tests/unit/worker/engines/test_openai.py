"""The ``openai`` engine against a small OpenAI-compatible server on 127.0.0.1.

The server is real HTTP (``http.server`` on an ephemeral loopback port); its answer
depends on the prompt: ``RATE`` gets one 429 first, ``SLOW`` sleeps past the client's
timeout, ``FAIL`` always gets 500, ``BAD`` gets 400, ``LONG`` is answered as cut at its
length (``finish_reason: length``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from common.errors import ConfigError
from common.settings import Settings
from worker.engines import Completion, GenerationParams, PartialFailure
from worker.engines.openai import OpenAIEngine
from worker.inference import generate_isolated

PARAMS = GenerationParams(max_new_tokens=5, seed=7)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.headers_seen: list[str | None] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        with self.server.lock:
            self.server.calls[prompt] += 1
            calls = self.server.calls[prompt]
            self.server.bodies.append(body)
            self.server.headers_seen.append(self.headers.get("Authorization"))
        if "SLOW" in prompt:
            time.sleep(1.0)
        if "FAIL" in prompt:
            return self._send(500, {"error": "internal"})
        if "BAD" in prompt:
            return self._send(400, {"error": "bad request"})
        if "RATE" in prompt and calls == 1:
            return self._send(429, {"error": "slow down"})
        text = f"echo:{prompt}"
        choice: dict[str, Any] = (
            {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        )
        if "LONG" in prompt:
            choice["finish_reason"] = "length"
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 2}
        return self._send(200, {"choices": [choice], "usage": usage})

    def _send(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def engine_for(server: FakeServer, **options: Any) -> OpenAIEngine:
    host, port = server.server_address[:2]
    settings: dict[str, Any] = {
        "base_url": f"http://{host!s}:{port}/v1",
        "api_key": "sk-test",
        "concurrency": 4,
        "timeout_s": 0.3,
        "max_attempts": 3,
        "backoff_s": 0.01,
    }
    return OpenAIEngine("served-model", **(settings | options))


def test_success_in_order_with_key_and_parameters(server: FakeServer) -> None:
    engine = engine_for(server)
    prompts = [f"prompt number {index}" for index in range(6)]
    completions = engine.generate(prompts, PARAMS)
    assert [c.text for c in completions] == [f"echo:{p}" for p in prompts]
    assert completions[0] == Completion("echo:prompt number 0", 3, 2)
    assert set(server.headers_seen) == {"Bearer sk-test"}
    assert {body["model"] for body in server.bodies} == {"served-model"}
    assert {(b["max_tokens"], b["seed"]) for b in server.bodies} == {(5, 7)}


def test_rate_limit_then_success(server: FakeServer) -> None:
    engine = engine_for(server)
    (completion,) = engine.generate(["RATE me"], PARAMS)
    assert completion.text == "echo:RATE me"
    assert server.calls["RATE me"] == 2


def test_timeout_classified_after_retries(server: FakeServer) -> None:
    engine = engine_for(server, max_attempts=2)
    with pytest.raises(PartialFailure) as failure:
        engine.generate(["fine", "SLOW one"], PARAMS)
    ok, slow = failure.value.results
    assert isinstance(ok, Completion)
    assert not isinstance(slow, Completion)
    assert slow.error_kind == "timeout"
    assert "gave up after 2 tries" in slow.message
    assert server.calls["SLOW one"] == 2


def test_server_errors_classified_and_only_5xx_retried(server: FakeServer) -> None:
    engine = engine_for(server)
    outcomes = generate_isolated(engine, ["FAIL a", "ok b", "BAD c"], PARAMS)
    assert [o.error_kind for o in outcomes] == ["api", None, "api"]
    assert outcomes[1].completion is not None
    assert outcomes[0].error_message is not None
    assert "HTTP 500" in outcomes[0].error_message
    assert server.calls["FAIL a"] == 3
    assert server.calls["BAD c"] == 1  # a 4xx other than 429 will not get better


def test_rate_limit_classified_when_it_persists(server: FakeServer) -> None:
    engine = engine_for(server, max_attempts=1)
    outcomes = generate_isolated(engine, ["RATE x"], PARAMS)
    assert outcomes[0].error_kind == "rate_limit"


def test_chat_goes_to_chat_completions(server: FakeServer) -> None:
    engine = engine_for(server)
    prompt = engine.render_chat(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    )
    (completion,) = engine.generate([prompt], PARAMS)
    assert completion.text == "echo:Q"
    assert server.bodies[0]["messages"][0] == {"role": "system", "content": "S"}


def test_connection_refused_is_api_error() -> None:
    engine = OpenAIEngine(
        "m", base_url="http://127.0.0.1:9/v1", timeout_s=0.3, max_attempts=2, backoff_s=0.01
    )
    outcomes = generate_isolated(engine, ["x"], PARAMS)
    assert outcomes[0].error_kind == "api"


def test_settings_needed_and_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="FLEET_OPENAI_BASE_URL"):
        OpenAIEngine.from_settings("m", Settings())
    monkeypatch.setenv("FLEET_OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("FLEET_OPENAI_API_KEY", "sk-secret")
    settings = Settings()
    assert "sk-secret" not in repr(settings)
    engine = OpenAIEngine.from_settings("m", settings)
    assert engine.client.headers["Authorization"] == "Bearer sk-secret"


def test_each_request_carries_its_own_settings(server: FakeServer) -> None:
    engine = engine_for(server)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    own = GenerationParams(
        max_new_tokens=9, temperature=0.5, top_p=0.8, seed=11, stop=("END", "\n"),
        output_schema=schema,
    )  # fmt: skip
    (completion,) = engine.generate(["LONG answer"], own)
    (plain,) = engine.generate(["short"], GenerationParams(max_new_tokens=3))
    first, second = server.bodies
    assert {key: first[key] for key in ("max_tokens", "temperature", "top_p", "seed", "stop")} == {
        "max_tokens": 9, "temperature": 0.5, "top_p": 0.8, "seed": 11, "stop": ["END", "\n"],
    }  # fmt: skip
    assert first["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema},
    }
    assert completion.finish_reason == "length"
    assert second["max_tokens"] == 3
    assert not {"seed", "stop", "response_format"} & set(second)
    assert plain.finish_reason is None
