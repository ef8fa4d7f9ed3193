"""What a run was asked to do, stored on the Run row and read back by the workers."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from common.constants import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_VIDEO_FRAMES,
    IDENTITY,
)

#: How the scores of an item's lanes combine into the item's score (``--aggregate``).
Aggregate = Literal["any", "all", "majority", "mean"]
AGGREGATES: tuple[str, ...] = get_args(Aggregate)

#: The weights' dtype (``--dtype``); ``auto`` takes the checkpoint's own.
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(Dtype)

#: Which end of a too-long prompt ``--truncate`` drops: ``left`` its start, ``right`` its end.
Side = Literal["left", "right"]
SIDES: tuple[str, ...] = get_args(Side)


#: How the input files are read (``--input-format``): ``auto`` tells an OpenAI Batch file
#: by its first line.
InputFormat = Literal["auto", "fleet", "openai"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)


class Generation(BaseModel):
    """A run's generation settings; an item's own request may override them
    (``common.request_settings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    #: Texts that end an answer where they first appear (an OpenAI request's ``stop``).
    stop: tuple[str, ...] = ()


class Batching(BaseModel):
    """How a worker packs a slice's items into forward batches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(default=16, ge=1)
    max_batch_tokens: int = Field(default=32768, ge=1)
    #: Largest share of a batch's tokens that may be padding (1.0: no cap).
    max_padding: float = Field(default=0.25, ge=0.0, le=1.0)


class DatasetOptions(BaseModel):
    """A dataset's own prompt and evaluation settings (a run file's ``[datasets.NAME]``);
    each unset one is the run's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str | None = None
    reference_field: str | None = None
    scorer: str | None = None


class OpenAIExport(BaseModel):
    """Where ``fleet batch`` asked for the OpenAI Batch output; ``fleet resume`` writes it too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output: str
    #: The error file; None: errors go to ``output`` as well.
    errors: str | None = None


class RunConfig(BaseModel):
    """Everything that decides a run's answers; stored as ``Run.config``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: str = "hf"
    models: list[str]
    template: str | None = None
    generation: Generation = Generation()
    batching: Batching = Batching()
    slice_size: int = Field(default=64, ge=1)
    #: Every model runs under every permutation: lanes = models x permutations.
    permutations: list[str] = Field(default_factory=lambda: [IDENTITY])
    #: Evaluation (see common/scoring.py and common/evaluation.py).
    reference_field: str | None = None
    scorer: str | None = None
    aggregate: Aggregate = "any"
    #: Dataset name -> input file (or ``run:<id>`` for a pipeline stage).
    datasets: dict[str, str] = Field(default_factory=dict)
    #: Dataset name -> its own template, reference field and scorer.
    dataset_options: dict[str, DatasetOptions] = Field(default_factory=dict)
    sample: int | None = Field(default=None, ge=1)
    sample_seed: int = 0
    #: The run whose results are this run's inputs (``--from-run``).
    from_run: str | None = None

    def lanes(self) -> list[tuple[str, str]]:
        """(model, permutation) of each lane, in lane-index order."""
        return [(model, perm) for model in self.models for perm in self.permutations]

    def template_for(self, dataset: str) -> str | None:
        own = self.dataset_options.get(dataset)
        return own.template if own and own.template is not None else self.template

    def reference_field_for(self, dataset: str) -> str | None:
        own = self.dataset_options.get(dataset)
        return own.reference_field if own and own.reference_field else self.reference_field

    def scorer_for(self, dataset: str) -> str | None:
        own = self.dataset_options.get(dataset)
        return own.scorer if own and own.scorer else self.scorer

    def scored(self) -> bool:
        """Whether any dataset of the run has a scorer."""
        return self.scorer is not None or any(own.scorer for own in self.dataset_options.values())

    #: Times an item may be handed to an engine before it is quarantined.
    max_attempts: int = Field(default=3, ge=1)
    #: Slices group items of similar prompt length (longest first); results stay in
    #: input order.
    sort_by_length: bool = False
    dtype: Dtype = "auto"
    #: A prompt too long for the model: ``None`` fails it, ``left``/``right`` truncates.
    truncate: Side | None = None
    #: JSON Schema the answers must match (``--json-schema`` / ``--pydantic``).
    output_schema: dict[str, Any] | None = None
    #: Extra generations of an item whose answer does not match ``output_schema``.
    retries_on_invalid: int = Field(default=0, ge=0)
    #: System prompt: every item then goes through the tokenizer's chat template.
    system: str | None = None
    #: ``attn_implementation`` passed to transformers (e.g. sdpa, flash_attention_2).
    attn_implementation: str | None = None
    #: Run code shipped with a checkpoint; off unless asked.
    trust_remote_code: bool = False
    #: Longest input line read at enqueue, in bytes (``--max-line-bytes``); a longer
    #: line is refused before it is parsed.
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, ge=1)
    #: Store each result's prompt as the engine rendered it (``--keep-prompts``).
    keep_prompts: bool = False
    #: Most pixels of one input image, checked at enqueue (``--max-image-pixels``).
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    #: Frames a worker samples from each input video (``--video-frames``).
    video_frames: int = Field(default=DEFAULT_VIDEO_FRAMES, ge=1)
    #: How the input files are read: ``openai`` for OpenAI Batch files.
    input_format: InputFormat = "auto"
    #: Files the run's OpenAI Batch output goes to when it ends (``fleet batch``).
    openai_export: OpenAIExport | None = None
