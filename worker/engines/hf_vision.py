"""The ``hf`` engine for vision-language checkpoints: a processor and an image-text model.

A checkpoint whose config names an image-text-to-text architecture (Llava, Idefics3,
Qwen2-VL...) is loaded with ``AutoProcessor`` and ``AutoModelForImageTextToText``;
``load_engine`` picks this engine for it, so ``--engine hf`` runs both kinds.

Each conversation is put into the model's format by the processor's chat template,
with one image placeholder per image and per sampled video frame. Rendering also
decodes the item's media and runs the processor once, which gives the prompt's length
with the image tokens the processor expands each placeholder into: that is the length
the token budget counts. An image that cannot be decoded fails its item there, before
any batch (``worker.media.MediaError``, ``invalid_input``). The pixels are not kept:
a slice's items would hold them all at once; ``generate`` decodes them again for its
batch only.

Batches are left-padded like text batches; ``generate`` derives the positions from the
attention mask, so a batched greedy answer equals the answer the item gets alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from common.constants import DEFAULT_VIDEO_FRAMES
from common.media import FRAMES_KEY, IMAGE_URL, TEXT, VIDEO_URL, is_parts, part_url
from common.prompts import Chat, Message, Prompt
from common.results import error_text
from worker.engines.base import Completion, EngineBroken, GenerationParams
from worker.engines.hf import (
    PROBE,
    PROBE_PROMPTS,
    HFEngine,
    eos_ids,
    left_padded,
    resolve_dtype,
    sampling_options,
)
from worker.media import load_image, sample_frames

#: One medium of a prompt: its part type, URL and frames to sample (0 for an image).
Medium = tuple[str, str, int]


@dataclass(frozen=True)
class VisionPrompt(Chat):
    """A conversation rendered for a vision-language model: the chat template's text,
    the media its placeholders stand for, in order, and its length in tokens."""

    text: str = ""
    media: tuple[Medium, ...] = ()
    tokens: int = 0


def is_vision_checkpoint(model: str, *, trust_remote_code: bool = False) -> bool:
    """Whether ``model``'s config names an image-text-to-text architecture."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


class HFVisionEngine(HFEngine):
    """A vision-language model and its processor on one device; build with :meth:`load`.

    Text prompts (no chat) go through the tokenizer as in the text engine.
    """

    def __init__(self, model: Any, processor: Any, device: torch.device) -> None:
        super().__init__(model, processor.tokenizer, device)
        self.processor = processor
        self.fast_path = False

    @classmethod
    def load(  # type: ignore[override]
        cls,
        model: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
    ) -> HFVisionEngine:
        """Load ``model`` and its processor onto ``device`` (default cuda if seen).

        The image processor is the PIL one where the architecture has one: the others
        need torchvision, which the fleet does not depend on (it is used if installed).
        """
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            processor = AutoProcessor.from_pretrained(
                model, trust_remote_code=trust_remote_code, backend="pil"
            )
        except (ValueError, ImportError, KeyError):  # no PIL processor for this architecture
            processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        left_padded(processor.tokenizer)  # the processor pads with its tokenizer
        extra: dict[str, Any] = {}
        if attn_implementation:
            extra["attn_implementation"] = attn_implementation
        vlm: Any = AutoModelForImageTextToText.from_pretrained(
            model, dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code, **extra
        )
        vlm.to(dev)
        vlm.eval()
        engine = cls(vlm, processor, dev)
        engine.check()
        return engine

    def check(self) -> None:
        """A tiny text generation, so a model that cannot generate fails its load."""
        try:
            self.generate(list(PROBE_PROMPTS), PROBE)
        except Exception as error:
            name = getattr(self.model, "name_or_path", "the model")
            raise EngineBroken(f"{name}: a test generation failed: {error_text(error)}") from error

    def check_fast_path(self) -> None:
        """The fast path is the text engine's; this engine always runs plain ``generate``."""
        self.fast_path = False

    def render_chat(self, messages: list[Message]) -> VisionPrompt:  # type: ignore[override]
        """The conversation in the model's format, its media decoded once to count its
        tokens. Raises MediaError (a ValueError) for media that cannot be decoded."""
        media: list[Medium] = []
        chat = [
            {"role": message["role"], "content": _template_content(message["content"], media)}
            for message in messages
        ]
        text = str(
            self.processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        )
        images = [image for medium in media for image in _decode(medium)]
        encoded = self.processor(text=[text], images=images or None)
        tokens = len(encoded["input_ids"][0])
        return VisionPrompt(messages=messages, text=text, media=tuple(media), tokens=tokens)

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        """A rendered conversation's length (image tokens counted), else the text's."""
        texts = [prompt for prompt in prompts if not isinstance(prompt, VisionPrompt)]
        counted = iter(super().count_tokens(texts))
        return [
            prompt.tokens if isinstance(prompt, VisionPrompt) else next(counted)
            for prompt in prompts
        ]

    def truncate(self, prompts: Sequence[Prompt], max_tokens: int, side: str) -> list[Prompt]:
        """Texts cut as the text engine cuts them; a conversation with media is kept whole
        (cutting through an image's tokens breaks it), so a too-long one fails alone."""
        texts = [prompt for prompt in prompts if not isinstance(prompt, VisionPrompt)]
        cut = iter(super().truncate(texts, max_tokens, side))
        return [prompt if isinstance(prompt, VisionPrompt) else next(cut) for prompt in prompts]

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Completion]:
        """Generate for the whole batch at once, its media decoded again; in order."""
        if not prompts:
            return []
        texts = [
            prompt.text if isinstance(prompt, VisionPrompt) else str(prompt) for prompt in prompts
        ]
        images = [
            image
            for prompt in prompts
            if isinstance(prompt, VisionPrompt)
            for medium in prompt.media
            for image in _decode(medium)
        ]
        batch = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        ).to(self.device, dtype=self.model.dtype)
        width = batch["input_ids"].shape[1]
        options: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            **sampling_options(texts, params, self.device),
        }
        with torch.inference_mode():
            output = self.model.generate(**batch, **options)
        ends = eos_ids(self.model, self.tokenizer)
        # Each row through its end of sequence, before a stop text, as the text engine's.
        return [
            self._completion(tokens, int(tokens_in), ends, params.stop)
            for tokens, tokens_in in zip(
                output[:, width:].tolist(), batch["attention_mask"].sum(dim=1).tolist(), strict=True
            )
        ]


def _template_content(content: Any, media: list[Medium]) -> Any:
    """A message's content as chat templates take it: ``{"type": "image"}`` for each image
    and each video frame, text parts as they are. Appends the media to ``media``."""
    if not is_parts(content):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == TEXT:
            parts.append({"type": "text", "text": part[TEXT]})
        elif kind == IMAGE_URL:
            media.append((IMAGE_URL, part_url(part), 0))
            parts.append({"type": "image"})
        elif kind == VIDEO_URL:
            frames = int(part[VIDEO_URL].get(FRAMES_KEY) or DEFAULT_VIDEO_FRAMES)
            media.append((VIDEO_URL, part_url(part), frames))
            parts.extend({"type": "image"} for _ in range(frames))
    return parts


def _decode(medium: Medium) -> list[Any]:
    """The images of one medium: the image, or the video's sampled frames."""
    kind, url, frames = medium
    return sample_frames(url, frames) if kind == VIDEO_URL else [load_image(url)]
