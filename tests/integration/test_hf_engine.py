"""The ``hf`` engine on a real (tiny, random) Llama built locally: no hub, CPU only."""

from __future__ import annotations

import logging
import pathlib
import sys
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.settings import Settings
from producer.demo_model import DEMO_CONTEXT_TOKENS
from worker.engines import hf, kv_cache, load_engine
from worker.engines.base import EngineBroken, GenerationParams
from worker.engines.hf import CPU_PREFILL_TOKENS, HFEngine, through_first_eos

GREEDY = GenerationParams(max_new_tokens=12)
SAMPLED = GenerationParams(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=1234)

#: Prompts of very different lengths: a few tokens up to several hundred.
PROMPTS = [
    "Hi",
    "How to use numpy.array?",
    "Context: Send a GET request and return the response.\nQuestion: what is returned?\nAnswer:",
    "Déjà vu: 你好, 世界 🙂 " * 12,
    " ".join(f"Step {i}: call the function with argument {i * 7}." for i in range(40)),
    "The quick brown fox jumps over the lazy dog. " * 30,
]


@pytest.fixture(scope="session")
def demo_dir(demo_model: pathlib.Path) -> pathlib.Path:
    """The suite's demo model (seed 0)."""
    return demo_model


@pytest.fixture(scope="session")
def engine(demo_dir: pathlib.Path) -> HFEngine:
    return HFEngine.load(str(demo_dir), dtype="float32", device="cpu")


def test_demo_model_loads_with_auto_classes(demo_dir: pathlib.Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_dir)
    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_params < 20_000_000
    assert model.dtype == torch.float32
    assert model.config.max_position_embeddings >= 2048
    assert tokenizer.model_max_length == DEMO_CONTEXT_TOKENS
    assert tokenizer.padding_side == "left"
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII, with  double spaces , and a tab\tand a newline\n",
        "Chinese 中文分词测试，标点符号。",
        "emoji 🙂🚀👩‍💻 and flags 🇫🇷",
        "accents: déjà vu, naïve, Ångström, Straße, ñandú",
        " leading and trailing spaces ",
        "",
    ],
)
def test_tokenizer_round_trips_any_utf8(engine: HFEngine, text: str) -> None:
    ids = engine.tokenizer(text)["input_ids"]
    assert engine.tokenizer.decode(ids, skip_special_tokens=True) == text


def test_batched_greedy_equals_one_by_one(engine: HFEngine) -> None:
    lengths = engine.count_tokens(PROMPTS)
    # The point is a very uneven batch: much padding on the short rows.
    assert min(lengths) < 5, lengths
    assert max(lengths) > 200, lengths
    batched = engine.generate(PROMPTS, GREEDY)
    alone = [engine.generate([prompt], GREEDY)[0] for prompt in PROMPTS]
    assert [(c.text, c.tokens_out) for c in batched] == [(c.text, c.tokens_out) for c in alone]
    assert all(0 < c.tokens_out <= GREEDY.max_new_tokens for c in batched)


def test_short_prompt_cut_at_padded_length(engine: HFEngine) -> None:
    short, long = PROMPTS[1], PROMPTS[-1]
    alone = engine.generate([short], GREEDY)[0]
    in_batch = engine.generate([short, long], GREEDY)[0]
    # Cut at the short prompt's own length, the completion would start with padding and
    # the short prompt's tokens; cut at the padded length, it is what the prompt gets alone.
    assert in_batch == alone


def test_completion_never_contains_prompt(engine: HFEngine) -> None:
    # The marked prompt is the shorter row, so it is the one that gets padded. Cut at its
    # own length n instead of the padded width w, its answer would be its prompt's tokens
    # from 2n - w on: with n > (w + max_new_tokens) / 2 that is marker text, not padding,
    # and the marker (6 tokens) is short enough to show whole in any 12 leaked tokens.
    prompts = ["ZEBRA " * 40, PROMPTS[-1]]
    n, w = engine.count_tokens(prompts)
    assert (w + GREEDY.max_new_tokens) / 2 < n < w, (n, w)
    for completion in engine.generate(prompts, GREEDY):
        assert not completion.text.startswith("ZEBRA")
        assert "ZEBRA" not in completion.text
        assert "quick brown fox" not in completion.text


