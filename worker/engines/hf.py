"""The ``hf`` engine: batched generation with a HuggingFace transformers causal LM.

Prompts are left-padded so every row of a batch ends at the same column and generation
continues from there for all of them at once. Each completion is therefore cut at the
padded prompt length, never at a row's own length (which would leak prompt text into
the answers of every row shorter than the longest).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.media import text_messages
from common.prompts import Chat, Message, Prompt
from common.results import error_text
from worker.engines.base import Completion, EngineBroken, GenerationParams
from worker.engines.sampling import RowSeededSampler, row_seed
from worker.engines.stops import cut_at_stop

#: The torch dtype of each ``--dtype`` name (``common.runconfig.DTYPES``) besides ``auto``.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Tokenizers with no length limit report a huge sentinel (about 1e30) as model_max_length.
_SANE_MAX_LENGTH = 10_000_000

#: Most prompt positions (rows x columns) one prefill pass computes on a CPU; a bigger
#: batch is prefilled row by row (:meth:`HFEngine._prefill_rows_alone`). One padded pass
#: over 16 rows of 700 tokens needs a padding mask (so attention cannot skip the causal
#: half) and moves activations of tens of megabytes through every layer; row by row the
#: prefill of ``bench.batching``'s batches took 3.5-4.0 s against 4.6-5.2 s, with the same
#: tokens out. Small batches stay one pass, which is faster for them. A GPU prefills in
#: one pass (not measured there; ``FLEET_PREFILL_TOKENS`` sets it).
CPU_PREFILL_TOKENS = 4096

#: The load-time check of the fast path: two prompts of different lengths (one padded),
#: a few greedy tokens.
PROBE_PROMPTS = ("Hello", "The quick brown fox jumps over the lazy dog")
PROBE = GenerationParams(max_new_tokens=4)

log = logging.getLogger(__name__)

#: Warnings this process has logged (each once).
_warned: set[str] = set()


class HFEngine:
    """A causal LM and its tokenizer on one device; build with :meth:`load`."""

    name = "hf"

    def __init__(
        self, model: Any, tokenizer: Any, device: torch.device, *, prefill_tokens: int | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_context = _max_context(model, tokenizer)
        #: Most positions (rows x columns) per prefill pass; None or 0: one pass.
        self.prefill_tokens = prefill_tokens
        #: Whether ``generate`` takes the fast path (``worker.engines.kv_cache``); the
        #: load turns it off unless it gives what plain ``generate`` gives.
        self.fast_path = True

    @classmethod
    def load(
        cls,
        model: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        prefill_tokens: int | None = None,
    ) -> HFEngine:
        """Load ``model`` (a local directory or hub id) onto ``device``, default cuda if seen.

        ``dtype`` is ``auto`` (bfloat16 on a GPU that supports it, else float32), or one of
        :data:`TORCH_DTYPES`. A worker that sees more than one GPU (a GPU group) shards the model
        over them with ``device_map="auto"``. ``trust_remote_code`` runs code shipped with
        a checkpoint, so it is off unless a run asks for it. ``prefill_tokens`` caps the
        positions (rows x columns) of one prefill pass: ``None`` picks
        :data:`CPU_PREFILL_TOKENS` on a CPU and one pass on a GPU, 0 is always one pass.
        The loaded engine is checked (:meth:`check_fast_path`) before it is returned.
        """
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = resolve_dtype(dtype, dev)
        sharded = device is None and dev.type == "cuda" and torch.cuda.device_count() > 1
        tokenizer = left_padded(
            AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        )
        # Any: the auto class returns whichever architecture the checkpoint names.
        extra: dict[str, Any] = {}
        if attn_implementation:
            extra["attn_implementation"] = attn_implementation
        if sharded:
            extra["device_map"] = "auto"
        lm: Any = AutoModelForCausalLM.from_pretrained(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra
        )
        if sharded:
            # Inputs go where the embeddings are; accelerate moves activations onwards.
            dev = lm.get_input_embeddings().weight.device
        else:
            lm.to(dev)
        lm.eval()
        if prefill_tokens is None and dev.type == "cpu":
            prefill_tokens = CPU_PREFILL_TOKENS
        engine = cls(lm, tokenizer, dev, prefill_tokens=prefill_tokens)
        engine.check_fast_path()
        return engine

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        """Each prompt's length in tokens, special tokens included exactly as generate adds them."""
        if not prompts:
            return []  # the tokenizer fails on an empty batch
        encoded = self.tokenizer(self._texts(prompts))
        return [len(ids) for ids in encoded["input_ids"]]

    def render_chat(self, messages: list[Message]) -> str:
        """Through the tokenizer's chat template; a tokenizer without one is an error."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template")
        messages = text_messages(messages)  # media: ValueError, the item fails alone
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def truncate(self, prompts: Sequence[Prompt], max_tokens: int, side: str) -> list[Prompt]:
        """Cut in tokens, special tokens counted; re-tokenising the decoded text is checked."""
        special = len(self.tokenizer("")["input_ids"])
        cut: list[Prompt] = []
        for prompt in self._texts(prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            keep = max(max_tokens - special, 0)
            text = prompt
            # Decoded text can re-tokenise a little longer; shorten until it fits.
            while keep > 0:
                kept = ids[len(ids) - keep :] if side == "left" else ids[:keep]
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
                if self.count_tokens([text])[0] <= max_tokens:
                    break
                keep -= 1
            cut.append(text if keep > 0 else "")
        return cut

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Completion]:
        """Generate for the whole batch at once; one completion per prompt, in order."""
        return self._generate(
            self._texts(prompts),
            params,
            fast_path=self.fast_path,
            prefill_tokens=self.prefill_tokens,
        )

    def _texts(self, prompts: Sequence[Prompt]) -> list[str]:
        """The prompts as texts, a conversation through the chat template."""
        return [self.render_chat(p.messages) if isinstance(p, Chat) else p for p in prompts]

    def check_fast_path(self) -> None:
        """Keep the fast path only if a tiny generation through it matches plain ``generate``.

        Plain ``generate`` failing on it means the engine itself cannot work:
        EngineBroken, so the model's load fails instead of every item one by one.
        """
        self.fast_path = False
        try:
            expected = self._generate(PROBE_PROMPTS, PROBE, fast_path=False, prefill_tokens=None)
        except Exception as error:
            name = getattr(self.model, "name_or_path", "the model")
            raise EngineBroken(f"{name}: a test generation failed: {error_text(error)}") from error
        problem = self._fast_path_problem(expected)
        if problem is None:
            self.fast_path = True
        else:
            _warn_once(f"hf engine: {problem}; using plain generate (same answers, slower)")

    def _fast_path_problem(self, expected: list[Completion]) -> str | None:
        """Why the fast path cannot be trusted with this model and transformers, or None."""
        # Prefilled row by row in passes of two columns where the engine ever prefills so.
        prefill = 2 if self.prefill_tokens else None
        try:
            got = self._generate(PROBE_PROMPTS, PROBE, fast_path=True, prefill_tokens=prefill)
        except Exception as error:  # noqa: BLE001  (whatever changed, plain generate is used)
            return f"the fast path failed ({error_text(error)})"
        if got != expected:
            return f"the fast path gave {got} where plain generate gave {expected}"
        return None

    def _generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        *,
        fast_path: bool,
        prefill_tokens: int | None,
    ) -> list[Completion]:
        if not prompts:
            return []
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        pad_id = self.tokenizer.pad_token_id
        width = batch["input_ids"].shape[1]
        options: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": pad_id}
        if fast_path:
            from worker.engines import kv_cache  # transformers internals: checked at load

            options.update(
                kv_cache.cache_options(
                    self.model,
                    batch["input_ids"],
                    batch["attention_mask"],
                    max_new_tokens=params.max_new_tokens,
                    prefill_tokens=prefill_tokens,
                )
            )
        options.update(sampling_options(prompts, params, self.device))
        if params.stop:
            options.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            # generate derives position ids from the attention mask (its cumsum), so a
            # left-padded row sees the same positions as it would alone.
            output = self.model.generate(**batch, **options)

        new_tokens = output[:, width:].tolist()
        prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
        ends = eos_ids(self.model, self.tokenizer)
        completions = []
        for tokens, tokens_in in zip(new_tokens, prompt_lengths, strict=True):
            completions.append(self._completion(tokens, int(tokens_in), ends, params.stop))
        return completions

    def _completion(
        self, tokens: list[int], tokens_in: int, ends: set[int], stops: Sequence[str]
    ) -> Completion:
        """One row's new tokens as an answer: through its end of sequence, before a stop text."""
        tokens = through_first_eos(tokens, ends)
        finish = "stop" if tokens and tokens[-1] in ends else "length"
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
        stopped = cut_at_stop(tokens, decode, stops)
        if stopped is not None:
            tokens, text, finish = stopped[0], stopped[1], "stop"
        else:
            text = decode(tokens)
        return Completion(text, tokens_in, len(tokens), finish)


