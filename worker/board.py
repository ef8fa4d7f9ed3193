"""What the pool child has loaded, readable by the worker's main process.

The model lives in the prefork pool's child; Celery's remote-control commands
(``fleet workers list``, ``celery inspect``) are answered by the main process. The
board is an anonymous shared memory page that the main process opens as the worker
starts (``open_board``, on Celery's ``worker_init``), before the pool forks: the
child writes a small JSON document after each model load, the main process reads it
when asked. A child restarted by the pool is forked
from the same main process and writes to the same page.
"""

from __future__ import annotations

import json
import mmap
import struct
from typing import Any

#: Bytes of the page: a 4-byte length, then the JSON document.
_SIZE = 4096
_HEADER = struct.Struct("<I")

_page: mmap.mmap | None = None


def open_board() -> None:
    """Open the page; call it in the main process before the pool forks. Idempotent."""
    global _page
    if _page is None:
        _page = mmap.mmap(-1, _SIZE)


def post(state: dict[str, Any]) -> None:
    """Write ``state`` for the main process (truncating nothing: it must fit a page).

    A process that never opened the board (an engine used outside a worker) posts nothing.
    """
    if _page is None:
        return
    body = json.dumps(state, sort_keys=True).encode()[: _SIZE - _HEADER.size]
    _page.seek(0)
    _page.write(_HEADER.pack(0))  # readers see "nothing" while the body changes
    _page.seek(_HEADER.size)
    _page.write(body)
    _page.seek(0)
    _page.write(_HEADER.pack(len(body)))


def read() -> dict[str, Any]:
    """The last state the pool child posted; empty before its first model load."""
    if _page is None:
        return {}
    (length,) = _HEADER.unpack(_page[: _HEADER.size])
    if not 0 < length <= _SIZE - _HEADER.size:
        return {}
    try:
        state = json.loads(_page[_HEADER.size : _HEADER.size + length])
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
