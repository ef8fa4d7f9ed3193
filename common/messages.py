"""The wire format: what a task message carries. Ids only, never payloads.

Each order is a frozen dataclass that encodes to Celery's positional JSON args and
decodes back, wrapping any malformed message in a named error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import MessageError


@dataclass(frozen=True)
class SliceOrder:
    """Run the items of one slice: ``fleet.run_slice(run_id, slice_id)``."""

    run_id: str
    slice_id: int

    def to_args(self) -> list[Any]:
        return [self.run_id, self.slice_id]

    @classmethod
    def decode(cls, args: list[Any]) -> SliceOrder:
        try:
            run_id, slice_id = args
            if not isinstance(run_id, str) or type(slice_id) is not int:
                raise TypeError("expected [str, int]")
        except (TypeError, ValueError) as error:
            raise MessageError(f"bad slice order {args!r}: {error}") from error
        return cls(run_id, slice_id)


@dataclass(frozen=True)
class FinalizeOrder:
    """Compute the statistics of a run whose slices are all done: ``fleet.finalize(run_id)``."""

    run_id: str

    def to_args(self) -> list[Any]:
        return [self.run_id]

    @classmethod
    def decode(cls, args: list[Any]) -> FinalizeOrder:
        if len(args) != 1 or not isinstance(args[0], str):
            raise MessageError(f"bad finalize order {args!r}: expected [str]")
        return cls(args[0])
