"""The reserved key/value cache layer: what it returns is what the default layer returns."""

from __future__ import annotations

import torch
from transformers import LlamaConfig
from transformers.cache_utils import DynamicLayer

from worker.engines.kv_cache import ReservedLayer, reserved_cache


def states(batch: int, tokens: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 2, tokens, 4)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def feed(
    layer: DynamicLayer, steps: list[int], batch: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Update ``layer`` with chunks of ``steps`` tokens; return what the last update returned."""
    keys = values = torch.empty(0)
    for seed, tokens in enumerate(steps):
        keys, values = layer.update(*states(batch, tokens, seed=seed))
    return keys, values


def test_same_keys_and_values_as_the_default_layer() -> None:
    steps = [7, 1, 1, 1, 1]
    keys, values = feed(ReservedLayer(positions=11), steps)
    expected_keys, expected_values = feed(DynamicLayer(), steps)
    assert torch.equal(keys, expected_keys)
    assert torch.equal(values, expected_values)
    assert keys.shape == (3, 2, 11, 4)


def test_a_chunked_prompt_and_its_decode_steps_write_into_one_buffer() -> None:
    layer = ReservedLayer(positions=15)
    first_keys, _ = layer.update(*states(3, 4, seed=0))
    for seed, tokens in enumerate([4, 3, 1, 1, 1, 1], start=1):
        keys, _ = layer.update(*states(3, tokens, seed=seed))
        assert keys.data_ptr() == first_keys.data_ptr()  # no new allocation per update
    assert layer.get_seq_length() == 15


def test_running_past_the_reserved_positions_stays_right() -> None:
    steps = [5, 1, 1, 1, 3, 1]
    keys, values = feed(ReservedLayer(positions=7), steps)
    expected_keys, expected_values = feed(DynamicLayer(), steps)
    assert torch.equal(keys, expected_keys)
    assert torch.equal(values, expected_values)


def test_keys_replaced_from_outside_are_taken_over() -> None:
    # Beam search reorders rows and assisted decoding crops: both replace keys/values.
    reserved, default = ReservedLayer(positions=15), DynamicLayer()
    for layer in (reserved, default):
        feed(layer, [6, 1])
        layer.keys = layer.keys[[2, 0]]
        layer.values = layer.values[[2, 0]]
    for layer in (reserved, default):
        layer.crop(-2)
    keys, values = reserved.update(*states(2, 1, seed=9))
    expected_keys, expected_values = default.update(*states(2, 1, seed=9))
    assert torch.equal(keys, expected_keys)
    assert torch.equal(values, expected_values)
    assert keys.shape == (2, 2, 6, 4)  # 7 cached, 2 cropped, 1 added


class _Model:
    """The attributes reserved_cache reads of a model, without building one."""

    def __init__(self, config: LlamaConfig, cache_implementation: str | None = None) -> None:
        self.config = config
        self.generation_config = type("G", (), {"cache_implementation": cache_implementation})()

    def _supports_default_dynamic_cache(self) -> bool:
        return True


def test_reserved_cache_replaces_plain_layers_only() -> None:
    config = LlamaConfig(num_hidden_layers=3)
    cache = reserved_cache(_Model(config), positions=40)
    assert cache is not None
    assert [type(layer) for layer in cache.layers] == [ReservedLayer] * 3
    assert all(layer.positions == 40 for layer in cache.layers if isinstance(layer, ReservedLayer))


def test_a_model_that_names_its_own_cache_keeps_it() -> None:
    model = _Model(LlamaConfig(num_hidden_layers=2), cache_implementation="static")
    assert reserved_cache(model, positions=40) is None
