"""The ``hf`` engine's fast path: the one module that uses transformers internals.

transformers' default ``DynamicCache`` grows each layer's keys and values with
``torch.cat`` at every decode step: a new tensor of the whole cache per layer per token.
For a batch of 16 prompts of a few hundred tokens that is tens of megabytes allocated,
page-faulted and copied per step, and on a CPU it was most of a batch's decode time
(``python -m bench.batching`` measures it). :class:`ReservedLayer` allocates the
positions the whole call will fill (padded prompt + ``max_new_tokens``) at the prompt's
first forward pass and writes every later token into that buffer; attention reads a view
of the filled part, so the arithmetic, and the output, are those of the default cache.
A big batch on a CPU is also prefilled row by row into that cache (:func:`prefill_rows_alone`).

What this relies on is not transformers' public contract: ``DynamicLayer`` (subclassed,
with its ``is_initialized``/``lazy_initialization``), ``DynamicCache.layers`` (replaced),
the models' private ``_supports_default_dynamic_cache``, and the ``cache=`` and
``logits_to_keep=`` arguments of ``generate`` and of a model's forward pass. So
``HFEngine.load`` runs a tiny generation through :func:`cache_options` and through plain
``generate``, and on any difference or error uses plain ``generate`` from then on
(``worker.engines.hf``); ``pyproject.toml`` bounds the transformers versions tested.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers of ``positions`` positions.

    ``keys``/``values`` stay what ``DynamicLayer`` promises: tensors of
    ``[batch, heads, filled, head_dim]`` (views into the buffers). Anything that replaces
    them from outside (``crop``, beam reordering, batch selection) is noticed at the next
    update, which moves the new tensors into fresh buffers; running out of positions does
    the same with twice as many. Either way the result is right, only slower.
    """

    def __init__(self, positions: int) -> None:
        super().__init__()
        self.positions = positions
        # Nothing allocated yet: the first update knows the batch's shape.
        self._key_buffer = self._value_buffer = torch.empty(0, 0, 0, 0)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self.keys, self.values
        assert keys is not None  # set by lazy_initialization, dropped only by reset
        assert values is not None
        filled = keys.shape[-2] if keys.numel() else 0
        needed = filled + key_states.shape[-2]
        handed_out = _is_view_of(keys, self._key_buffer) and _is_view_of(values, self._value_buffer)
        if not handed_out or needed > self._key_buffer.shape[-2]:
            if not filled:
                keys, values = key_states, value_states  # shapes to copy, nothing cached yet
            self.positions = max(self.positions, needed, 2 * self._key_buffer.shape[-2])
            self._move_into_buffers(keys, values, filled, self.positions)
        self._key_buffer[:, :, filled:needed] = key_states
        self._value_buffer[:, :, filled:needed] = value_states
        self.keys = self._key_buffer[:, :, :needed]
        self.values = self._value_buffer[:, :, :needed]
        return self.keys, self.values

    def _move_into_buffers(
        self, keys: torch.Tensor, values: torch.Tensor, filled: int, capacity: int
    ) -> None:
        """Fresh buffers of ``capacity`` positions, the first ``filled`` copied in."""
        batch, heads, _, key_dim = keys.shape
        self._key_buffer = keys.new_empty((batch, heads, capacity, key_dim))
        self._value_buffer = values.new_empty((batch, heads, capacity, values.shape[-1]))
        self._key_buffer[:, :, :filled] = keys[:, :, :filled]
        self._value_buffer[:, :, :filled] = values[:, :, :filled]


def _is_view_of(tensor: torch.Tensor, buffer: torch.Tensor) -> bool:
    """Whether ``tensor`` is ``buffer[:, :, :n]`` for some ``n`` (same storage, start, strides)."""
    return (
        tensor.data_ptr() == buffer.data_ptr()
        and tensor.stride() == buffer.stride()
        and tensor.shape[:2] == buffer.shape[:2]
    )


