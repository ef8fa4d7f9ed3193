"""The options that describe a job, declared once for every command that starts one.

``fleet run`` and ``fleet enqueue`` take the same job options. They are the fields
of ``JobOptions``; ``job_command`` gives a command those fields as its own Typer
options and hands it one ``JobOptions``. To add a job option, add a field here and
map it in ``run_config``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from common.constants import DEFAULT_QUEUE, ENGINES
from common.errors import ConfigError
from common.permutations import expand
from common.runconfig import (
    AGGREGATES,
    DTYPES,
    INPUT_FORMATS,
    SIDES,
    Batching,
    DatasetOptions,
    Generation,
    RunConfig,
)
from common.settings import Settings
from producer.checkpoints import model_refs
from producer.datasets import dataset_map


@dataclass(frozen=True)
class JobOptions:
    """What a user can ask of a run on the command line (``None``: the setting's default)."""

    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model path or hub id; repeat (or a comma list, hf) for more lanes. A folder "
            "without config.json means its latest step_*/checkpoint-* subfolder.",
        ),
    ] = None
    engine: Annotated[str, typer.Option(help=f"Inference engine: {', '.join(ENGINES)}.")] = "hf"
    template: Annotated[
        str | None,
        typer.Option(
            help='Prompt template, e.g. "Context: {context}\\nQuestion: {query}\\nAnswer:".'
        ),
    ] = None
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Tokens to generate per item.")
    ] = None
    temperature: Annotated[float, typer.Option(min=0.0, help="0 means greedy.")] = 0.0
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Most prompts per forward batch.")
    ] = None
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Most tokens per batch (padded prompts + new tokens)."),
    ] = None
    max_padding: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Largest share of a batch that may be padding."),
    ] = 0.25
    slice_size: Annotated[int | None, typer.Option(min=1, help="Items per slice (one task).")] = (
        None
    )
    sort_by_length: Annotated[
        bool,
        typer.Option(help="Slices group prompts of similar length; output stays in input order."),
    ] = False
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16.")] = None
    truncate: Annotated[
        str | None,
        typer.Option(
            help="Too-long prompts: left or right drops that end; unset fails them (too_long)."
        ),
    ] = None
    on_too_long: Annotated[
        str | None,
        typer.Option(
            help="fail (each too-long prompt fails alone, too_long) or truncate (as --truncate "
            "left unless --truncate says right)."
        ),
    ] = None
    json_schema: Annotated[
        Path | None, typer.Option(help="JSON Schema file the answers must match.")
    ] = None
    pydantic: Annotated[
        str | None, typer.Option(help="module:Model whose JSON Schema the answers must match.")
    ] = None
    retries_on_invalid: Annotated[
        int, typer.Option(min=0, help="Extra generations of an answer the schema rejects.")
    ] = 0
    system: Annotated[
        str | None, typer.Option(help="System prompt; items then go through the chat template.")
    ] = None
    attn_implementation: Annotated[
        str | None, typer.Option(help="transformers attn_implementation, e.g. sdpa.")
    ] = None
    trust_remote_code: Annotated[
        bool, typer.Option(help="Run code shipped with the checkpoint (off unless asked).")
    ] = False
    skip_invalid: Annotated[
        bool,
        typer.Option(help="Enqueue the valid records and record the rejects as failed items."),
    ] = False
    reference_field: Annotated[
        str | None, typer.Option(help="Field holding the reference answer.")
    ] = None
    queue: Annotated[str, typer.Option(help="Broker queue the run's slices go to.")] = DEFAULT_QUEUE
    permutation: Annotated[
        list[str] | None,
        typer.Option(
            help="Input permutation of the lanes: identity, cyclic-digits[@K], "
            "shuffle-choices[@S] or module:function; repeat for more lanes."
        ),
    ] = None
    permutations: Annotated[
        int | None,
        typer.Option(min=1, help="K lanes per model and --permutation kind: kind@0..kind@K-1."),
    ] = None
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="name=path of an input file; repeat for more datasets."),
    ] = None
    scorer: Annotated[
        str | None,
        typer.Option(
            help="exact, normalized, contains, regex:PATTERN, numeric, json-field:PATH or "
            "module:function (needs --reference-field)."
        ),
    ] = None
    aggregate: Annotated[
        str | None,
        typer.Option(help="How an item's lanes combine: any (default), all, majority or mean."),
    ] = None
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Keep N records per dataset (a stable subset under --seed)."),
    ] = None
    from_run: Annotated[
        str | None,
        typer.Option(help="Pipeline stage: the inputs are this completed run's answers."),
    ] = None
    max_attempts: Annotated[
        int | None,
        typer.Option(min=1, help="Attempts per item (worker deaths count) before quarantine."),
    ] = None
    max_line_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Longest input line, in bytes; a longer one is refused unparsed."),
    ] = None
    keep_prompts: Annotated[
        bool,
        typer.Option(
            help="Store each result's prompt as the model got it (chat template, schema "
            "instruction, permutation); exported as rendered_prompt."
        ),
    ] = False
    max_image_pixels: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most pixels (width x height) of an input image, checked at enqueue."
        ),
    ] = None
    video_frames: Annotated[
        int | None,
        typer.Option(min=1, help="Frames sampled from each input video, evenly spaced."),
    ] = None
    input_format: Annotated[
        str,
        typer.Option(
            help="auto (an OpenAI Batch file is told by its first line), fleet or openai."
        ),
    ] = "auto"


