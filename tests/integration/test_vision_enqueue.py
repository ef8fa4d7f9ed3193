"""Images and video through the enqueue path on SQLite and PostgreSQL: paths stored
absolute, a bad file refused naming file, line and field with nothing enqueued, and
``--skip-invalid`` recording it as a reject while the rest is enqueued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from common.db import session_scope
from common.errors import InvalidInputFile
from common.models import Item, Result, Run
from common.runconfig import RunConfig
from producer.enqueue import create_run
from tests.media_files import write_huge_png, write_png, write_video


def write_inputs(folder: Path, records: list[dict[str, Any]]) -> Path:
    path = folder / "data" / "in.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def media(folder: Path) -> None:
    write_png(folder / "data" / "pics" / "a.png")
    write_png(folder / "data" / "pics" / "b.png")
    write_huge_png(folder / "data" / "pics" / "huge.png", width=400, height=400)
    (folder / "data" / "pics" / "notes.png").write_text("not an image")
    write_video(folder / "data" / "clip.mp4", frames=3)


GOOD: list[dict[str, Any]] = [
    {"id": "f", "images": ["pics/a.png", "pics/b.png"], "prompt": "Compare."},
    {"id": "v", "video": "clip.mp4", "prompt": "What moves?"},
    {
        "id": "c",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "pics/b.png"}},
                    {"type": "text", "text": "Colour?"},
                ],
            }
        ],
    },
]

#: A chat part naming a file that is not there.
GONE_PART = {"type": "image_url", "image_url": {"url": "pics/gone.png"}}

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"id": "m", "images": ["pics/a.png", "pics/gone.png"], "prompt": "p"}, "images[1]", "no such"),
    ({"id": "n", "images": ["pics/notes.png"], "prompt": "p"}, "images[0]", "not an image"),
    (
        {"id": "h", "images": ["pics/a.png", "pics/b.png", "pics/huge.png"], "prompt": "p"},
        "images[2]",
        "160,000 pixels",
    ),
    (
        {"id": "x", "messages": [{"role": "user", "content": [GONE_PART]}]},
        "messages[0].content[0].image_url.url",
        "no such file",
    ),
]


def config() -> RunConfig:
    return RunConfig(engine="echo", models=["echo"], max_image_pixels=100_000)


def test_good_media_are_stored_with_absolute_paths(db: Engine, tmp_path: Path) -> None:
    media(tmp_path)
    path = write_inputs(tmp_path, GOOD)
    enqueued = create_run(db, input_path=path, config=config(), queue="fleet")
    with session_scope(db) as session:
        payloads = {
            item.custom_id: item.payload
            for item in session.exec(select(Item).where(Item.run_id == enqueued.run_id))
        }
    pics = tmp_path / "data" / "pics"
    assert payloads["f"]["images"] == [str(pics / "a.png"), str(pics / "b.png")]
    assert payloads["v"]["video"] == str(tmp_path / "data" / "clip.mp4")
    part = payloads["c"]["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": (pics / "b.png").as_uri()}}


def test_bad_media_are_refused_naming_file_line_and_field(db: Engine, tmp_path: Path) -> None:
    media(tmp_path)
    path = write_inputs(tmp_path, GOOD + [record for record, _, _ in BAD])
    with session_scope(db) as session:
        runs_before = len(session.exec(select(Run.id)).all())
    with pytest.raises(InvalidInputFile) as refused:
        create_run(db, input_path=path, config=config(), queue="fleet")
    message = str(refused.value)
    for line, (_, field, fragment) in enumerate(BAD, start=len(GOOD) + 1):
        shown = [row for row in message.splitlines() if f"{path}:{line}: field '{field}': " in row]
        assert len(shown) == 1, (line, field, message)
        assert fragment in shown[0]
    with session_scope(db) as session:
        assert len(session.exec(select(Run.id)).all()) == runs_before  # nothing enqueued


def test_skip_invalid_records_bad_media_as_rejects(db: Engine, tmp_path: Path) -> None:
    media(tmp_path)
    path = write_inputs(tmp_path, GOOD + [record for record, _, _ in BAD])
    enqueued = create_run(db, input_path=path, config=config(), queue="fleet", skip_invalid=True)
    assert (enqueued.items, enqueued.rejected) == (len(GOOD) + len(BAD), len(BAD))
    with session_scope(db) as session:
        rejects = session.exec(
            select(Item.custom_id, Item.reject_reason, Result.error_kind)
            .join(Result, col(Result.item_id) == col(Item.id))
            .where(Item.run_id == enqueued.run_id, col(Item.reject_reason).is_not(None))
            .order_by(col(Item.seq))
        ).all()
    assert [(custom_id, kind) for custom_id, _, kind in rejects] == [
        (record["id"], "invalid_input") for record, _, _ in BAD
    ]
    assert all(
        f"field '{field}'" in str(reason)
        for (_, reason, _), (_, field, _) in zip(rejects, BAD, strict=True)
    )
