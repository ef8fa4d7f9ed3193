"""Writing OpenAI Batch output files: one response line per request, errors apart.

A request that got its answer becomes ``{"id", "custom_id", "response": {"status_code":
200, "request_id", "body": <chat.completion | text_completion>}, "error": null}``, the
body as OpenAI's API returns it: ``choices[0]`` holds the answer (``message`` or
``text``) and its ``finish_reason`` (``stop`` or ``length``, as the engine saw it), and
``usage`` the stored token counts. Every other request goes to the error file as
``{"id", "custom_id", "response": {"status_code", "request_id", "body": {"error"}} or
null, "error": {"code", "message"}}``: its ``error_kind`` mapped to a status and a code
(:data:`ERROR_CODES`); a line refused at enqueue, or one with no result yet, has no
response. Lines follow the input's order (OpenAI's own order is arbitrary).

A request naming a model (``body.model``) is answered from that model's lane; any
other from the run's first lane. Works for any run: an item that did not come from an
OpenAI Batch file is a chat request if it has ``messages``, else a completion.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine

from common.db import session_scope
from common.errors import ConfigError
from common.models import Item, Lane, Result
from common.queries import iter_results, lanes_of, resolve_run
from common.request_settings import RequestSettings
from common.results import ErrorKind
from common.runconfig import RunConfig
from producer.export import refuse_other_kind

CHAT_URL = "/v1/chat/completions"

#: HTTP status and error code of each ``error_kind``.
ERROR_CODES: dict[str, tuple[int, str]] = {
    ErrorKind.invalid_input: (400, "invalid_request"),
    ErrorKind.too_long: (400, "context_length_exceeded"),
    ErrorKind.invalid_output: (500, "invalid_output"),
    ErrorKind.oom: (500, "out_of_memory"),
    ErrorKind.engine: (500, "engine_error"),
    ErrorKind.quarantined: (500, "quarantined"),
    ErrorKind.api: (502, "upstream_error"),
    ErrorKind.rate_limit: (429, "rate_limit_exceeded"),
    ErrorKind.timeout: (504, "timeout"),
}

#: Status and code of an error kind this module does not know.
OTHER_ERROR = (500, "server_error")


@dataclass(frozen=True)
class Written:
    """What an export wrote: the run, its answered requests and its failed ones."""

    run_id: str
    responses: int
    errors: int


def write_openai(db: Engine, *, run_ref: str, output: Path, errors: Path | None) -> Written:
    """The run's responses to ``output``, its failures to ``errors`` (or ``output`` too).

    Each file is written beside its place and renamed over it when complete: an
    interrupted export leaves the previous file, never half of one.
    """
    paths = check_destinations(output, errors)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = [path.with_name(path.name + ".partial") for path in paths]
    with ExitStack() as stack:
        outs = [stack.enter_context(path.open("w", encoding="utf-8")) for path in partial]
        written = stream_openai(db, run_ref=run_ref, out=outs[0], errors_out=outs[-1])
    for done, path in zip(partial, paths, strict=True):
        os.replace(done, path)
    return written


def check_destinations(output: Path, errors: Path | None) -> list[Path]:
    """The files an export writes; ConfigError for one that holds something else, or for
    an error file that is the output file."""
    if errors is not None and errors.resolve() == output.resolve():
        raise ConfigError(f"--errors {errors} is the output file; give another, or leave it out")
    paths = [output] if errors is None else [output, errors]
    for path in paths:
        refuse_other_kind(path, "jsonl")
    return paths


def stream_openai(db: Engine, *, run_ref: str, out: TextIO, errors_out: TextIO) -> Written:
    """One line per request, in input order: answers to ``out``, failures to ``errors_out``."""
    responses = failures = 0
    with session_scope(db) as session:
        run = resolve_run(session, run_ref)
        config = RunConfig.model_validate(run.config)
        lanes = lanes_of(session, run_id=run.id)
        for item, lane, result in _answers(iter_results(session, run_id=run.id), lanes):
            line = response_line(run.id, item, lane, result, config)
            ok = line["error"] is None
            (out if ok else errors_out).write(json.dumps(line, ensure_ascii=False) + "\n")
            responses += ok
            failures += not ok
    return Written(run.id, responses, failures)


def write_requested(db: Engine, *, run_id: str) -> str | None:
    """The OpenAI Batch output ``fleet batch`` asked of this run, written; what was
    written, in words, or None when none was asked for."""
    with session_scope(db) as session:
        config = RunConfig.model_validate(resolve_run(session, run_id).config)
    asked = config.openai_export
    if asked is None:
        return None
    errors = Path(asked.errors) if asked.errors else None
    written = write_openai(db, run_ref=run_id, output=Path(asked.output), errors=errors)
    return described(written, Path(asked.output), errors)


def described(written: Written, output: Path, errors: Path | None) -> str:
    """``N responses written to OUT; M errors to ERR``."""
    where = f"{errors}" if errors is not None else f"{output} too"
    return f"{written.responses} responses written to {output}; {written.errors} errors to {where}"


def _answers(
    rows: Iterator[tuple[Item, int, Result | None]], lanes: list[Lane]
) -> Iterator[tuple[Item, Lane, Result | None]]:
    """Each item once, with the result of the lane that answers it."""
    by_index = {lane.index: lane for lane in lanes}
    for item, index, result in rows:
        lane = by_index[index]
        if lane is _lane_for(item, lanes):
            yield item, lane, result


def _lane_for(item: Item, lanes: list[Lane]) -> Lane:
    """The first lane of the model the request names, else the run's first lane."""
    asked = item.payload.get("model")
    for lane in lanes:
        if asked is not None and asked in (lane.model, Path(lane.model).name):
            return lane
    return lanes[0]


