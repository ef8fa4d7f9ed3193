"""Out-of-memory back-off: what a worker process learned about the batches that fit.

A batch that runs out of memory (CUDA, or the host's ``MemoryError``) is halved and
retried; the budget that fitted is remembered for the life of the worker process, so
the next slice starts at a size that works instead of failing again first.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

from common.errors import FleetError


class HostMemoryExceeded(FleetError, MemoryError):
    """A batch over the host-memory guard (``FLEET_MEMORY_GUARD_TOKENS``), refused before
    it runs: on CPU, the kernel's OOM killer would otherwise end the whole worker."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` (matched by name) and ``MemoryError``."""
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


def free_memory() -> None:
    """Drop what a failed batch left behind: Python garbage and the CUDA cache."""
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover  (torch is a dependency of the hf engine only)
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class MemoryBudget:
    """The largest batch cost (padded prompt + new tokens) known to fit in this process.

    ``ceiling`` is the smallest cost that ran out of memory; ``largest_fit`` the largest
    cost below it that succeeded. ``limit`` caps what a run asks for by what was learned.
    """

    largest_fit: int = 0
    ceiling: int | None = None
    #: Host-memory guard: costs above it raise HostMemoryExceeded instead of running.
    guard_tokens: int | None = None

    def check(self, cost: int) -> None:
        """Raise HostMemoryExceeded for a batch over the guard."""
        if self.guard_tokens is not None and cost > self.guard_tokens:
            raise HostMemoryExceeded(
                f"batch of {cost} tokens over the host-memory guard of {self.guard_tokens}"
            )

    def record_fit(self, cost: int) -> None:
        if self.ceiling is None or cost < self.ceiling:
            self.largest_fit = max(self.largest_fit, cost)

    def record_oom(self, cost: int) -> None:
        if self.ceiling is None or cost < self.ceiling:
            self.ceiling = cost
            if self.largest_fit >= cost:
                self.largest_fit = 0

    def limit(self, requested: int) -> int:
        """The token budget to plan with: ``requested``, or less after an out-of-memory."""
        if self.ceiling is None:
            return requested
        learned = max(self.largest_fit, self.ceiling // 2, 1)
        return min(requested, learned)
