"""A tiny, real, randomly initialised causal LM for demos and tests.

The fleet runs HuggingFace models; tests and demos cannot download one. This module builds
a few-million-parameter Llama with random weights and a byte-level BPE tokenizer trained on
a paragraph of text that lives in this file, and saves both with ``save_pretrained``. The
result loads with ``AutoModelForCausalLM``/``AutoTokenizer`` like any checkpoint, so the
``hf`` engine runs its real code path on it. Its output is gibberish, deterministically.
"""

from __future__ import annotations

import pathlib
from typing import Any

#: Context length of the demo model, in tokens: ``max_position_embeddings`` and the
#: tokenizer's ``model_max_length``.
DEMO_CONTEXT_TOKENS = 2048

#: Special tokens, in id order: pad = 0, bos = 1, eos = 2 (Llama's bos/eos ids).
PAD, BOS, EOS = "<pad>", "<s>", "</s>"

#: Target vocabulary size; the corpus is small, so the trainer may stop a little short.
_VOCAB_SIZE = 1024

# What the BPE merges are learnt from. Only the merges depend on it: the byte alphabet
# makes every UTF-8 string encodable whatever the corpus holds.
_CORPUS = """\
The function returns a new array of the given shape and type, filled with zeros.
Use this method to read a comma separated values file into a data frame. The first
line is taken as the header unless you pass header=None. Missing values are read as NaN.
Send a GET request to the server and return the response object. The response has a
status code, headers, and a body that can be read as text or decoded as JSON.
A tensor is a multi-dimensional matrix containing elements of a single data type.
Parameters: input (Tensor) the input tensor. dim (int) the dimension to reduce.
keepdim (bool) whether the output tensor has dim retained or not. Returns: a tensor.
Examples: >>> import numpy as np >>> a = np.array([1, 2, 3]) >>> a.shape (3,)
This documentation describes the public interface of the library. Deprecated since
version 1.2: use the new keyword argument instead. Raises ValueError if the value is
out of range, and TypeError if the argument is not a string or a sequence of strings.
How do I use this function? What does the parameter mean? Which version added it?
The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.
In the beginning the model knows nothing; after training it predicts the next token.
Question: what is the default value of the timeout? Answer: there is no timeout by
default, so the call may wait forever unless a timeout is given in seconds.
Context: the configuration file is read once at start-up and cached for the session.
A worker takes a batch of prompts from the queue, runs the model, and writes each
completion to the results table together with the number of tokens it used.
Install the package with pip, then import it and call the main entry point. Optional
dependencies are listed in the extras; without them some features are unavailable.
Returns None if the key is missing. The dictionary is copied, never modified in place.
Iterate over the rows of the frame as (index, Series) pairs; this is slow for large
frames, so prefer vectorised operations such as apply, groupby, merge and concat.
The session object persists cookies and connection pools across requests, which makes
repeated calls to the same host much faster. Close it when you are done with it.
Compute the gradient of the loss with respect to every parameter, then take one step
of the optimizer. Remember to zero the gradients before the next backward pass.
Weather report: sunny in the morning, with clouds and light rain expected by evening.
Chapter one. It was a cold bright day in April, and the clocks were striking thirteen.
"""


#: A minimal chat format: ``<|role|>`` headers, then the assistant's turn opened.
DEMO_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_demo_model(target: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Build the demo model and tokenizer into ``target`` (created if needed); return it.

    The same ``seed`` gives the same weights and the same tokenizer, byte for byte.
    """
    # Imported here so that importing this module (e.g. by the CLI) stays cheap.
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    target = pathlib.Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = demo_tokenizer()
    config = demo_text_config(tokenizer)
    torch.manual_seed(seed)
    # float32 whatever torch's default dtype happens to be in the calling process.
    model = LlamaForCausalLM(config).float().eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )

    # A chat template, so that chat items (``messages``, ``--system``) work on the demo too.
    tokenizer.chat_template = DEMO_CHAT_TEMPLATE
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def demo_tokenizer() -> Any:
    """The demo's byte-level BPE tokenizer (a ``PreTrainedTokenizerFast``), built the
    same, byte for byte, every time."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE: the pre-tokenizer maps every byte to one of 256 symbols, all of which
    # are in the initial alphabet, so nothing is ever unknown and decode(encode(s)) == s.
    # add_prefix_space=False keeps that round trip exact (no space invented at the start).
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    bos_id = core.token_to_id(BOS)
    # Like Llama, every encoded text starts with <s>: the model always sees a first token,
    # even for an empty prompt.
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )

    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=DEMO_CONTEXT_TOKENS,
        # The default clean-up rewrites " ." to "." and the like, which breaks round trips.
        clean_up_tokenization_spaces=False,
    )


def demo_text_config(tokenizer: Any) -> Any:
    """The demo's Llama config (a ``LlamaConfig``) for ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig

    bos_id, eos_id, pad_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=DEMO_CONTEXT_TOKENS,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