def test_count_tokens_matches_tokenizer_and_tokens_in(engine: HFEngine) -> None:
    counts = engine.count_tokens(PROMPTS)
    assert counts == [len(engine.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert [c.tokens_in for c in engine.generate(PROMPTS, GREEDY)] == counts


def test_tokens_out_stops_at_first_eos(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A random model rarely emits </s>; declare a token it greedily emits an end of
    # sequence, so that the short row stops early and is padded while the long row goes on.
    short, long = PROMPTS[1], PROMPTS[-1]
    batch = engine.tokenizer([short], return_tensors="pt")
    with torch.inference_mode():
        output = engine.model.generate(**batch, max_new_tokens=GREEDY.max_new_tokens)
    generated = output[0, batch["input_ids"].shape[1] :].tolist()
    stop_token = generated[2]
    stop_at = generated.index(stop_token)  # it may already occur earlier
    eos = [engine.tokenizer.eos_token_id, stop_token]
    monkeypatch.setattr(engine.model.generation_config, "eos_token_id", eos)

    stopped = engine.generate([short, long], GREEDY)
    # Through the eos, not the padding generate puts after it while the long row goes on.
    assert stopped[0].tokens_out == stop_at + 1
    assert stopped[0].text == engine.tokenizer.decode(generated[: stop_at + 1])
    assert stopped[0] == engine.generate([short], GREEDY)[0]


def test_sampling_with_same_seed_is_reproducible(engine: HFEngine) -> None:
    first = engine.generate(PROMPTS[:3], SAMPLED)
    second = engine.generate(PROMPTS[:3], SAMPLED)
    assert first == second
    assert all(c.tokens_out > 0 for c in first)


def test_empty_batch(engine: HFEngine) -> None:
    assert engine.generate([], GREEDY) == []
    assert engine.count_tokens([]) == []


@pytest.mark.parametrize("prefill_tokens", [0, 200])
def test_engine_generates_what_plain_generate_does(
    engine: HFEngine, prefill_tokens: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine hands generate its own cache (worker/engines/kv_cache.py) and, on a CPU,
    # prefills a batch over prefill_tokens positions row by row (here in passes of 200
    # columns, the one-token row with nothing to prefill); transformers' defaults (one
    # padded pass, its own cache) must give the same tokens on an uneven batch.
    monkeypatch.setattr(engine, "prefill_tokens", prefill_tokens)
    prompts = [*PROMPTS, "", "Hi there"]  # "" is <s> alone: a one-token row
    batch = engine.tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = engine.model.generate(**batch, max_new_tokens=GREEDY.max_new_tokens)
    width = batch["input_ids"].shape[1]
    expected = [
        engine.tokenizer.decode(
            through_first_eos(row, {engine.tokenizer.eos_token_id}), skip_special_tokens=True
        )
        for row in output[:, width:].tolist()
    ]
    completions = engine.generate(prompts, GREEDY)
    assert [c.text for c in completions] == expected


@pytest.mark.parametrize(("setting", "expected"), [(None, CPU_PREFILL_TOKENS), (0, 0), (512, 512)])
def test_prefill_tokens_setting_reaches_the_engine(
    demo_dir: pathlib.Path, setting: int | None, expected: int
) -> None:
    settings = Settings(prefill_tokens=setting)
    engine = load_engine("hf", str(demo_dir), dtype="float32", settings=settings)
    assert isinstance(engine, HFEngine)
    assert engine.prefill_tokens == expected  # unset: the CPU default, as no GPU is here


@pytest.fixture
def fresh(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> HFEngine:
    """An engine on the session's model, not yet checked; warnings not yet given."""
    monkeypatch.setattr(hf, "_warned", set())
    return HFEngine(engine.model, engine.tokenizer, engine.device, prefill_tokens=200)


def plain_answers(engine: HFEngine) -> list[str]:
    return [c.text for c in engine._generate(PROMPTS, GREEDY, fast_path=False, prefill_tokens=0)]


def test_the_fast_path_is_kept_where_it_matches_plain_generate(fresh: HFEngine) -> None:
    fresh.check_fast_path()
    assert fresh.fast_path
    assert [c.text for c in fresh.generate(PROMPTS, GREEDY)] == plain_answers(fresh)


def refuse_cache(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``generate`` as a transformers release without the ``cache=`` argument would be."""
    generate = model.generate

    def without_cache(*args: Any, **kwargs: Any) -> Any:
        if "cache" in kwargs:
            raise TypeError("generate() got an unexpected keyword argument 'cache'")
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", without_cache)


def test_a_missing_api_falls_back_to_plain_generate_and_warns_once(
    fresh: HFEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_cache(fresh.model, monkeypatch)
    with caplog.at_level(logging.WARNING, logger=hf.__name__):
        fresh.check_fast_path()
        again = HFEngine(fresh.model, fresh.tokenizer, fresh.device, prefill_tokens=200)
        again.check_fast_path()
    assert not fresh.fast_path
    assert not again.fast_path
    [warning] = caplog.records  # one per process, not one per load
    assert "unexpected keyword argument 'cache'" in warning.getMessage()
    assert "using plain generate" in warning.getMessage()
    assert [c.text for c in fresh.generate(PROMPTS, GREEDY)] == plain_answers(fresh)


def test_a_missing_internal_module_falls_back(
    fresh: HFEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As if kv_cache's `from transformers.cache_utils import DynamicLayer` failed.
    monkeypatch.setitem(sys.modules, "worker.engines.kv_cache", None)
    monkeypatch.delattr("worker.engines.kv_cache")
    with caplog.at_level(logging.WARNING, logger=hf.__name__):
        fresh.check_fast_path()
    assert not fresh.fast_path
    assert "import of worker.engines.kv_cache halted" in caplog.text


def test_different_tokens_fall_back_to_plain_generate(
    fresh: HFEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    update = kv_cache.ReservedLayer.update

    def forgetful(self: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = update(self, *args, **kwargs)
        return keys, torch.zeros_like(values)  # a cache that loses what it held

    monkeypatch.setattr(kv_cache.ReservedLayer, "update", forgetful)
    with caplog.at_level(logging.WARNING, logger=hf.__name__):
        fresh.check_fast_path()
    assert not fresh.fast_path
    assert "where plain generate gave" in caplog.text
    assert [c.text for c in fresh.generate(PROMPTS, GREEDY)] == plain_answers(fresh)


def test_a_model_that_cannot_generate_fails_its_load(
    fresh: HFEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(fresh.model, "generate", broken)
    with pytest.raises(EngineBroken, match="a test generation failed: RuntimeError: CUDA error"):
        fresh.check_fast_path()
