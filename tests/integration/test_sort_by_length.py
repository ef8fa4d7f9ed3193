"""``--sort-by-length``: slices hold prompts of similar length, output stays in input order."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from common.db import session_scope
from common.messages import SliceOrder
from common.models import Item, Slice
from common.queries import open_items
from common.runconfig import RunConfig
from common.settings import Settings
from producer.enqueue import create_run
from producer.export import write_jsonl
from worker.pipeline import process_slice
from worker.runtime import WorkerRuntime


def test_slices_group_similar_lengths_and_export_keeps_input_order(
    db: Engine, tmp_path: Path
) -> None:
    rng = random.Random(3)
    words = [rng.randint(1, 60) for _ in range(40)]
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"r{index}", "prompt": " ".join(["word"] * count)}) + "\n"
            for index, count in enumerate(words)
        )
    )
    config = RunConfig(engine="echo", models=["echo"], slice_size=8, sort_by_length=True)
    run_id = create_run(db, input_path=source, config=config, queue="fleet").run_id

    with session_scope(db) as session:
        slices = list(session.exec(select(Slice).where(Slice.run_id == run_id)))
        slices.sort(key=lambda row: row.index)
        members = [
            [len((i.prompt or "").split()) for i in open_items(session, slice_row=s)]
            for s in slices
        ]
        positions = sorted(session.exec(select(Item.slice_pos).where(Item.run_id == run_id)))
    assert positions == list(range(40))
    assert sorted(count for member in members for count in member) == sorted(words)
    # Longest first: every slice's prompts are no shorter than the next slice's.
    for earlier, later in itertools.pairwise(members):
        assert min(earlier) >= max(later)

    runtime = WorkerRuntime(settings=Settings(), db=db)
    for slice_row in slices:
        assert slice_row.id is not None
        process_slice(runtime, SliceOrder(run_id, slice_row.id), worker="w1")
    out = tmp_path / "results.jsonl"
    write_jsonl(db, run_ref=run_id, path=out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [record["id"] for record in records] == [f"r{index}" for index in range(40)]
    assert all(record["success"] for record in records)
