"""Lane queues at enqueue: the run's queue by default, the model's own with model queues."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from common.celery_app import celery_config
from common.models import Lane
from common.queries import slice_queues
from common.routing import model_queue
from common.runconfig import RunConfig
from common.settings import Settings
from producer.enqueue import create_run

CONFIG = RunConfig(engine="echo", models=["delay=0.01", "delay=0.02"], slice_size=2)


def enqueue(db: Engine, tmp_path: Path, *, model_queues: bool) -> str:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"p{i}"}) + "\n" for i in range(5))
    )
    return create_run(
        db, input_path=inputs, config=CONFIG, queue="q", model_queues=model_queues
    ).run_id


def test_lanes_use_the_run_queue_by_default(db: Engine, tmp_path: Path) -> None:
    run_id = enqueue(db, tmp_path, model_queues=False)
    with Session(db) as session:
        orders = slice_queues(session, run_id=run_id)
    assert list(orders) == ["q"]
    assert len(orders["q"]) == 6  # 3 slices in each of 2 lanes, lane 0 first


def test_model_queues_send_each_lane_to_its_model(db: Engine, tmp_path: Path) -> None:
    run_id = enqueue(db, tmp_path, model_queues=True)
    with Session(db) as session:
        lanes = session.exec(select(Lane).where(Lane.run_id == run_id).order_by(col(Lane.index)))
        assert [lane.queue for lane in lanes] == [model_queue("q", m) for m in CONFIG.models]
        orders = slice_queues(session, run_id=run_id)
        some = slice_queues(
            session, run_id=run_id, slice_ids=orders[model_queue("q", "delay=0.02")][:1]
        )
    assert {queue: len(ids) for queue, ids in orders.items()} == {
        model_queue("q", model): 3 for model in CONFIG.models
    }
    assert list(some) == [model_queue("q", "delay=0.02")]


def test_worker_start_timeout_fits_a_preload() -> None:
    config = celery_config(Settings(broker_url="redis://127.0.0.1:1/0", worker_start_timeout=900))
    assert config["worker_proc_alive_timeout"] == 900
    assert config["worker_send_task_events"] is True
    assert config["task_send_sent_event"] is True
