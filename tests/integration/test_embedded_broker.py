"""The embedded server answers its owner only, and two runs never clash.

It listens on no TCP port, only on an owner-only unix socket, and asks for the
password kept in an owner-only file; a second server on the same state directory
is refused with a clear message, while runs on other state directories go ahead.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.valkey import BrokerError, EmbeddedBroker, redis_client_url
from tests.integration.helpers import fleet_env
from tests.integration.processes import alive, tcp_listeners, valkey_servers

#: A client that connects to the socket and says PING, printing what became of it.
PROBE = """
import socket, sys
try:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sys.argv[1]); s.sendall(b"PING\\r\\n"); print(s.recv(64))
except OSError as error:
    print(type(error).__name__)
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_listens_on_an_owner_only_socket_and_wants_its_password(tmp_path: Path) -> None:
    data = tmp_path / ".fleet" / "broker"
    with EmbeddedBroker(data) as url:
        (pid,) = valkey_servers(tmp_path / ".fleet")
        assert tcp_listeners(pid) == [], "the embedded server opened a TCP port"
        assert url.startswith(f"redis+socket://:{(data / 'password').read_text().strip()}@")
        assert (data / "url").read_text().strip() == url

        assert mode(data) == 0o700
        for name in ("password", "url", "valkey.conf", "valkey.sock"):
            assert mode(data / name) == 0o600, name

        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(data / "valkey.sock")).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(data / "valkey.sock"), password="guess").ping()
        assert redis.Redis.from_url(redis_client_url(url)).ping()


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder any user may walk through (pytest's own temporary folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="fleet-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to try the socket as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv to switch user")
def test_another_user_is_refused_by_the_folder_the_socket_and_the_password(
    open_folder: Path,
) -> None:
    data = open_folder / ".fleet" / "broker"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-c", PROBE, str(data / "valkey.sock")]  # fmt: skip

    def probe() -> str:
        return subprocess.run(as_nobody, capture_output=True, text=True, check=True).stdout.strip()

    with EmbeddedBroker(data):
        assert probe() == "PermissionError"  # the broker folder is 0700
        data.chmod(0o755)
        assert probe() == "PermissionError"  # and the socket itself 0600
        (data / "valkey.sock").chmod(0o666)
        assert "NOAUTH" in probe()  # past both walls, the password still refuses


def test_second_server_on_a_state_directory_is_refused_and_the_lock_dies_with_its_holder(
    tmp_path: Path,
) -> None:
    data = tmp_path / ".fleet" / "broker"
    first = EmbeddedBroker(data)
    url = first.__enter__()
    try:
        with pytest.raises(
            BrokerError, match=rf"in use by .* \(pid {os.getpid()}\).*FLEET_STATE_DIR"
        ):
            EmbeddedBroker(data).__enter__()
        assert redis.Redis.from_url(redis_client_url(url)).ping()  # the first one is untouched
    finally:
        first.kill()
    with EmbeddedBroker(data) as again:  # the holder is gone: the next one starts
        assert again == url
        assert redis.Redis.from_url(redis_client_url(again)).ping()


def test_a_state_directory_too_deep_for_a_socket_path_still_works(tmp_path: Path) -> None:
    data = tmp_path / ("deep" * 30) / "broker"
    broker = EmbeddedBroker(data)
    with broker as url:
        assert broker.socket.parent != data
        assert mode(broker.socket.parent) == 0o700
        assert redis.Redis.from_url(redis_client_url(url)).ping()
    assert not broker.socket.parent.exists()


def start_run(inputs: Path, state_dir: Path, cwd: Path) -> subprocess.Popen[str]:
    env = fleet_env(cwd)
    env |= {"FLEET_STATE_DIR": str(state_dir), "COLUMNS": "400"}
    return subprocess.Popen(
        [sys.executable, "-m", "producer", "run", str(inputs), "--engine", "echo",
         "--model", "delay=0.05", "--slice-size", "4"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_runs_started_together_never_clash(tmp_path: Path) -> None:
    """Two state directories: both complete. One directory twice: one runs, the other
    is refused at once with a message, never a traceback."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(json.dumps({"id": f"i{n}", "prompt": f"p {n}"}) + "\n" for n in range(12))
    )
    shared, own = tmp_path / "shared", tmp_path / "own"
    runs = [start_run(inputs, shared, tmp_path), start_run(inputs, shared, tmp_path),
            start_run(inputs, own, tmp_path)]  # fmt: skip
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    codes = [run.returncode for run in runs]
    assert not any("Traceback" in output for output in outputs), outputs
    assert codes[2] == 0, outputs[2]
    assert sorted(codes[:2]) == [0, 2], outputs[:2]
    refused = outputs[codes.index(2)]
    assert f"{shared} is in use by another fleet run" in refused
    for state_dir in (shared, own):
        (summary,) = (state_dir / "runs").glob("*/summary.json")
        document = json.loads(summary.read_text())
        assert document["run"]["status"] == "completed"
        assert document["statistics"]["overall"]["results_ok"] == 12
        assert not [pid for pid in valkey_servers(state_dir) if alive(pid)]


def test_a_server_told_to_stop_soon_keeps_what_it_was_given(tmp_path: Path) -> None:
    """``stop_soon`` (``fleet run`` once its workers are gone) signals the server and
    returns; leaving the block waits for it: the server is gone, its lock released, and
    what it held is in its append-only file for the next server on the folder."""
    data = tmp_path / ".fleet" / "broker"
    broker = EmbeddedBroker(data)
    with broker as url:
        redis.Redis.from_url(redis_client_url(url)).rpush("fleet", "order")
        broker.stop_soon()
    assert valkey_servers(tmp_path / ".fleet") == []
    with EmbeddedBroker(data) as url:
        assert redis.Redis.from_url(redis_client_url(url)).lrange("fleet", 0, -1) == [b"order"]
