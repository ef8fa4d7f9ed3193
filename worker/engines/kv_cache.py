"""A key/value cache that reserves room for the whole generation once, instead of per token.

transformers' default ``DynamicCache`` grows each layer's keys and values with
``torch.cat`` at every decode step: a new tensor of the whole cache per layer per token.
For a batch of 16 prompts of a few hundred tokens that is tens of megabytes allocated,
page-faulted and copied per step, and on a CPU it was most of a batch's decode time
(``python -m bench.batching`` measures it). :class:`ReservedLayer` allocates the
positions the whole call will fill (padded prompt + ``max_new_tokens``) at the prompt's
first forward pass and writes every later token into that buffer; attention reads a view
of the filled part, so the arithmetic, and the output, are those of the default cache.
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