def response_line(
    run_id: str, item: Item, lane: Lane, result: Result | None, config: RunConfig
) -> dict[str, Any]:
    """The output line of one request: its response, or its error."""
    name = f"{run_id}-{item.seq}"
    line: dict[str, Any] = {"id": f"batch_req_{name}", "custom_id": item.custom_id}
    if result is None:
        return line | _failure(None, "pending", "no result yet: the run is not finished")
    if item.reject_reason is not None:
        return line | _failure(None, "invalid_request", item.reject_reason)
    status, code = ERROR_CODES.get(result.error_kind or "", OTHER_ERROR)
    if not result.ok:
        message = result.error_message or (result.error_kind or "failed")
        error_body = {"error": {"message": message, "type": code, "param": None, "code": code}}
        response = {"status_code": status, "request_id": f"req_{name}", "body": error_body}
        return line | _failure(response, code, message)
    body = _completion_body(name, item, lane, result, config)
    response = {"status_code": 200, "request_id": f"req_{name}", "body": body}
    return line | {"response": response, "error": None}


def _failure(response: dict[str, Any] | None, code: str, message: str) -> dict[str, Any]:
    return {"response": response, "error": {"code": code, "message": message}}


def _completion_body(
    name: str, item: Item, lane: Lane, result: Result, config: RunConfig
) -> dict[str, Any]:
    """A ``chat.completion`` or ``text_completion`` object, as the API returns it."""
    text = result.answer or ""
    if result.parsed is not None:  # a structured answer: the JSON found, without prose
        text = json.dumps(result.parsed, ensure_ascii=False)
    finish = _finish_reason(item, result, config)
    chat = item.payload.get("url") == CHAT_URL or "messages" in item.payload
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{name}",
        "object": "chat.completion" if chat else "text_completion",
        "created": _unix_time(result.created_at),
        "model": item.payload.get("model") or lane.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": result.tokens_in,
            "completion_tokens": result.tokens_out,
            "total_tokens": result.tokens_in + result.tokens_out,
        },
    }


def _finish_reason(item: Item, result: Result, config: RunConfig) -> str:
    """As the engine saw it; else ``length`` when the answer used all its tokens."""
    if result.finish_reason in ("stop", "length"):
        return result.finish_reason
    own = RequestSettings.of(item.params)
    limit = (own.max_new_tokens if own else None) or config.generation.max_new_tokens
    return "length" if result.tokens_out >= limit else "stop"


def _unix_time(moment: datetime) -> int:
    """Seconds since the epoch; a time read back without its zone (SQLite) is UTC."""
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
