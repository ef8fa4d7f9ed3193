"""Images and video in a record, in one shape: OpenAI-style content parts.

A record carries media in one of two shapes:

- fields: ``images`` (a list of paths) and ``video`` (a path) beside its prompt
  (``prompt``, a ``--template``, or ``context`` and ``query``);
- chat ``messages`` whose ``content`` is a list of parts::

      {"type": "text", "text": "What is on the left?"}
      {"type": "image_url", "image_url": {"url": "file:///data/cat.png"}}   # or a data: URL
      {"type": "video_url", "video_url": {"url": "file:///data/clip.mp4"}}

The producer checks every image and video at enqueue and stores their paths absolute
(``producer.media``). The worker turns a fields record into one user message whose
parts are its images, its video, then its text (:func:`user_content`), so every engine
sees a single shape; the ``hf`` engine decodes the media (``worker.media``), the
``openai`` engine sends them as data URLs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

#: Field of a record holding its image paths.
IMAGES_FIELD = "images"
#: Field of a record holding its video path.
VIDEO_FIELD = "video"

#: Content part types.
TEXT, IMAGE_URL, VIDEO_URL = "text", "image_url", "video_url"
PART_TYPES = (TEXT, IMAGE_URL, VIDEO_URL)
#: Part types that carry media.
MEDIA_PARTS = (IMAGE_URL, VIDEO_URL)

#: Key of a video part's ``video_url`` the worker sets: frames to sample (``--video-frames``).
FRAMES_KEY = "frames"

#: One content part.
Part = dict[str, Any]


def has_media_fields(record: dict[str, Any]) -> bool:
    """Whether a record carries media in the fields shape."""
    return IMAGES_FIELD in record or VIDEO_FIELD in record


def is_parts(content: Any) -> bool:
    """Whether a message content is a list of parts (rather than a string)."""
    return isinstance(content, list)


def file_url(path: str | Path) -> str:
    """The ``file://`` URL of an absolute path."""
    return Path(path).as_uri()


def url_path(url: str) -> Path | None:
    """The path of a ``file:`` URL, else None."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def part_url(part: Part) -> str:
    """The URL of a media part (validated at enqueue)."""
    return str(part[part["type"]]["url"])


def user_content(record: dict[str, Any], text: str) -> list[Part]:
    """A fields record as one user message's parts: its images, its video, its text."""
    parts: list[Part] = [
        {"type": IMAGE_URL, IMAGE_URL: {"url": file_url(path)}}
        for path in record.get(IMAGES_FIELD) or []
    ]
    if record.get(VIDEO_FIELD):
        parts.append({"type": VIDEO_URL, VIDEO_URL: {"url": file_url(record[VIDEO_FIELD])}})
    parts.append({"type": TEXT, TEXT: text})
    return parts


def content_text(content: Any) -> str:
    """A content's text: the string itself, or its text parts with a ``<image>`` or
    ``<video>`` marker where media stand (what is shown and stored as the prompt)."""
    if not is_parts(content):
        return str(content)
    shown = {IMAGE_URL: "<image>", VIDEO_URL: "<video>"}
    return "".join(
        str(part.get(TEXT, "")) if part.get("type") == TEXT else shown.get(part.get("type"), "")
        for part in content
    )


def has_media(messages: list[dict[str, Any]]) -> bool:
    """Whether any message of a conversation holds an image or a video."""
    return any(
        is_parts(message["content"])
        and any(part.get("type") in MEDIA_PARTS for part in message["content"])
        for message in messages
    )


def append_text(content: Any, text: str) -> Any:
    """``content`` followed by ``text``: joined to a string, or as a last text part."""
    if is_parts(content):
        return [*content, {"type": TEXT, TEXT: text}]
    return f"{content}{text}"


def with_video_frames(messages: list[dict[str, Any]], frames: int) -> list[dict[str, Any]]:
    """A copy of ``messages`` whose video parts ask for ``frames`` sampled frames."""
    if not has_media(messages):
        return messages
    copied = copy.deepcopy(messages)
    for message in copied:
        if is_parts(message["content"]):
            for part in message["content"]:
                if part.get("type") == VIDEO_URL:
                    part[VIDEO_URL][FRAMES_KEY] = frames
    return copied


def text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with every content a string, for a model that reads text only;
    ValueError if one holds an image or a video."""
    if has_media(messages):
        raise ValueError("this model reads text only: the item holds images or a video")
    return [{**message, "content": content_text(message["content"])} for message in messages]