def reserved_cache(model: Any, positions: int) -> DynamicCache | None:
    """A cache for one ``generate`` call of ``model`` that will fill ``positions`` positions.

    ``None`` where ``generate`` should build its own: a model without the standard cache,
    or one whose generation config names a cache implementation of its own. Layers that
    are not plain ``DynamicLayer`` (sliding-window attention, for one) are kept as they are.
    """
    generation_config = getattr(model, "generation_config", None)
    if getattr(generation_config, "cache_implementation", None) is not None:
        return None
    # A private method of transformers' models: a model that lacks it is left to generate.
    supports_dynamic_cache = getattr(model, "_supports_default_dynamic_cache", None)
    if model.config.is_encoder_decoder or supports_dynamic_cache is None:
        return None
    if not supports_dynamic_cache():
        return None
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    cache.layers = [
        ReservedLayer(positions) if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


def fully_reserved(cache: DynamicCache) -> bool:
    """Whether every layer of ``cache`` is a :class:`ReservedLayer` (plain full attention)."""
    return all(isinstance(layer, ReservedLayer) for layer in cache.layers)


def stitch_rows(cache: DynamicCache, rows: list[tuple[int, DynamicCache]], columns: int) -> None:
    """Fill the empty ``cache`` of a batch from caches computed one row at a time.

    ``rows`` holds, for each row of the batch, the column where its tokens start once
    left-padded to ``columns`` and the cache of those tokens alone. Positions before
    that column are zeros, which the batch's attention mask hides.
    """
    for index, layer in enumerate(cache.layers):
        # Any: transformers types a cache's layers as a union that includes layers
        # without keys; these are plain full-attention layers (see fully_reserved).
        own: list[tuple[int, Any]] = [(offset, part.layers[index]) for offset, part in rows]
        widest = next(row_layer for offset, row_layer in own if offset == 0)
        batch_shape = (len(rows), widest.keys.shape[1], columns)
        zero = widest.keys.new_zeros(())
        # Zeros expanded, not allocated: the update fills the layer's own buffers with
        # them and returns views of those, which the rows are then written into.
        target: Any = layer
        keys, values = target.update(
            zero.expand(*batch_shape, widest.keys.shape[3]),
            zero.expand(*batch_shape, widest.values.shape[3]),
        )
        for row, (offset, row_layer) in enumerate(own):
            if offset < columns:  # a one-token prompt has nothing cached before its last token
                keys[row, :, offset:] = row_layer.keys[0]
                values[row, :, offset:] = row_layer.values[0]


def cache_options(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    prefill_tokens: int | None,
) -> dict[str, Any]:
    """Extra ``generate`` arguments for one batch: a reserved cache, prefilled row by row
    when the batch has more than ``prefill_tokens`` positions; empty where ``generate``
    should build its own cache."""
    width = input_ids.shape[1]
    cache = reserved_cache(model, width + max_new_tokens)
    if cache is None:
        return {}
    big = prefill_tokens and input_ids.shape[0] * width > prefill_tokens
    if big and fully_reserved(cache):
        assert prefill_tokens
        prefill_rows_alone(model, input_ids, attention_mask, cache, prefill_tokens)
    return {"cache": cache}


def prefill_rows_alone(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache,
    prefill_tokens: int,
) -> None:
    """Fill ``cache`` with each row's prompt but its last token, computed row by row.

    Alone, a row needs no padding mask, so attention skips the causal upper half, and
    its activations stay in the processor's caches (passes of at most
    ``prefill_tokens`` columns); a padded batch gets neither. The rows' keys and
    values go into the batch's cache at their left-padded places, the padding left at
    zero and masked. ``generate`` then computes only the last column, for all rows at
    once, from the cache, exactly as if it had prefilled the batch itself.
    """
    width = input_ids.shape[1]
    rows: list[tuple[int, Any]] = []
    with torch.inference_mode():
        for row, real in enumerate(attention_mask.sum(dim=1).tolist()):
            row_cache = reserved_cache(model, real - 1)
            for start in range(width - real, width - 1, prefill_tokens):
                stop = min(start + prefill_tokens, width - 1)
                model(
                    input_ids=input_ids[row : row + 1, start:stop],
                    cache=row_cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            rows.append((width - real, row_cache))
    stitch_rows(cache, rows, width - 1)
