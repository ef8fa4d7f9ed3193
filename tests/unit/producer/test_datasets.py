"""Evaluation runs at enqueue: lanes, datasets, sampling, checkpoints, pipeline sources."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from common.errors import ConfigError, InvalidInputFile
from common.models import Item, Lane, Result, Run, Slice
from common.runconfig import RunConfig
from common.settings import Settings
from producer.checkpoints import model_refs
from producer.cli.options import JobOptions, run_config
from producer.datasets import dataset_map
from producer.enqueue import create_run


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def records(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "prompt": f"digits {i}", "ref": str(i)} for i in range(count)]


def test_lanes_are_models_times_permutations(db: Engine, tmp_path: Path) -> None:
    options = JobOptions(
        model=["a", "b", "c"], engine="echo", permutation=["cyclic-digits"], permutations=3
    )
    config = run_config(Settings(slice_size=4), options)
    enqueued = create_run(
        db, input_path=write(tmp_path / "in.jsonl", records(10)), config=config, queue="q"
    )
    with Session(db) as session:
        lanes = [(lane.index, lane.model, lane.permutation) for lane in session.exec(select(Lane))]
        slices = session.exec(select(func.count()).select_from(Slice)).one()
    assert lanes == [
        (index, model, f"cyclic-digits@{seed}")
        for index, (model, seed) in enumerate((m, s) for m in "abc" for s in range(3))
    ]
    assert slices == enqueued.slices == 3 * 9  # 3 slices of 4 items, in 9 lanes


def test_datasets_tag_their_items(db: Engine, tmp_path: Path) -> None:
    config = RunConfig(
        engine="echo",
        models=["m"],
        datasets=dataset_map(
            [f"one={write(tmp_path / 'a.jsonl', records(2))}", f"two={tmp_path / 'b.jsonl'}"]
        ),
    )
    write(tmp_path / "b.jsonl", records(3))
    create_run(db, config=config, queue="q")
    with Session(db) as session:
        tags = [(item.seq, item.dataset) for item in session.exec(select(Item).order_by(Item.seq))]
    assert tags == [(0, "one"), (1, "one"), (2, "two"), (3, "two"), (4, "two")]


@pytest.mark.parametrize(
    ("option", "message"),
    [("gsm8k", "expected name=path"), ("=x.jsonl", "expected name=path"), ("a=", "name=path")],
)
def test_bad_dataset_option(option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataset_map([option])


def test_repeated_or_missing_dataset(db: Engine, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="given twice"):
        dataset_map(["a=x.jsonl", "a=y.jsonl"])
    config = RunConfig(engine="echo", models=["m"], datasets={"gone": str(tmp_path / "no.jsonl")})
    with pytest.raises(ConfigError, match="dataset 'gone': no such file"):
        create_run(db, config=config, queue="q")


def sampled_ids(db: Engine, path: Path, size: int, seed: int) -> list[str]:
    config = RunConfig(engine="echo", models=["m"], sample=size, sample_seed=seed)
    run_id = create_run(db, input_path=path, config=config, queue="q").run_id
    with Session(db) as session:
        return sorted(
            item.custom_id for item in session.exec(select(Item).where(Item.run_id == run_id))
        )


def test_sample_is_stable_and_independent_of_file_order(db: Engine, tmp_path: Path) -> None:
    rows = records(50)
    first = sampled_ids(db, write(tmp_path / "a.jsonl", rows), 10, 7)
    again = sampled_ids(db, tmp_path / "a.jsonl", 10, 7)
    random.Random(1).shuffle(rows)
    shuffled = sampled_ids(db, write(tmp_path / "b.jsonl", rows), 10, 7)
    other_seed = sampled_ids(db, tmp_path / "a.jsonl", 10, 8)
    assert len(first) == 10
    assert first == again == shuffled
    assert first != other_seed
    assert len(sampled_ids(db, tmp_path / "a.jsonl", 500, 7)) == 50


def test_a_record_a_permutation_cannot_take_is_reported_with_its_line(
    db: Engine, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "mc.jsonl",
        [{"id": 1, "prompt": "q", "choices": ["x", "y"]}, {"id": 2, "prompt": "q"}],
    )
    config = RunConfig(engine="echo", models=["m"], permutations=["shuffle-choices@1"])
    with pytest.raises(InvalidInputFile, match=r"mc.jsonl:2: permutation shuffle-choices@1"):
        create_run(db, input_path=path, config=config, queue="q")
    with Session(db) as session:
        assert session.exec(select(func.count()).select_from(Item)).one() == 0


def test_scorer_needs_a_reference_field(db: Engine, tmp_path: Path) -> None:
    config = RunConfig(engine="echo", models=["m"], scorer="exact")
    with pytest.raises(ConfigError, match="needs --reference-field"):
        create_run(db, input_path=write(tmp_path / "a.jsonl", records(1)), config=config, queue="q")
    config = RunConfig(engine="echo", models=["m"], scorer="regex:(", reference_field="ref")
    with pytest.raises(ConfigError, match="bad regular expression"):
        create_run(db, input_path=tmp_path / "a.jsonl", config=config, queue="q")


def test_bad_aggregate_option() -> None:
    with pytest.raises(ConfigError, match="--aggregate 'or'"):
        run_config(Settings(), JobOptions(model=["m"], engine="echo", aggregate="or"))


def test_no_input_at_all(db: Engine) -> None:
    with pytest.raises(ConfigError, match="no input"):
        create_run(db, config=RunConfig(engine="echo", models=["m"]), queue="q")


def test_from_run_needs_a_completed_run(db: Engine, tmp_path: Path) -> None:
    first = create_run(
        db,
        input_path=write(tmp_path / "a.jsonl", records(2)),
        config=RunConfig(engine="echo", models=["m"]),
        queue="q",
    )
    config = RunConfig(engine="echo", models=["m"], from_run=first.run_id, template="{answer}")
    with pytest.raises(ConfigError, match="is pending; a pipeline stage reads a completed run"):
        create_run(db, config=config, queue="q")


def checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_a_training_folder_resolves_to_its_latest_step(tmp_path: Path) -> None:
    run = tmp_path / "train"
    checkpoint(run / "step_900")
    latest = checkpoint(run / "checkpoint-1200")
    checkpoint(run / "step_80")
    (run / "step_5000").mkdir()  # no config.json: not a checkpoint
    other = checkpoint(tmp_path / "other")
    assert model_refs("hf", [f"{run},{other}", "org/name"]) == [
        str(latest.resolve()),
        str(other.resolve()),
        "org/name",
    ]
    assert model_refs("echo", ["delay=0,fail_marker=X"]) == ["delay=0,fail_marker=X"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no step_N or checkpoint-N"):
        model_refs("hf", [str(empty)])
    with pytest.raises(ConfigError, match="repeats"):
        model_refs("hf", ["org/a,org/a"])


def test_a_stage_of_a_run_with_datasets_sharing_ids(db: Engine, tmp_path: Path) -> None:
    datasets = {name: str(write(tmp_path / f"{name}.jsonl", records(2))) for name in ("one", "two")}
    source = create_run(
        db, config=RunConfig(engine="echo", models=["m"], datasets=datasets), queue="q"
    ).run_id
    with Session(db) as session:
        items = list(session.exec(select(Item).where(Item.run_id == source)))
        for item in items:
            session.add(
                Result(run_id=source, item_id=item.id or 0, lane_index=0, ok=True, answer="x")
            )
        run = session.get(Run, source)
        assert run is not None
        run.status = "completed"
        session.add(run)
        session.commit()
    stage = RunConfig(engine="echo", models=["m"], from_run=source, template="judge {answer}")
    with pytest.raises(ConfigError, match="INPUT or --from-run, not both"):
        create_run(db, input_path=tmp_path / "one.jsonl", config=stage, queue="q")
    stage_id = create_run(db, config=stage, queue="q").run_id
    with Session(db) as session:
        ids = sorted(i.custom_id for i in session.exec(select(Item).where(Item.run_id == stage_id)))
    assert ids == ["one/r0", "one/r1", "two/r0", "two/r1"]
