"""``fleet flower``: Flower with every route behind basic auth, ``/metrics`` included.

Flower's own basic auth guards its pages and API but not ``/metrics``,
``/healthcheck``, ``/static`` or ``/login``, which answer anyone (``/metrics`` names
every task and worker). So Flower runs on 127.0.0.1 only, on a port of its own, and
this gate listens where Flower would: it answers 401 to any request without one of
the ``FLOWER_BASIC_AUTH`` credentials and hands the others to Flower (which checks
them again). Prometheus scrapes ``/metrics`` with ``basic_auth`` in its scrape config.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.web import Application, RequestHandler

from common.errors import ConfigError
from producer.embedded import celery_command
from producer.lifeline import die_with_parent

#: The variable Flower reads its credentials from (``user:password``, comma-separated).
AUTH_ENV = "FLOWER_BASIC_AUTH"
#: Headers that belong to one hop, not passed through (RFC 9110 7.6.1) or recomputed.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
#: Headers the gate would set itself: Flower's value replaces ours.
SINGLE_HEADERS = frozenset({"content-type", "server", "date"})
#: Seconds Flower may take to answer after it is started.
START_TIMEOUT_S = 60.0


def credentials_from(value: str | None) -> list[str]:
    """The ``user:password`` pairs of ``FLOWER_BASIC_AUTH``; ConfigError if there is none."""
    pairs = [pair.strip() for pair in (value or "").split(",") if pair.strip()]
    if not pairs or not all(":" in pair and pair.split(":", 1)[1] for pair in pairs):
        raise ConfigError(
            f"{AUTH_ENV}=user:password is required: every Flower route, /metrics "
            "included, answers only with it (make a password with `openssl rand -hex 24`)"
        )
    return pairs


def authorized(header: str | None, credentials: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``credentials`` (constant time)."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    found = False
    for pair in credentials:
        found |= hmac.compare_digest(given, pair.encode())
    return found


class Gate(RequestHandler):
    """Every method, every path: 401 without credentials, else Flower's own answer."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    def initialize(self, upstream: str, credentials: Sequence[str]) -> None:
        self.upstream = upstream
        self.credentials = credentials

    async def _forward(self) -> None:
        if not authorized(self.request.headers.get("Authorization"), self.credentials):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Basic realm="flower"')
            self.finish("Access denied")
            return
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in HOP_HEADERS}
        method = self.request.method or "GET"
        request = HTTPRequest(
            self.upstream + self.request.uri if self.request.uri else self.upstream,
            method=method,
            headers=headers,
            body=self.request.body if method in ("POST", "PUT", "PATCH") else None,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            request_timeout=120,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        if response.code == 599:  # no answer at all: Flower is down or too slow
            self.send_error(502)
            return
        self.clear()
        self.set_status(response.code, response.reason)
        for name, value in response.headers.get_all():
            if name.lower() in SINGLE_HEADERS:
                self.set_header(name, value)
            elif name.lower() not in HOP_HEADERS:
                self.add_header(name, value)
        if response.body and method != "HEAD":
            self.write(response.body)
        self.finish()

    get = head = post = put = delete = patch = options = _forward


def gate_app(upstream: str, credentials: Sequence[str]) -> Application:
    return Application([(r".*", Gate, {"upstream": upstream, "credentials": credentials})])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_flower(port: int) -> subprocess.Popen[bytes]:
    """``celery -A worker flower`` on 127.0.0.1:``port``; it dies with us."""
    return subprocess.Popen(
        [*celery_command(), "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"],
        preexec_fn=die_with_parent(signal.SIGTERM),
    )


def wait_listening(port: int, flower: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if flower.poll() is not None:
            raise ConfigError(f"flower exited with {flower.returncode} at start (its output above)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise ConfigError(f"flower did not listen on 127.0.0.1:{port} in {START_TIMEOUT_S:.0f}s")


def serve(*, address: str, port: int, flower_port: int) -> int:
    """Start Flower behind the gate; serve until SIGINT/SIGTERM; stop Flower; exit status."""
    credentials = credentials_from(os.environ.get(AUTH_ENV))
    inner = flower_port or free_port()
    flower = start_flower(inner)
    try:
        wait_listening(inner, flower)
        asyncio.run(_serve_gate(f"http://127.0.0.1:{inner}", credentials, address, port))
    finally:
        flower.terminate()
        try:
            flower.wait(timeout=20)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait()
    return 0


async def _serve_gate(upstream: str, credentials: Sequence[str], address: str, port: int) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    server = gate_app(upstream, credentials).listen(port, address=address)
    print(f"flower on http://{address}:{port} (basic auth on every route)", flush=True)
    await stopped.wait()
    server.stop()
