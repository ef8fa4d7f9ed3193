"""Free space on the state directory's file system: warn when low, name a full disk.

Everything a local run keeps (SQLite, the broker's append-only file, worker logs)
lives under the state directory. When its file system fills, the server, the
database and the logs fail each in their own words, or in none (a log cut short);
``fleet run`` says it itself, with the path, and how to continue.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import FleetError

#: Below this, the file system is as good as full: SQLite or the broker cannot grow.
FULL_BYTES = 8 * 1024**2
#: Below this at the start of a run, a warning: results, logs and the queue need room.
LOW_BYTES = 1024**3


class DiskFull(FleetError):
    """The state directory's file system has (next to) no space left."""


@dataclass(frozen=True)
class Space:
    path: Path
    free: int
    total: int


def measure(path: Path) -> Space:
    """Free and total bytes of the file system holding ``path`` (or its nearest parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return Space(path, stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


def human(count: float) -> str:
    """``count`` bytes as ``512 B``, ``3.2 MiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def is_full(space: Space) -> bool:
    """Too little room left for SQLite or the broker to grow."""
    return space.free < FULL_BYTES


def full_message(space: Space, *, then: str) -> str:
    """What ``fleet run`` says when the state directory's disk is full."""
    return (
        f"no space left on device: {space.path} ({human(space.free)} free of "
        f"{human(space.total)}); free some space, then: {then}"
    )


def low_message(space: Space) -> str | None:
    """A warning when the state directory's disk is low; None when there is room."""
    if space.free >= LOW_BYTES:
        return None
    return (
        f"warning: only {human(space.free)} free on the file system of {space.path}; "
        "the run stores its results, queue and logs there"
    )


def require_space(path: Path, *, then: str) -> None:
    """DiskFull naming ``path`` when its file system is full."""
    space = measure(path)
    if is_full(space):
        raise DiskFull(full_message(space, then=then))


@contextmanager
def naming_a_full_disk(path: Path, *, then: str) -> Iterator[None]:
    """Turn any error raised while ``path``'s file system is full into DiskFull.

    SQLite says "database or disk is full", the broker "MISCONF", a log nothing at
    all: whatever the words, a full disk is named as such.
    """
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:
        space = measure(path)
        if is_full(space):
            raise DiskFull(full_message(space, then=then)) from error
        raise
