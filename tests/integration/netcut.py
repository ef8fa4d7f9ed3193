"""A loopback TCP relay that a test can cut: a database outage as the workers see it.

The workers connect to the relay; the relay connects to the real server. ``cut()``
resets every open connection and refuses new ones (accepted, then closed at once)
until ``restore()``: what a database restart or a network partition looks like from
the client side, with the real server left untouched for the other tests.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableRelay:
    """Relay ``127.0.0.1:<port>`` to ``upstream``; ``cut`` and ``restore`` the link."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._links: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        self.refused = 0

    def __enter__(self) -> CuttableRelay:
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def cut(self) -> None:
        """Reset every open connection; refuse new ones until ``restore``."""
        self._open.clear()
        with self._lock:
            links, self._links = self._links, []
        for pair in links:
            for sock in pair:
                _close(sock)

    def restore(self) -> None:
        self._open.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                self.refused += 1
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._links.append((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(
                    target=_pump, args=(source, target), name="relay-pump", daemon=True
                ).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    _close(source)
    _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