#: Options whose text understands ``\\n``, ``\\t`` and ``\\\\`` on the command line, where a
#: shell gives no easy way to type a newline.
ESCAPED = ("template", "system")

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """``\\n`` -> newline, ``\\t`` -> tab, ``\\\\`` -> one backslash; other backslashes stay."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        following = text[index + 1 : index + 2]
        if char == "\\" and following in _ESCAPES:
            out.append(_ESCAPES[following])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def job_command(command: Callable[..., None]) -> Callable[..., None]:
    """Replace ``command``'s ``options: JobOptions`` parameter by the JobOptions fields.

    Typer reads a command's signature and annotations; the wrapper shows it the
    command's own parameters followed by every JobOptions field, and calls the
    command with those fields gathered into one JobOptions.
    """
    own = inspect.signature(command, eval_str=True)
    own_hints = get_type_hints(command, include_extras=True)
    option_hints = get_type_hints(JobOptions, include_extras=True)
    defaults = inspect.signature(JobOptions).parameters
    names = [field.name for field in fields(JobOptions)]
    params = [param for param in own.parameters.values() if param.name != "options"]
    params += [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=defaults[name].default,
            annotation=option_hints[name],
        )
        for name in names
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        for name in ESCAPED:
            if kwargs.get(name) is not None:
                kwargs[name] = unescape(kwargs[name])
        options = JobOptions(**{name: kwargs.pop(name) for name in names})
        command(options=options, **kwargs)

    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{name: hint for name, hint in own_hints.items() if name != "options"},
        **{name: option_hints[name] for name in names},
    }
    return wrapper


def run_config(
    settings: Settings,
    options: JobOptions,
    dataset_options: dict[str, DatasetOptions] | None = None,
) -> RunConfig:
    """The RunConfig a job's options ask for, defaults filled in from the settings.

    ``dataset_options``: a run file's per-dataset template, reference field and scorer.
    """

    if options.engine not in ENGINES:
        raise ConfigError(f"unknown engine {options.engine!r}; known: {', '.join(ENGINES)}")
    if not options.model:
        raise ConfigError("give at least one --model")
    if options.aggregate not in (None, *AGGREGATES):
        raise ConfigError(
            f"--aggregate {options.aggregate!r}: expected one of {', '.join(AGGREGATES)}"
        )
    dtype = options.dtype or settings.dtype
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    truncate = length_policy(options.truncate, options.on_too_long)
    if options.input_format not in INPUT_FORMATS:
        raise ConfigError(
            f"--input-format {options.input_format}: expected one of {', '.join(INPUT_FORMATS)}"
        )
    config = RunConfig(
        engine=options.engine,
        models=model_refs(options.engine, options.model),
        template=options.template,
        generation=Generation(
            max_new_tokens=options.max_new_tokens or settings.max_new_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed,
        ),
        batching=Batching(
            batch_size=options.batch_size or settings.batch_size,
            max_batch_tokens=options.max_batch_tokens or settings.max_batch_tokens,
            max_padding=options.max_padding,
        ),
        slice_size=options.slice_size or settings.slice_size,
        permutations=expand(options.permutation or [], options.permutations),
        reference_field=options.reference_field,
        scorer=options.scorer,
        aggregate=options.aggregate or "any",
        datasets=dataset_map(options.dataset or []),
        sample=options.sample,
        sample_seed=options.seed or 0,
        from_run=options.from_run,
        max_attempts=options.max_attempts or settings.max_attempts,
        sort_by_length=options.sort_by_length,
        dtype=dtype,
        truncate=truncate,
        output_schema=_output_schema(options),
        retries_on_invalid=options.retries_on_invalid,
        system=options.system,
        attn_implementation=options.attn_implementation,
        trust_remote_code=options.trust_remote_code,
        max_line_bytes=options.max_line_bytes or settings.max_line_bytes,
        dataset_options=dataset_options or {},
        keep_prompts=options.keep_prompts,
        **_media_options(options),
        input_format=options.input_format,
    )
    if options.aggregate is not None and not config.scored():
        raise ConfigError(
            f"--aggregate {options.aggregate} combines the scores of an item's lanes: give "
            "--scorer and --reference-field (nothing was enqueued)"
        )
    return config


def _media_options(options: JobOptions) -> dict[str, int]:
    """The image and video options given (the rest keep RunConfig's defaults)."""
    given = {"max_image_pixels": options.max_image_pixels, "video_frames": options.video_frames}
    return {name: value for name, value in given.items() if value is not None}


def _output_schema(options: JobOptions) -> dict[str, Any] | None:
    """The schema of ``--json-schema`` or ``--pydantic``; jsonschema imported only then."""
    if options.json_schema is None and options.pydantic is None:
        return None
    from producer.output_schema import output_schema

    return output_schema(options.json_schema, options.pydantic)


def length_policy(truncate: str | None, on_too_long: str | None) -> str | None:
    """The side to truncate too-long prompts on, or None to fail them; contradictions refused."""
    if truncate not in (None, *SIDES):
        raise ConfigError(f"--truncate {truncate}: expected {' or '.join(SIDES)}")
    if on_too_long not in (None, "fail", "truncate"):
        raise ConfigError(f"--on-too-long {on_too_long}: expected fail or truncate")
    if on_too_long == "fail" and truncate is not None:
        raise ConfigError(f"--on-too-long fail contradicts --truncate {truncate}")
    if on_too_long == "truncate":
        return truncate or "left"
    return truncate
