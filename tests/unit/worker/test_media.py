"""Media on the worker's side: one conversation shape for both record shapes
(``common.media``, ``common.prompts``), decoding and frame sampling (``worker.media``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from common.media import file_url, text_messages, with_video_frames
from common.prompts import Chat, build_prompt, plain_chat
from tests.media_files import frame_level, png_data_url, write_png, write_truncated_png, write_video
from worker.media import MediaError, frame_indexes, inline_media, load_image, sample_frames


def test_a_fields_record_becomes_one_user_message_with_its_media_first() -> None:
    payload = {"id": 1, "images": ["/d/a.png", "/d/b.png"], "video": "/d/c.mp4", "prompt": "Q?"}
    prompt = build_prompt(payload, "Q?", system="Be brief.", schema=None)
    assert prompt == Chat(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "file:///d/a.png"}},
                    {"type": "image_url", "image_url": {"url": "file:///d/b.png"}},
                    {"type": "video_url", "video_url": {"url": "file:///d/c.mp4"}},
                    {"type": "text", "text": "Q?"},
                ],
            },
        ]
    )


def test_chat_parts_pass_through_and_a_schema_instruction_is_a_last_text_part() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "file:///d/a.png"}},
        {"type": "text", "text": "Q?"},
    ]
    payload = {"id": 1, "messages": [{"role": "user", "content": parts}]}
    prompt = build_prompt(payload, "user: <image>Q?", system=None, schema={"type": "object"})
    assert isinstance(prompt, Chat)
    content = prompt.messages[0]["content"]
    assert content[:2] == parts
    assert content[2]["type"] == "text"
    assert content[2]["text"].startswith("Answer with a single JSON object")
    assert payload["messages"][0]["content"] == parts  # the payload is left as it was


def test_text_only_engines_get_text_and_refuse_media() -> None:
    parts = [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]
    assert text_messages([{"role": "user", "content": parts}]) == [
        {"role": "user", "content": "a b"}
    ]
    image = [{"type": "image_url", "image_url": {"url": "file:///a.png"}}]
    with pytest.raises(ValueError, match="text only"):
        text_messages([{"role": "user", "content": image}])
    assert plain_chat([{"role": "user", "content": [*image, *parts]}]) == (
        "user: <image>a b\nassistant:"
    )


def test_video_parts_get_the_run_s_frame_count_on_a_copy() -> None:
    messages = [
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file:///c.mp4"}}]}
    ]
    framed = with_video_frames(messages, 4)
    assert framed[0]["content"][0]["video_url"] == {"url": "file:///c.mp4", "frames": 4}
    assert "frames" not in messages[0]["content"][0]["video_url"]


def test_images_decode_from_files_and_data_urls(tmp_path: Path) -> None:
    image = load_image(file_url(write_png(tmp_path / "a.png", side=20)))
    assert (image.mode, image.size) == ("RGB", (20, 20))
    assert load_image(png_data_url()).size == (16, 16)


@pytest.mark.parametrize("damage", ["truncated", "removed", "not-an-image"])
def test_an_image_that_cannot_be_decoded_is_a_media_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "a.png"
    if damage == "truncated":
        write_truncated_png(path)
    elif damage == "not-an-image":
        path.write_text("hello")
    with pytest.raises(MediaError, match=str(path)) as failed:
        load_image(file_url(path))
    assert failed.value.error_kind == "invalid_input"


@pytest.mark.parametrize(
    ("total", "frames", "expected"),
    [(20, 4, [2, 7, 12, 17]), (8, 8, list(range(8))), (3, 5, [0, 0, 1, 2, 2]), (100, 1, [50])],
)
def test_frame_indexes_are_evenly_spaced(total: int, frames: int, expected: list[int]) -> None:
    assert frame_indexes(total, frames) == expected


def test_a_video_is_sampled_to_n_evenly_spaced_frames(tmp_path: Path) -> None:
    url = file_url(write_video(tmp_path / "clip.mp4", frames=20))
    frames = sample_frames(url, 4)
    assert len(frames) == 4
    assert all(frame.size == (32, 32) and frame.mode == "RGB" for frame in frames)
    # Frame i of the clip is grey level 8 * i: the sampled ones are 2, 7, 12 and 17.
    levels = [frame_level(frame) for frame in frames]
    assert levels == pytest.approx([16, 56, 96, 136], abs=4)


def test_a_broken_video_is_a_media_error(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(MediaError, match=r"clip\.mp4"):
        sample_frames(file_url(path), 2)


def test_local_media_are_inlined_as_data_urls_for_remote_servers(tmp_path: Path) -> None:
    png = write_png(tmp_path / "a.png")
    clip = write_video(tmp_path / "c.mp4", frames=2)
    remote = png_data_url()
    messages = [
        {"role": "system", "content": "s"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": file_url(png)}},
                {"type": "image_url", "image_url": {"url": remote}},
                {"type": "video_url", "video_url": {"url": file_url(clip), "frames": 4}},
                {"type": "text", "text": "Q"},
            ],
        },
    ]
    inlined = inline_media(messages)
    parts = inlined[1]["content"]
    assert parts[0]["image_url"]["url"] == (
        "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    )
    assert parts[1]["image_url"]["url"] == remote
    clip_data = base64.b64encode(clip.read_bytes()).decode()
    assert parts[2] == {
        "type": "video_url",
        "video_url": {"url": f"data:video/mp4;base64,{clip_data}"},
    }
    assert parts[3] == {"type": "text", "text": "Q"}
    assert inlined[0] == messages[0]
    png.unlink()
    with pytest.raises(MediaError, match="cannot be read"):
        inline_media(messages)
