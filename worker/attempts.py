"""Attempts and quarantine: a poison item is stopped after ``max_attempts`` tries.

Every item's attempts are counted in SQL *before* the engine sees it, in their
own transaction, so a worker that dies on an item (a segfault, an OOM kill, a
hard time limit) still leaves the count behind. With ``task_reject_on_worker_lost``
the broker hands the slice straight to another process; there:

- an item already tried ``max_attempts`` times is quarantined (a failed result,
  ``error_kind=quarantined``, quoting its last error) and never run again;
- an item tried before but not that often is a suspect and runs alone, so the
  innocent items of the batch it killed get their answers and only the poison
  item's count climbs.

A slice claimed more than ``max_attempts`` times whose items were never reached
(its worker died before the first batch every time) has its open items
quarantined too, so nothing loops forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Engine as Database
from sqlmodel import Session

from common.db import session_scope
from common.models import Item, Slice
from common.queries import attempt_counts
from common.results import ErrorKind, ResultRow, error_text
from common.store import count_attempts, record_attempt_error, save_results


@dataclass
class AttemptGuard:
    """Counts attempts for one claimed slice and says which items run alone."""

    run_id: str
    lane_index: int
    slice_id: int
    items: Sequence[Item]
    #: Item ids that were tried before: they run one at a time.
    suspects: set[int] = field(default_factory=set)

    def groups(self, indexes: Sequence[int]) -> list[list[int]]:
        """The batch split so that each suspect runs alone; the rest stay together."""
        plain = [index for index in indexes if self.items[index].id not in self.suspects]
        alone = [[index] for index in indexes if self.items[index].id in self.suspects]
        return ([plain] if plain else []) + alone

    def begin(
        self, session: Session, indexes: Sequence[int], *, saving: Sequence[ResultRow] = ()
    ) -> bool:
        """Count one attempt for these items; False (nothing counted) if the run was cancelled.

        ``saving``: the previous batch's results, stored in the same step. The caller
        commits before the engine sees the items.
        """
        return count_attempts(
            session,
            run_id=self.run_id,
            lane_index=self.lane_index,
            slice_id=self.slice_id,
            item_ids=self._ids(indexes),
            saving=saving,
        )

    @contextmanager
    def recording(self, db: Database, indexes: Sequence[int]) -> Iterator[None]:
        """Keep the error that escapes the engine call (e.g. a time limit) on the items."""
        try:
            yield
        except (Exception, SoftTimeLimitExceeded) as error:
            message = error_text(error)
            with session_scope(db) as session:
                record_attempt_error(
                    session,
                    run_id=self.run_id,
                    lane_index=self.lane_index,
                    item_ids=self._ids(indexes),
                    error=message,
                )
            raise

    def _ids(self, indexes: Sequence[int]) -> list[int]:
        return [self.items[index].id or 0 for index in indexes]


def screen_items(
    session: Session,
    *,
    slice_row: Slice,
    items: list[Item],
    max_attempts: int,
    worker: str,
    gpu_group: str,
) -> tuple[AttemptGuard, list[Item]]:
    """Quarantine the slice's exhausted items; the guard and the items still to run."""
    # Attempts are only counted while the slice is claimed: on its first claim
    # there are none to read.
    tried = attempt_counts(session, slice_id=slice_row.id or 0) if slice_row.attempts > 1 else {}
    open_ids = {item.id for item in items}
    counts = {item_id: tried[item_id] for item_id in tried if item_id in open_ids}
    doomed: dict[int, str] = {}
    for item in items:
        count, last_error = counts.get(item.id or 0, (0, None))
        if count >= max_attempts:
            doomed[item.id or 0] = (
                f"tried {count} times without an answer (max attempts {max_attempts}); "
                f"last error: {last_error or 'the worker process died while running it'}"
            )
    if not counts and items and slice_row.attempts > max_attempts:
        doomed = {
            item.id or 0: (
                f"the slice was claimed {slice_row.attempts} times and its worker died "
                f"before reaching this item every time (max attempts {max_attempts})"
            )
            for item in items
        }
    if doomed:
        save_results(
            session,
            rows=[
                _quarantine_row(slice_row, item_id, message, counts, worker, gpu_group)
                for item_id, message in doomed.items()
            ],
        )
    remaining = [item for item in items if (item.id or 0) not in doomed]
    suspects = {item.id or 0 for item in remaining if counts.get(item.id or 0, (0, None))[0] > 0}
    guard = AttemptGuard(
        slice_row.run_id, slice_row.lane_index, slice_row.id or 0, remaining, suspects
    )
    return guard, remaining


def _quarantine_row(
    slice_row: Slice,
    item_id: int,
    message: str,
    counts: dict[int, tuple[int, str | None]],
    worker: str,
    gpu_group: str,
) -> ResultRow:
    return ResultRow(
        run_id=slice_row.run_id,
        item_id=item_id,
        lane_index=slice_row.lane_index,
        slice_id=slice_row.id,
        worker=worker,
        gpu_group=gpu_group,
        attempts=max(counts.get(item_id, (0, None))[0], 1),
        error_kind=ErrorKind.quarantined,
        error_message=message,
    )
