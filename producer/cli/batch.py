"""``fleet batch``: an OpenAI Batch file in, an OpenAI Batch output file out.

The one-shot command ``vllm run-batch`` users know: the input is validated and stored
(every line on its own: ``--skip-invalid`` lets the rest run), run as ``fleet run``
runs it (embedded server and local workers, or the fleet behind ``FLEET_BROKER_URL``),
and exported in the input's order with ``producer.openai_export``. The run keeps the
output's place, so after Ctrl-C ``fleet resume RUN`` finishes it and writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.errors import ConfigError
from producer.cli.app import app, load_settings
from producer.cli.jobs import MaxFailures, Workers, run_to_end
from producer.cli.options import JobOptions, job_command, run_config


@app.command()
@job_command
def batch(
    input_file: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            exists=True,
            dir_okay=False,
            readable=True,
            help="OpenAI Batch input file: one request per line.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="OpenAI Batch output file (one line a request).")
    ],
    errors_file: Annotated[
        Path | None,
        typer.Option("--errors", help="File for the failed requests (default: the output file)."),
    ] = None,
    workers: Workers = 1,
    local_workers: Annotated[
        bool | None,
        typer.Option(help="Spawn local workers (default: yes unless FLEET_BROKER_URL is set)."),
    ] = None,
    max_failures: MaxFailures = None,
    *,
    options: JobOptions,
) -> None:
    """Run an OpenAI Batch file end to end and write its output in input order.

    Exits 1 when the run did not complete, when every request failed, or when more
    failed than --max-failures allows; 130 on Ctrl-C, saying how to resume.
    """
    from common.runconfig import OpenAIExport
    from producer.jobs import StoredJob
    from producer.model_check import check_run_models
    from producer.openai_export import check_destinations
    from producer.runner import create_job, stop_signals
    from producer.verdict import parse_limit

    settings = load_settings()
    limit = parse_limit(max_failures)
    for path in (output, errors_file):
        if path is not None and path.resolve() == input_file.resolve():
            raise ConfigError(f"{path} is the input file: give another place for the output")
    check_destinations(output, errors_file)
    destination = OpenAIExport(
        output=str(output.resolve()),
        errors=str(errors_file.resolve()) if errors_file is not None else None,
    )
    config = run_config(settings, options).model_copy(
        update={"input_format": "openai", "openai_export": destination}
    )
    with stop_signals():  # heard while the model is checked and the input stored, too
        check_run_models(config)
        enqueued = create_job(
            settings,
            input_path=input_file,
            config=config,
            queue=options.queue,
            skip_invalid=options.skip_invalid,
        )
        job = StoredJob(enqueued, config, options.queue)
        run_to_end(
            settings, job, workers=workers, local_workers=local_workers, output=None, limit=limit
        )
