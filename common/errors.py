"""The error tree: one base, a few named kinds, each saying what was wrong and where."""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error the fleet raises on purpose."""


class ConfigError(FleetError):
    """A setting or command-line option that cannot work."""


class InputError(FleetError):
    """One bad input record: the file, the line and the field it concerns."""

    def __init__(self, path: str, line: int, message: str, field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(f"{self.place()}: {message}")

    def place(self) -> str:
        """``file:line``, and the field when there is one."""
        return f"{self.path}:{self.line}" + (f": field '{self.field}'" if self.field else "")


class RecordError(InputError):
    """One bad record of an in-memory list (the Python API's inputs): its index and field.

    ``index`` counts from 0, as the list does; ``line`` is the same position from 1,
    as a file's line would be (the item stored for a skipped record keeps it).
    """

    def __init__(self, index: int, message: str, field: str | None = None) -> None:
        self.index = index
        super().__init__("records", index + 1, message, field)

    def place(self) -> str:
        return f"record {self.index}" + (f": field '{self.field}'" if self.field else "")


class InvalidInputFile(FleetError):
    """An input file with bad records; holds every error found (up to a limit)."""

    def __init__(self, path: str, errors: list[InputError], total: int) -> None:
        self.path = path
        self.errors = errors
        self.total = total
        shown = "\n".join(f"  {error}" for error in errors)
        more = f"\n  ... and {total - len(errors)} more" if total > len(errors) else ""
        super().__init__(
            f"{path}: {total} invalid record(s); nothing was enqueued "
            f"(--skip-invalid enqueues the rest and records the rejects):\n{shown}{more}"
        )


class RunNotFound(FleetError):
    """A run id (or ``latest``) that names no run in the database."""

    def __init__(self, run_ref: str) -> None:
        self.run_ref = run_ref
        super().__init__(f"no run '{run_ref}' in the database")


class PublishIncomplete(FleetError):
    """The broker did not take every work order of a run; SQL holds the run all the same."""

    def __init__(self, run_id: str, *, published: int, total: int, broker: str, cause: str) -> None:
        self.run_id = run_id
        self.published = published
        self.total = total
        self.broker = broker
        self.cause = cause
        super().__init__(
            f"run {run_id}: the broker at {broker} is unreachable ({cause}); "
            f"{published} of {total} work order(s) published. The run is stored in SQL: "
            f"`fleet resume {run_id}` publishes the rest once the broker is back."
        )


class MessageError(FleetError):
    """A task message that does not decode into the wire format."""


class ForeignWorkOrder(MessageError):
    """A slice order whose slice belongs to another run than the one it names.

    What a broker kept across a reset database, or a buggy client, produces. It
    is refused whole: running it would write one run's items as another's results.
    """

    def __init__(self, run_id: str, slice_id: int, owner: str | None) -> None:
        self.run_id = run_id
        self.slice_id = slice_id
        self.owner = owner
        whose = f"belongs to run {owner}" if owner else "does not exist"
        super().__init__(f"slice {slice_id} {whose}, not to run {run_id}: order refused")
