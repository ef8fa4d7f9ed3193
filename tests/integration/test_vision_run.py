"""Images and video through real workers (``fleet run`` on the embedded default) with
the demo vision model: batched answers equal one-by-one answers, an undecodable image
fails its item alone, a video is sampled to ``--video-frames`` frames, and an
evaluation over two vision checkpoints and a permutation recounts from its export."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlmodel import select

from common.db import make_engine, session_scope
from common.models import Result
from producer.demo_vision import IMAGE_SIDE, PATCH
from tests.integration.helpers import fleet, fleet_env
from tests.media_files import write_png, write_truncated_png, write_video

#: Tokens one image (or one video frame) costs the demo model.
IMAGE_TOKENS = (IMAGE_SIDE // PATCH) ** 2

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (90, 90, 90)]


def write_dataset(folder: Path) -> Path:
    """Items with 0 to 3 images, one truncated image and one video; relative paths."""
    for index, colour in enumerate(COLOURS):
        write_png(folder / "pics" / f"{index}.png", colour=colour, side=16 + 8 * index)
    write_truncated_png(folder / "pics" / "cut.png")
    write_video(folder / "clip.mp4", frames=12)
    records: list[dict[str, Any]] = [
        {"id": f"n{count}-{start}", "images": [f"pics/{(start + k) % 5}.png" for k in range(count)],
         "prompt": "Name the colours you see."}
        for count in range(4)
        for start in range(2)
    ]  # fmt: skip
    records.insert(3, {"id": "cut", "images": ["pics/0.png", "pics/cut.png"], "prompt": "Which?"})
    records.append({"id": "clip", "video": "clip.mp4", "prompt": "What moves in the clip?"})
    path = folder / "vision.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def run(folder: Path, inputs: Path, model: Path, out: str, *options: str) -> dict[str, Any]:
    fleet("run", str(inputs), "--model", str(model), "--workers", "1", "--max-new-tokens", "6",
          "--output", str(folder / out), *options, env=fleet_env(folder), cwd=folder)  # fmt: skip
    lines = (folder / out / "results.jsonl").read_text().splitlines()
    return {record["id"]: record for record in map(json.loads, lines)}


def test_batched_equals_one_by_one_a_bad_image_fails_alone_video_frames(
    tmp_path: Path, demo_vision_model: Path
) -> None:
    inputs = write_dataset(tmp_path)
    batched = run(tmp_path, inputs, demo_vision_model, "batched",
                  "--batch-size", "16", "--video-frames", "2")  # fmt: skip
    alone = run(tmp_path, inputs, demo_vision_model, "alone",
                "--batch-size", "1", "--video-frames", "3")  # fmt: skip

    assert batched.keys() == alone.keys()
    for records in (batched, alone):
        cut = records.pop("cut")
        assert (cut["success"], cut["error_kind"]) == (False, "invalid_input")
        assert "cut.png" in cut["error"]
        assert all(record["success"] for record in records.values())
    clip_batched, clip_alone = batched.pop("clip"), alone.pop("clip")
    assert {key: (r["answer"], r["tokens_in"]) for key, r in batched.items()} == {
        key: (r["answer"], r["tokens_in"]) for key, r in alone.items()
    }
    # One more sampled frame: one more image's tokens in the prompt.
    assert clip_alone["tokens_in"] - clip_batched["tokens_in"] == IMAGE_TOKENS
    # Each image costs its tokens in the prompt's length (the token budget's unit).
    assert batched["n3-0"]["tokens_in"] - batched["n0-0"]["tokens_in"] == 3 * IMAGE_TOKENS
    # The export keeps the paths, made absolute, never the pixels.
    assert batched["n2-1"]["images"] == [str(tmp_path / "pics" / f"{k}.png") for k in (1, 2)]
    assert clip_batched["video"] == str(tmp_path / "clip.mp4")

    # The first run did batch: its results were generated more than one at a time.
    with session_scope(make_engine(f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}")) as session:
        sizes = session.exec(select(Result.run_id, Result.batch_size)).all()
    by_run: dict[str, set[int]] = defaultdict(set)
    for run_id, size in sizes:
        by_run[run_id].add(size or 0)
    largest = sorted(max(found) for found in by_run.values())
    assert len(largest) == 2
    assert largest[0] == 1 < largest[1]


def test_an_evaluation_over_two_vision_checkpoints_recounts_from_its_export(
    tmp_path: Path, demo_vision_model: Path
) -> None:
    second = tmp_path / "second"  # built by the command line, the other by the function
    fleet(
        "demo-model", "--vision", "--seed", "1", str(second), env=fleet_env(tmp_path), cwd=tmp_path
    )
    for index, colour in enumerate(COLOURS):
        write_png(tmp_path / "pics" / f"{index}.png", colour=colour, side=16 + 8 * index)
    letters = "aeioun"
    for name, count in (("one", 5), ("two", 4)):
        rows = [
            {"id": f"{name}-{n}", "images": [f"pics/{k % 5}.png" for k in range(n % 3 + 1)],
             "prompt": f"Picture {n} of set {name}, number {n + 3}?", "expected": letters[n % 6]}
            for n in range(count)
        ]  # fmt: skip
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    fleet("run", "--dataset", "one=one.jsonl", "--dataset", "two=two.jsonl",
          "--model", str(demo_vision_model), "--model", str(second),
          "--permutation", "cyclic-digits", "--permutations", "2",
          "--reference-field", "expected", "--scorer", "contains", "--aggregate", "any",
          "--workers", "1", "--max-new-tokens", "8", "--output", str(out),
          env=fleet_env(tmp_path), cwd=tmp_path)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 9 * 4  # items x (2 checkpoints x 2 permutations)
    assert all(record["success"] for record in records)
    assert all(record["images"][0].startswith(str(tmp_path)) for record in records)

    def recount(key: str) -> dict[str, tuple[int, int]]:
        """(items right in any lane of the group, items) per group of ``key``."""
        right: dict[str, dict[str, bool]] = defaultdict(dict)
        for record in records:
            group = right[record[key]]
            group[record["id"]] = group.get(record["id"], False) or record["score"] == 1.0
        return {name: (sum(items.values()), len(items)) for name, items in right.items()}

    for key, block in (("dataset", "dataset_results"), ("model", "model_results"),
                       ("permutation", "permutation_results")):  # fmt: skip
        reported = {
            name: (figures["correct"], figures["total"]) for name, figures in summary[block].items()
        }
        assert reported == recount(key), block
    every = recount("dataset")
    assert summary["overall_results"]["correct"] == sum(right for right, _ in every.values())
    assert summary["overall_results"]["total"] == 9
    # The checkpoints differ: the same prompts get different answers.
    answers: dict[str, set[str]] = defaultdict(set)
    for record in records:
        answers[f"{record['id']}/{record['permutation']}"].add(record["answer"])
    assert any(len(found) == 2 for found in answers.values())
