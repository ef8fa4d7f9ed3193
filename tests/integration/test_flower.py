"""Flower against our app, started as compose starts it (``fleet flower``: Flower behind a
gate that asks for basic auth on every route): it sees our workers, tasks and metrics,
and answers nothing without the credentials, ``/metrics`` included."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import WorkerStarter
from tests.integration.helpers import enqueue_and_wait, fleet_env
from tests.integration.processes import descendants, tcp_listeners
from tests.integration.test_launcher import write_inputs

ROOT = Path(__file__).parents[2]
USER, PASSWORD = "fleet", "test-secret"
#: What a browser and Prometheus ask Flower for: pages, API, static files, metrics, probes.
ROUTES = [
    "/",
    "/workers",
    "/tasks",
    "/broker",
    "/tasks/datatable?draw=1&start=0&length=10&order%5B0%5D%5Bcolumn%5D=0&columns%5B0%5D%5Bdata%5D=name",
    "/api/workers",
    "/api/tasks",
    "/api/task/types",
    "/api/queues/length",
    "/metrics",
    "/healthcheck",
    "/static/css/flower.css",
    "/favicon.ico",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FlowerClient:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.pid = 0

    def get(self, path: str, *, auth: bool = True, password: str = PASSWORD) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path)
        if auth:
            token = base64.b64encode(f"{USER}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"{path}: {status} {body}"
        return json.loads(body)


def eventually(check: Any, what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, AssertionError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: last saw {last!r}")


def compose_flower_command(port: int) -> list[str]:
    """compose.yaml's Flower command, run from this environment, on ``port``."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = list(compose["services"]["flower"]["command"])
    assert command[:2] == ["fleet", "flower"]
    port_options = [arg for arg in command if arg.startswith("--port=")]
    assert port_options == ["--port=5555"]
    command[command.index("--port=5555")] = f"--port={port}"
    return [sys.executable, "-m", "producer", *command[1:]]


@pytest.fixture
def flower(tmp_path: Path, redis_url: str) -> Iterator[FlowerClient]:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLEET_")}
    env |= {
        "FLEET_BROKER_URL": redis_url,
        "FLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'fleet.db'}",
        "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
        "FLOWER_PERSISTENT": "false",
    }
    with (tmp_path / "flower.log").open("wb") as log:
        process = subprocess.Popen(
            compose_flower_command(port),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = FlowerClient(port)
    client.pid = process.pid
    try:
        eventually(lambda: client.get("/healthcheck")[0] == 200, "flower is up")
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_flower_shows_our_workers_tasks_and_metrics(
    tmp_path: Path, redis_url: str, flower: FlowerClient, start_workers: WorkerStarter
) -> None:
    database = f"sqlite:///{tmp_path / 'fleet.db'}"
    start_workers(1, broker_url=redis_url, database_url=database, queue="flowerq")
    worker = eventually(
        lambda: [
            name for name in flower.json("/api/workers?refresh=1") if name.startswith("local0@")
        ],
        "flower lists the worker",
    )[0]
    assert flower.get("/api/workers", auth=False)[0] == 401  # basic auth guards the API

    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 6)
    env = fleet_env(tmp_path, broker_url=redis_url, database_url=database)
    run_id = enqueue_and_wait(
        str(inputs),
        "--engine",
        "echo",
        "--model",
        "echo",
        "--slice-size",
        "2",
        "--queue",
        "flowerq",
        env=env,
        cwd=tmp_path,
    )

    def our_tasks() -> list[dict[str, Any]]:
        tasks = flower.json("/api/tasks?limit=100").values()
        done = [
            task for task in tasks if run_id in str(task.get("args")) and task["state"] == "SUCCESS"
        ]
        return done if len(done) == 4 else []  # three slices and finalize

    tasks = eventually(our_tasks, "flower saw every task of the run succeed")
    assert sorted(task["name"] for task in tasks) == ["fleet.finalize"] + ["fleet.run_slice"] * 3
    assert {task["worker"] for task in tasks} == {worker}
    assert all(
        task["routing_key"] == "flowerq" for task in tasks if task["name"] == "fleet.run_slice"
    )

    status, metrics = flower.get("/metrics")
    assert status == 200
    succeeded = [
        line
        for line in metrics.splitlines()
        if line.startswith("flower_events_total")
        and 'task="fleet.run_slice"' in line
        and 'type="task-succeeded"' in line
        and f'worker="{worker}"' in line
    ]
    assert succeeded
    assert float(succeeded[0].rsplit(" ", 1)[1]) >= 3


def test_every_flower_route_wants_the_credentials(flower: FlowerClient) -> None:
    for path in ROUTES:
        assert flower.get(path, auth=False)[0] == 401, path
        assert flower.get(path, password="wrong")[0] == 401, path
        status, body = flower.get(path)
        assert status == 200, f"{path}: {status} {body[:200]}"
    assert flower.get("/no-such-page", auth=False)[0] == 401
    assert "flower_events_total" in flower.get("/metrics")[1]


def test_flower_itself_listens_on_loopback_only(flower: FlowerClient) -> None:
    """Only the gate is reachable from outside; Flower behind it binds 127.0.0.1."""
    (inner,) = descendants(flower.pid)
    listening = tcp_listeners(inner)
    assert listening
    assert all(address.startswith("0100007F:") for address in listening), listening


def test_flower_refuses_to_start_without_credentials(tmp_path: Path, redis_url: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLEET_")}
    env.pop("FLOWER_BASIC_AUTH", None)
    env["FLEET_BROKER_URL"] = redis_url
    done = subprocess.run(
        compose_flower_command(free_port()), env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH=user:password is required" in done.stderr
