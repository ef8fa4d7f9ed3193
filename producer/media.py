"""Images and video at enqueue: every one checked, every path made absolute.

The workers read the files, so each path is resolved against the input file's folder
and stored absolute (a chat part's as a ``file://`` URL); on a fleet the files must be
on storage every worker sees. An image must exist, open in Pillow (its header is read,
not its pixels) and have at most ``max_image_pixels`` pixels; a ``data:`` URL's image is
checked the same way. A video must exist and hold a video stream PyAV can open. A bad
one is a :class:`BadMedia` naming the field (``images[2]``,
``messages[0].content[1].image_url.url``); the reader turns it into an ``InputError``.

Pillow and PyAV are imported only when a record carries media.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common.constants import DEFAULT_MAX_IMAGE_PIXELS
from common.media import (
    IMAGE_URL,
    IMAGES_FIELD,
    PART_TYPES,
    TEXT,
    VIDEO_FIELD,
    file_url,
    is_parts,
    url_path,
)


class BadMedia(Exception):
    """One image or video that cannot be enqueued: the field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class MediaCheck:
    """Checks a record's media and resolves their paths against ``base``."""

    #: The input file's folder: what relative paths are relative to.
    base: Path
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def resolve(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with its media paths absolute; BadMedia for the first bad one."""
        resolved = dict(record)
        if IMAGES_FIELD in record:
            resolved[IMAGES_FIELD] = self._images(record[IMAGES_FIELD])
        if VIDEO_FIELD in record:
            resolved[VIDEO_FIELD] = str(self._video(record[VIDEO_FIELD], VIDEO_FIELD))
        messages = record.get("messages")
        if isinstance(messages, list) and any(
            isinstance(message, dict) and is_parts(message.get("content")) for message in messages
        ):
            resolved["messages"] = [
                self._message(message, f"messages[{index}]")
                for index, message in enumerate(messages)
            ]
        return resolved

    def _images(self, paths: Any) -> list[str]:
        if not isinstance(paths, list):
            raise BadMedia(IMAGES_FIELD, "must be a list of image paths")
        return [
            str(self._image_file(path, f"{IMAGES_FIELD}[{index}]"))
            for index, path in enumerate(paths)
        ]

    def _message(self, message: Any, where: str) -> Any:
        if not isinstance(message, dict) or not is_parts(message.get("content")):
            return message  # a plain message: the reader checks it
        content = message["content"]
        if not content:
            raise BadMedia(f"{where}.content", "is an empty list of parts")
        parts = [
            self._part(part, f"{where}.content[{index}]") for index, part in enumerate(content)
        ]
        return {**message, "content": parts}

    def _part(self, part: Any, where: str) -> dict[str, Any]:
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            raise BadMedia(
                f"{where}.type", f"a part must be an object of type {', '.join(PART_TYPES)}"
            )
        kind = part["type"]
        if kind == TEXT:
            if not isinstance(part.get(TEXT), str):
                raise BadMedia(f"{where}.text", "must be a string")
            return part
        holder = part.get(kind)
        field = f"{where}.{kind}.url"
        url = holder.get("url") if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or not isinstance(url, str) or not url:
            raise BadMedia(field, f'missing: expected {{"{kind}": {{"url": ...}}}}')
        if kind == IMAGE_URL and url.startswith("data:"):
            self._data_image(url, field)
            return part
        path = url_path(url) if url.startswith("file:") else Path(url)
        if path is None or ("://" in url and not url.startswith("file:")):
            raise BadMedia(field, "must be a file:// URL, a path or (for an image) a data: URL")
        if kind == IMAGE_URL:
            resolved = self._image_file(str(path), field)
        else:
            resolved = self._video(str(path), field)
        return {**part, kind: {**holder, "url": file_url(resolved)}}

    def _path(self, value: Any, field: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise BadMedia(field, f"must be a non-empty path, got {value!r}")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.base / path
        path = path.resolve()
        if not path.is_file():
            raise BadMedia(field, f"no such file: {path}")
        return path

    def _image_file(self, value: Any, field: str) -> Path:
        path = self._path(value, field)
        with path.open("rb") as stream:
            self._check_image(stream, field, str(path))
        return path

    def _data_image(self, url: str, field: str) -> None:
        header, _, data = url.partition(",")
        if not header.endswith(";base64"):
            raise BadMedia(field, "a data: URL must be base64 (data:image/png;base64,...)")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise BadMedia(field, f"not valid base64: {error}") from None
        self._check_image(io.BytesIO(raw), field, "the data: URL")

    def _check_image(self, stream: IO[bytes], field: str, name: str) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(stream) as image:
                width, height = image.size
        except Image.DecompressionBombError as error:
            raise BadMedia(field, f"{name}: {error}") from None
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise BadMedia(field, f"{name} is not an image Pillow can open ({error})") from None
        if width * height > self.max_image_pixels:
            raise BadMedia(
                field,
                f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{self.max_image_pixels:,} (--max-image-pixels raises it)",
            )

    def _video(self, value: Any, field: str) -> Path:
        import av

        path = self._path(value, field)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise BadMedia(field, f"{path} holds no video stream")
                # FFmpeg reads a still image as a one-frame video: refuse those readers.
                if container.format.name.endswith("_pipe") or container.format.name == "image2":
                    raise BadMedia(field, f"{path} is a still image, not a video")
        except av.FFmpegError as error:
            raise BadMedia(field, f"{path} is not a video PyAV can open ({error})") from None
        return path
