"""What the GPU bench spends: time caps per part, GPU memory peaks, the share of a part done.

A lent GPU machine gives minutes, not hours, so every part of ``bench.gpu`` runs under a
cap: it stops between two batches once the cap is spent and says how many items it left
out, and its figures are those of the items it did run. A part that fails is recorded as
failed; the next one still runs.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

#: Seconds each part of ``bench.gpu`` may take on the H200; the whole bench is capped by
#: its ``--budget-s`` besides (a part starts with what is left, if that is less).
CAPS = {"engine": 75, "plain": 45, "continuous": 75, "fleet": 120, "oom": 30, "dtypes": 60}


@dataclass
class Cap:
    """A part's time cap: ``seconds`` from when it is made."""

    seconds: float

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


class Budget:
    """The whole bench's time: each part gets its own cap, or what is left if less."""

    def __init__(self, seconds: float) -> None:
        self.total = Cap(seconds)

    def cap(self, seconds: float) -> Cap:
        return Cap(min(seconds, self.total.left()))


def throughput(
    *, items: int, done: int, seconds: float, tokens_out: int, cap: Cap
) -> dict[str, Any]:
    """Items/s and tokens/s over the items that ran; how many the cap left out."""
    return {
        "items": items,
        "items_done": done,
        "skipped_items": items - done,
        "capped": done < items and cap.spent(),
        "cap_s": round(cap.seconds, 1),
        "seconds": seconds,
        "tokens_out": tokens_out,
        "items_per_s": done / seconds if seconds else None,
        "tokens_per_s": tokens_out / seconds if seconds else None,
    }


@contextmanager
def gpu_peak(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """Put this process's peak GPU memory during the block into ``into`` (None on a CPU)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        into["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device) if cuda else None
        into["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device) if cuda else None


def device_used_bytes(device: torch.device) -> int | None:
    """Memory in use on the whole GPU, every process's (None on a CPU)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free)


def run_part(name: str, part: Callable[[], dict[str, Any]], parts: dict[str, Any]) -> None:
    """Run one part into ``parts[name]``; a failure is recorded there instead of raised."""
    print(f"--- {name}", flush=True)
    started = time.perf_counter()
    try:
        parts[name] = part()
    except Exception as error:  # noqa: BLE001  (one part failing must not lose the others)
        parts[name] = {
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=8),
        }
    parts[name]["part_s"] = time.perf_counter() - started
    shown = {key: value for key, value in parts[name].items() if key != "traceback"}
    print(f"    {shown}", flush=True)
