"""The ``openai`` engine with images and video, against a small OpenAI-compatible
server on 127.0.0.1 (real HTTP) that decodes the image parts it gets, as vLLM would."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from common.runconfig import RunConfig
from tests.media_files import write_png, write_video
from worker.engines import GenerationParams
from worker.engines.openai import OpenAIEngine
from worker.inference import generate_isolated
from worker.prompting import prepare


class VisionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: VisionServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        from PIL import Image

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
        seen: list[str] = []
        for part in body["messages"][-1]["content"]:
            if part["type"] == "image_url":
                header, _, data = part["image_url"]["url"].partition(",")
                image = Image.open(io.BytesIO(base64.b64decode(data)))
                seen.append(f"{header} {image.width}x{image.height}")
            elif part["type"] == "video_url":
                seen.append(part["video_url"]["url"].partition(",")[0])
            else:
                seen.append(part["text"])
        answer = {"choices": [{"message": {"role": "assistant", "content": " | ".join(seen)}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[VisionServer]:
    server = VisionServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_image_and_video_parts_reach_the_server_as_data_urls(
    server: VisionServer, tmp_path: Path
) -> None:
    host, port = server.server_address[:2]
    engine = OpenAIEngine("vlm", base_url=f"http://{host!s}:{port}/v1", max_attempts=1)
    red = write_png(tmp_path / "red.png", side=20)
    blue = write_png(tmp_path / "blue.png", colour=(0, 0, 200), side=12)
    clip = write_video(tmp_path / "clip.mp4", frames=3)
    items = [
        ({"id": 1, "images": [str(red), str(blue)], "prompt": "Compare."}, "Compare."),
        ({"id": 2, "video": str(clip), "prompt": "What moves?"}, "What moves?"),
        ({"id": 3, "images": [str(tmp_path / "gone.png")], "prompt": "Lost."}, "Lost."),
    ]
    prepared = prepare(engine, items, RunConfig(engine="openai", models=["vlm"]))
    assert prepared.failed == {}
    outcomes = generate_isolated(engine, prepared.prompts, GenerationParams(max_new_tokens=4))

    assert outcomes[0].completion is not None
    assert outcomes[0].completion.text == (
        "data:image/png;base64 20x20 | data:image/png;base64 12x12 | Compare."
    )
    assert outcomes[1].completion is not None
    assert outcomes[1].completion.text == "data:video/mp4;base64 | What moves?"
    # The worker's own frame count is not sent: the server samples the video itself.
    video_body = next(b for b in server.bodies if "video_url" in json.dumps(b))
    assert video_body["messages"][0]["content"][0]["video_url"].keys() == {"url"}
    # A file gone since enqueue fails its item alone, before any request.
    assert outcomes[2].completion is None
    assert outcomes[2].error_kind == "invalid_input"
    assert "gone.png" in (outcomes[2].error_message or "")
    assert len(server.bodies) == 2
