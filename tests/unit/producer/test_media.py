"""Images and video at enqueue (``producer.media`` through ``producer.inputs``): both
record shapes, every file checked, every path stored absolute, every bad one named by
file, line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.media import file_url
from producer.inputs import InputRecord, RecordReader, Rejected
from producer.records import RecordsReader
from tests.media_files import (
    png_data_url,
    write_huge_png,
    write_png,
    write_truncated_png,
    write_video,
)


def read(path: Path, records: list[dict[str, Any]], **options: Any) -> list[InputRecord | Rejected]:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return list(RecordReader(path, **options))


def only_record(entries: list[InputRecord | Rejected]) -> InputRecord:
    assert len(entries) == 1
    entry = entries[0]
    assert isinstance(entry, InputRecord), entry
    return entry


def rejection(entries: list[InputRecord | Rejected]) -> str:
    assert len(entries) == 1
    entry = entries[0]
    assert isinstance(entry, Rejected), entry
    return str(entry.error)


def chat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "c", "messages": [{"role": "user", "content": list(parts)}]}


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_images_field_paths_are_resolved_against_the_input_file(tmp_path: Path) -> None:
    write_png(tmp_path / "data" / "pics" / "a.png")
    write_png(tmp_path / "elsewhere" / "b.png")
    absolute = str(tmp_path / "elsewhere" / "b.png")
    record = only_record(
        read(
            tmp_path / "data" / "in.jsonl",
            [{"id": 1, "images": ["pics/a.png", absolute], "prompt": "Which is red?"}],
        )
    )
    assert record.payload["images"] == [str(tmp_path / "data" / "pics" / "a.png"), absolute]
    assert record.prompt == "Which is red?"


def test_a_video_field_is_checked_and_stored_absolute(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4", frames=3)
    record = only_record(
        read(tmp_path / "in.jsonl", [{"id": 1, "video": "clip.mp4", "prompt": "What moves?"}])
    )
    assert record.payload["video"] == str(tmp_path / "clip.mp4")


def test_chat_parts_are_checked_and_their_paths_become_file_urls(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    write_video(tmp_path / "clip.mp4", frames=3)
    data_url = png_data_url()
    record = only_record(
        read(
            tmp_path / "in.jsonl",
            [
                chat(
                    image_part("a.png"),
                    image_part(file_url(tmp_path / "a.png")),
                    image_part(data_url),
                    {"type": "video_url", "video_url": {"url": "clip.mp4"}},
                    {"type": "text", "text": "Describe."},
                )
            ],
        )
    )
    parts = record.payload["messages"][0]["content"]
    assert [part.get("image_url", part.get("video_url", {})).get("url") for part in parts] == [
        file_url(tmp_path / "a.png"),
        file_url(tmp_path / "a.png"),
        data_url,
        file_url(tmp_path / "clip.mp4"),
        None,
    ]
    # The stored prompt shows where the media stand, never their bytes.
    assert record.prompt == "user: <image><image><image><video>Describe."


@pytest.mark.parametrize(
    ("make", "field", "fragment"),
    [
        (lambda d: None, "images[2]", "no such file"),
        (lambda d: (d / "c.png").write_text("not a picture"), "images[2]", "not an image"),
        (lambda d: write_huge_png(d / "c.png", width=300, height=200), "images[2]", "is 300x200"),
    ],
    ids=["missing", "not-an-image", "huge"],
)
def test_a_bad_image_is_named_by_file_line_and_field(
    tmp_path: Path, make: Any, field: str, fragment: str
) -> None:
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    make(tmp_path)
    path = tmp_path / "in.jsonl"
    records = [
        {"id": 1, "images": ["a.png"], "prompt": "fine"},
        {"id": 2, "images": ["a.png", "b.png", "c.png"], "prompt": "third is bad"},
    ]
    entries = read(path, records, max_image_pixels=50_000)
    assert isinstance(entries[0], InputRecord)
    message = rejection(entries[1:])
    assert message.startswith(f"{path}:2: field '{field}': "), message
    assert fragment in message
    if fragment == "is 300x200":
        assert "--max-image-pixels" in message


def test_the_pixel_limit_is_an_option(tmp_path: Path) -> None:
    write_huge_png(tmp_path / "big.png", width=300, height=200)
    records = [{"id": 1, "images": ["big.png"], "prompt": "p"}]
    assert isinstance(read(tmp_path / "a.jsonl", records)[0], InputRecord)
    assert "over the limit of 59,999" in rejection(
        read(tmp_path / "b.jsonl", records, max_image_pixels=59_999)
    )


def test_a_truncated_image_passes_enqueue_which_reads_headers_only(tmp_path: Path) -> None:
    write_truncated_png(tmp_path / "cut.png")
    only_record(read(tmp_path / "in.jsonl", [{"id": 1, "images": ["cut.png"], "prompt": "p"}]))


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({"id": 1, "images": "a.png", "prompt": "p"}, "images", "must be a list"),
        ({"id": 1, "images": [""], "prompt": "p"}, "images[0]", "non-empty path"),
        ({"id": 1, "images": [3], "prompt": "p"}, "images[0]", "non-empty path"),
        ({"id": 1, "video": "a.png", "prompt": "p"}, "video", "still image"),
        ({"id": 1, "video": "text.txt", "prompt": "p"}, "video", "not a video"),
        ({"id": 1, "video": "none.mp4", "prompt": "p"}, "video", "no such file"),
        (chat({"type": "audio"}), "messages[0].content[0].type", "a part must be"),
        (chat({"type": "text", "text": 3}), "messages[0].content[0].text", "must be a string"),
        (chat({"type": "image_url"}), "messages[0].content[0].image_url.url", "missing"),
        (
            chat(image_part("https://example.com/a.png")),
            "messages[0].content[0].image_url.url",
            "file:// URL",
        ),
        (
            chat(image_part("data:image/png;base64,!!!")),
            "messages[0].content[0].image_url.url",
            "base64",
        ),
        (
            chat(image_part("data:text/plain;base64,aGVsbG8=")),
            "messages[0].content[0].image_url.url",
            "not an image",
        ),
        (chat(image_part("nope.png")), "messages[0].content[0].image_url.url", "no such file"),
        ({"id": 1, "messages": [{"role": "user", "content": []}]}, "messages[0].content", "empty"),
    ],
)
def test_bad_media_fields_and_parts_are_refused(
    tmp_path: Path, record: dict[str, Any], field: str, fragment: str
) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "text.txt").write_text("not a video")
    path = tmp_path / "in.jsonl"
    message = rejection(read(path, [record]))
    assert message.startswith(f"{path}:1: field '{field}': "), message
    assert fragment in message


def test_records_without_media_are_read_as_before(tmp_path: Path) -> None:
    record = only_record(
        read(tmp_path / "in.jsonl", [{"id": 1, "messages": [{"role": "user", "content": "hi"}]}])
    )
    assert record.payload == {"id": 1, "messages": [{"role": "user", "content": "hi"}]}


def test_records_from_python_resolve_paths_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "a.png")
    entries = list(
        RecordsReader(
            [
                {"id": 1, "images": ["a.png"], "prompt": "p"},
                {"id": 2, "images": ["a.png", "b.png"], "prompt": "p"},
            ]
        )
    )
    assert only_record(entries[:1]).payload["images"] == [str(tmp_path / "a.png")]
    message = rejection(entries[1:])
    assert "images[1]" in message
    assert "no such file" in message
