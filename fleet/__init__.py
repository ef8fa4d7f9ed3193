"""fleet from Python: run a batch from a notebook or a script, and read its results.

    import fleet

    run = fleet.run(
        [{"id": 1, "prompt": "The capital of France is"}],
        model="./checkpoint",
        max_new_tokens=16,
    )
    frame = run.to_pandas()

``fleet.run`` and ``fleet.enqueue`` start a run as the ``fleet run`` and ``fleet
enqueue`` commands do (the same functions underneath); ``fleet.Run`` names a
stored run. Errors are FleetErrors (a bad record: InvalidInputFile, listing
RecordErrors with the record's index and field).
"""

from common.errors import (
    ConfigError,
    FleetError,
    InputError,
    InvalidInputFile,
    PublishIncomplete,
    RecordError,
    RunNotFound,
)
from common.settings import Settings
from fleet.runs import Run, WaitTimeout
from fleet.submit import enqueue, run
from producer.runner import RunInterrupted

__all__ = [
    "ConfigError",
    "FleetError",
    "InputError",
    "InvalidInputFile",
    "PublishIncomplete",
    "RecordError",
    "Run",
    "RunInterrupted",
    "RunNotFound",
    "Settings",
    "WaitTimeout",
    "enqueue",
    "run",
]
