"""``fleet.run`` and ``fleet.enqueue``: a batch from Python, as ``fleet run`` and ``fleet enqueue``.

Both go through ``producer.jobs``, the functions behind the commands: the same
checks (models, every record), the same SQL, the same broker and workers. The
inputs are a path (JSONL, or a run file) or any iterable of dicts; a bad dict raises
InvalidInputFile, whose ``errors`` are RecordErrors carrying its ``index`` and
``field``, with nothing stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.settings import Settings, load_settings
from fleet.options import job_options
from fleet.runs import Run, console_for
from producer.jobs import Inputs


def run(
    inputs: Inputs = None,
    *,
    model: str | Sequence[str] | None = None,
    workers: int = 1,
    local_workers: bool | None = None,
    output: str | Path | None = None,
    progress: bool = True,
    settings: Settings | None = None,
    **options: Any,
) -> Run:
    """Run ``inputs`` through ``model`` to the end; the finished Run.

    Without ``FLEET_BROKER_URL``: an embedded server, SQLite and ``workers`` local
    worker processes under the state directory (``FLEET_STATE_DIR``, ``.fleet``),
    stopped at the end. With it: the fleet's broker, database and workers
    (``local_workers=True`` spawns local ones as well). ``options``: the job
    options of ``fleet run`` by their long names (``max_new_tokens=16``,
    ``engine="echo"``, ``template=...``). The results and summary are written under
    ``output`` (default: the state directory's ``runs/RUN``) and read back with the
    Run's methods. An interrupt (Ctrl-C, a notebook's stop) stops the workers and
    raises ``producer.runner.RunInterrupted`` (a KeyboardInterrupt with the
    ``run_id``): ``fleet.Run(run_id).resume()`` finishes the run.
    """
    from producer.jobs import run_stored, store_job

    settings = settings if settings is not None else load_settings()
    job = store_job(settings, inputs=inputs, options=job_options({"model": model, **options}))
    run_stored(
        settings,
        job,
        workers=workers,
        local_workers=local_workers,
        output=None if output is None else Path(output),
        console=console_for(progress),
    )
    return Run(job.run_id, settings=settings)


def enqueue(
    inputs: Inputs = None,
    *,
    model: str | Sequence[str] | None = None,
    model_queues: bool = False,
    settings: Settings | None = None,
    **options: Any,
) -> Run:
    """Store ``inputs``' run and hand its slices to the fleet (``FLEET_BROKER_URL``); the Run.

    Returns as soon as the work orders are published: ``Run.wait()`` follows the run.
    """
    from producer.jobs import enqueue_job

    settings = settings if settings is not None else load_settings()
    job = enqueue_job(
        settings,
        inputs=inputs,
        options=job_options({"model": model, **options}),
        model_queues=model_queues,
    )
    return Run(job.run_id, settings=settings)
