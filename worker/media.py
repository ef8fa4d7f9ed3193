"""Decoding an item's images and video on the worker.

The producer checked every file at enqueue, but a file can be truncated, replaced or
removed since, or be readable at its header and broken further on (enqueue reads only
headers). Whatever cannot be decoded raises :class:`MediaError`, whose ``error_kind``
is ``invalid_input``: the item fails alone, its batch runs without it.

A video is never held whole: its packets are counted (demuxed, not decoded), then it is
decoded once from the start and only the ``frames`` evenly spaced frames are kept.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
from typing import Any

from common.errors import FleetError
from common.media import MEDIA_PARTS, has_media, is_parts, part_url, url_path
from common.results import ErrorKind


class MediaError(FleetError, ValueError):
    """An image or video the worker cannot decode: its item fails with ``invalid_input``."""

    error_kind = ErrorKind.invalid_input


def load_image(url: str) -> Any:
    """The RGB image of a ``file://`` or ``data:`` URL, decoded in full (a PIL image)."""
    from PIL import Image

    source: Any
    if url.startswith("data:"):
        try:
            source = io.BytesIO(base64.b64decode(url.partition(",")[2], validate=True))
        except (binascii.Error, ValueError) as error:
            raise MediaError(f"image data: URL: not valid base64 ({error})") from None
        name = "image data: URL"
    else:
        path = url_path(url)
        if path is None:
            raise MediaError(f"image {url[:200]!r}: not a file:// or data: URL")
        source, name = path, f"image {path}"
    try:
        with Image.open(source) as image:
            return image.convert("RGB")  # convert decodes every pixel: a broken file fails here
    except (OSError, ValueError, SyntaxError) as error:
        # OSError covers a missing file and a truncated one; SyntaxError is what some
        # Pillow decoders raise for a corrupt header.
        raise MediaError(f"{name} cannot be decoded: {error}") from None


def sample_frames(url: str, frames: int) -> list[Any]:
    """``frames`` evenly spaced RGB frames of the video at a ``file://`` URL (PIL images).

    A video shorter than ``frames`` repeats some of its frames, so the model always sees
    the same number of images per video.
    """
    import av

    path = url_path(url)
    if path is None:
        raise MediaError(f"video {url[:200]!r}: not a file:// URL")
    try:
        total = _frame_count(str(path))
        if total == 0:
            raise MediaError(f"video {path} holds no frames")
        wanted = frame_indexes(total, frames)
        kept = _decode_frames(str(path), set(wanted))
    except (av.FFmpegError, OSError) as error:
        raise MediaError(f"video {path} cannot be decoded: {error}") from None
    if any(index not in kept for index in wanted):
        raise MediaError(f"video {path}: decoded fewer frames than its {total} packets")
    return [kept[index] for index in wanted]


def frame_indexes(total: int, frames: int) -> list[int]:
    """The indexes of ``frames`` evenly spaced frames of ``total``: the middle of each of
    ``frames`` equal spans."""
    return [min(total - 1, int((position + 0.5) * total / frames)) for position in range(frames)]


def _frame_count(path: str) -> int:
    """The video stream's frames, counted from its packets (no decoding)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_frames(path: str, wanted: set[int]) -> dict[int, Any]:
    """The frames at ``wanted`` indexes, decoding from the start and stopping after the last."""
    import av

    kept: dict[int, Any] = {}
    last = max(wanted)
    with av.open(path) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept[index] = frame.to_image().convert("RGB")
            if index >= last:
                break
    return kept


def inline_media(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each ``file://`` media URL replaced by a ``data:`` URL of the
    file's bytes (not decoded), as a remote server that cannot read our files takes them.
    The worker's own keys (a video's frame count) are dropped: the server samples."""
    if not has_media(messages):
        return messages
    return [
        {**message, "content": [_inlined(part) for part in message["content"]]}
        if is_parts(message["content"])
        else message
        for message in messages
    ]


def _inlined(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind not in MEDIA_PARTS:
        return part
    url = part_url(part)
    path = url_path(url)
    if path is not None:
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError as error:
            raise MediaError(f"{kind.split('_')[0]} {path} cannot be read: {error}") from None
        url = f"data:{mime};base64,{data}"
    return {"type": kind, kind: {"url": url}}
