"""A tiny, real, randomly initialised vision-language model for demos and tests.

A Llava: a four-layer CLIP vision tower on 32 x 32 images in 8 x 8 patches (16 image
tokens per image), a projector, and the demo's text model (``producer.demo_model``:
same Llama shape, same byte-level tokenizer, plus an ``<image>`` token). Its processor
is a ``LlavaProcessor`` with the slow (PIL) CLIP image processor and a chat template
that takes OpenAI-style content parts, so it builds and runs offline without
torchvision. Saved with ``save_pretrained``, it loads with ``AutoProcessor`` and
``AutoModelForImageTextToText`` like any checkpoint. Its output is gibberish,
deterministically.
"""

from __future__ import annotations

import pathlib

#: The image token the processor expands into one token per image patch.
IMAGE_TOKEN = "<image>"

#: Side of the square the image processor resizes and crops every image to, in pixels.
IMAGE_SIDE = 32

#: Side of a vision patch: (32 / 8)^2 = 16 tokens per image.
PATCH = 8

#: The demo chat format with content parts: ``{"type": "image"}`` becomes ``<image>``.
VISION_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{{ '\\n' }}{% endif %}"
)


def build_demo_vision_model(target: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Build the demo vision model and its processor into ``target``; return it.

    The same ``seed`` gives the same weights and the same processor.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from producer.demo_model import demo_text_config, demo_tokenizer

    target = pathlib.Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = demo_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIDE},
            crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        ),
        tokenizer=tokenizer,
        patch_size=PATCH,
        # The tower's CLS position is dropped ("default"): one token per patch.
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VISION_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    text_config = demo_text_config(tokenizer)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=2,
            image_size=IMAGE_SIDE,
            patch_size=PATCH,
            projection_dim=64,
        ),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).float().eval()
    model.generation_config = GenerationConfig(
        bos_token_id=text_config.bos_token_id,
        eos_token_id=text_config.eos_token_id,
        pad_token_id=text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(target, safe_serialization=True)
    processor.save_pretrained(target)
    return target
