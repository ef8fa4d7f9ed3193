"""The line each record id was first seen on, in 24 to 48 bytes per id.

A file's ids must be unique, and a duplicate is refused on its own line, naming the
line of the first. A ``dict[str, int]`` of a million ids costs the producer about
120 MiB (the strings, the ints and the table); this table keeps, per id, an 8-byte
BLAKE2b digest and a 4-byte line number in two flat arrays with open addressing,
between a quarter and half full: 25 MiB at a million ids, whatever their length.

Two different ids share a 64-bit digest with a probability of about n²/2⁶⁵ (3 in 100
million for a million ids). Such a pair is refused as a duplicate, loudly, with both
lines named; it is never merged silently.
"""

from __future__ import annotations

import hashlib
from array import array

#: Slots of a new table (a power of two).
_INITIAL_SLOTS = 1 << 12


def _digest(custom_id: str) -> int:
    """The id's 64-bit digest, never 0 (0 marks an empty slot)."""
    digest = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class IdLines:
    """``setdefault(id, line)``: the first line of ``id``, recording ``line`` if it is new."""

    def __init__(self) -> None:
        self._count = 0
        self._allocate(_INITIAL_SLOTS)

    def _allocate(self, slots: int) -> None:
        self._mask = slots - 1
        self._keys = array("Q", bytes(8 * slots))
        self._lines = array("I", bytes(4 * slots))

    def __len__(self) -> int:
        return self._count

    def __contains__(self, custom_id: str) -> bool:
        return self._find(_digest(custom_id)) is not None

    def setdefault(self, custom_id: str, line: int) -> int:
        """The line ``custom_id`` was first seen on; ``line`` when this is its first time."""
        key = _digest(custom_id)
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self._lines[slot]
            if found == 0:
                break
            slot = (slot + 1) & mask
        keys[slot] = key
        self._lines[slot] = line
        self._count += 1
        if 2 * self._count > mask:
            self._grow()
        return line

    def _find(self, key: int) -> int | None:
        keys, mask = self._keys, self._mask
        slot = key & mask
        while keys[slot]:
            if keys[slot] == key:
                return slot
            slot = (slot + 1) & mask
        return None

    def _grow(self) -> None:
        keys, lines = self._keys, self._lines
        self._allocate(2 * len(keys))
        new_keys, new_lines, mask = self._keys, self._lines, self._mask
        for key, line in zip(keys, lines, strict=True):
            if key:
                slot = key & mask
                while new_keys[slot]:
                    slot = (slot + 1) & mask
                new_keys[slot] = key
                new_lines[slot] = line
