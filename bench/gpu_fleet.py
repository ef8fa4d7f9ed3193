"""The GPU bench's fleet part: a run through a :class:`~bench.fleetbench.LocalFleet`, capped.

Like ``LocalFleet.run`` (from the run's creation to the ``completed`` that only finalize
sets), but it stops waiting when the part's cap is spent and reports what was done by
then, and it samples the GPU's memory in use (the worker is another process, so its peak
is read off the whole device) while it waits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import func
from sqlmodel import select

from bench.fleetbench import LocalFleet
from bench.gpu_budget import Cap, device_used_bytes, throughput
from common.db import session_scope
from common.models import Result, RunStatus
from common.publish import publish_run
from common.queries import progress
from common.runconfig import Batching, Generation, RunConfig
from producer.enqueue import create_run


def run_config(args: argparse.Namespace, model: Path) -> RunConfig:
    """The run the fleet part enqueues: the engine part's batching, greedy."""
    return RunConfig(
        engine="hf",
        models=[str(model)],
        generation=Generation(max_new_tokens=args.max_new_tokens),
        batching=Batching(
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            max_padding=args.max_padding,
        ),
        slice_size=args.slice_size,
        dtype=args.dtype,
    )


def write_prompts(path: Path, prompts: list[str]) -> Path:
    """Plain-prompt records, ids ``p0``, ``p1``... in order."""
    with path.open("w") as out:
        for index, prompt in enumerate(prompts):
            out.write(json.dumps({"id": f"p{index}", "prompt": prompt}) + "\n")
    return path


def run_capped(
    fleet: LocalFleet, input_path: Path, config: RunConfig, cap: Cap, device: torch.device
) -> dict[str, Any]:
    """Enqueue, publish, wait for ``completed`` or the cap; figures of what was stored."""
    used_before = device_used_bytes(device)
    peak = used_before
    started = time.perf_counter()
    enqueued = create_run(fleet.db, input_path=input_path, config=config, queue="fleet")
    publish_run(fleet.db, fleet.app, run_id=enqueued.run_id)
    while True:
        with session_scope(fleet.db) as session:
            state = progress(session, run_id=enqueued.run_id)
        used = device_used_bytes(device)
        if used is not None and peak is not None:
            peak = max(peak, used)
        if state.status == RunStatus.completed or cap.spent():
            break
        if state.status in (RunStatus.failed, RunStatus.cancelled):
            raise RuntimeError(f"run {enqueued.run_id} ended {state.status}")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    with session_scope(fleet.db) as session:
        tokens = session.exec(
            select(func.coalesce(func.sum(Result.tokens_out), 0)).where(
                Result.run_id == enqueued.run_id
            )
        ).one()
    figures = throughput(
        items=enqueued.items, done=state.done, seconds=seconds, tokens_out=int(tokens), cap=cap
    )
    return figures | {
        "status": str(state.status),
        "failed": state.failed,
        "slices": enqueued.slices,
        "gpu_used_before_bytes": used_before,
        "gpu_used_peak_bytes": peak,
        "gpu_worker_peak_bytes": peak - used_before if peak and used_before else None,
    }