def sampling_options(
    prompts: Sequence[str], params: GenerationParams, device: torch.device
) -> dict[str, Any]:
    """``generate`` arguments for greedy, row-seeded or plain sampling."""
    if params.greedy:
        return {"do_sample": False}
    if params.seed is not None:
        # One random stream per row, seeded by the prompt: the same sample in any batch.
        sampler = RowSeededSampler(
            [row_seed(params.seed, prompt) for prompt in prompts],
            temperature=params.temperature,
            top_p=params.top_p,
            device=device,
        )
        return {"do_sample": False, "logits_processor": [sampler]}
    # top_k=0 switches off transformers' default top-k of 50: the run's parameters,
    # not a library default, decide what is sampled.
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def left_padded(tokenizer: Any) -> Any:
    """``tokenizer`` set to pad on the left: all rows of a batch then end where
    generation begins. A tokenizer without a pad token pads with its end token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a ``--dtype`` name on ``device``."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto or one of {sorted(TORCH_DTYPES)}")
    return TORCH_DTYPES[dtype]


def _max_context(model: Any, tokenizer: Any) -> int:
    """The model's context length: its position embeddings, else the tokenizer's limit."""
    config = model.config.get_text_config()
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _SANE_MAX_LENGTH:
        return limit
    raise ValueError("cannot tell the model's context length from its config or tokenizer")


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends generation: the generation config's (one or a list), the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    return ids


def through_first_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """``tokens`` up to and including the first end-of-sequence (what follows is padding)."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens
