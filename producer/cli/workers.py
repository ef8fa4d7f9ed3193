"""Commands that run and look after workers: ``workers``, ``workers list``, ``flower``,
``doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from common.constants import DEFAULT_QUEUE
from common.errors import ConfigError
from common.routing import model_key, model_queue
from common.settings import Settings
from producer.cli.app import app, console, errors, load_settings

workers_app = typer.Typer(
    help="Start one Celery worker per GPU group on this machine (or list the fleet's workers).",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(workers_app, name="workers")

#: Seconds a worker gets to finish its batch after SIGTERM; deploy/ uses the same figure.
DEFAULT_GRACE_S = 120.0


def _resolve_model(engine: str, model: str) -> str:
    """The model reference as ``fleet enqueue`` stores it (a local folder: absolute path)."""
    path = Path(model).expanduser()
    if engine == "hf" and path.exists():
        return str(path.resolve())
    return model


@workers_app.callback()
def workers(
    ctx: typer.Context,
    gpus_per_worker: Annotated[
        int | None, typer.Option(min=1, help="GPUs per worker (the GPU count must divide).")
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="GPU indexes to use, e.g. 0,1,2,3 (default: all).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker count: GPU groups of total/N GPUs, or N CPU workers."),
    ] = None,
    shared: Annotated[
        bool, typer.Option(help="Allow more workers than GPUs (several per GPU).")
    ] = False,
    cpu: Annotated[bool, typer.Option(help="CPU workers even if GPUs are visible.")] = False,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-Q", help="Queue to consume; repeatable.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Pin to this model: consume its model queue (runs enqueued with "
            "--model-queues) and preload it at start."
        ),
    ] = None,
    engine: Annotated[str, typer.Option(help="Engine of --model: hf or echo.")] = "hf",
    preload: Annotated[
        bool, typer.Option(help="With --model: load it when the worker starts.")
    ] = True,
    log_dir: Annotated[
        Path | None, typer.Option(help="One log file per worker here (default: this terminal).")
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="Seconds to finish a batch after Ctrl-C/SIGTERM.")
    ] = DEFAULT_GRACE_S,
) -> None:
    """Launch and supervise workers: one per GPU group, restarted if they crash."""
    if ctx.invoked_subcommand is not None:
        return
    from celery.utils.nodenames import host_format

    from producer.gpus import choose_gpus, detect_gpus, parse_gpu_list
    from producer.launcher import Supervisor, plan_workers

    settings = load_settings()
    if settings.broker_url is None:
        raise ConfigError("FLEET_BROKER_URL is not set: workers need the fleet's broker")
    queues = list(queue or [DEFAULT_QUEUE])
    env: dict[str, str] = {}
    tag = None
    if model is not None:
        ref = _resolve_model(engine, model)
        tag = model_key(ref)
        queues = [model_queue(name, ref) for name in queues] + queues
        if preload:
            env |= {"FLEET_PRELOAD_MODEL": ref, "FLEET_PRELOAD_ENGINE": engine}
    requested = parse_gpu_list(gpus) if gpus is not None else None
    if cpu:
        if requested or gpus_per_worker:
            raise ConfigError("--cpu cannot be combined with --gpus or --gpus-per-worker")
        chosen: list[int] = []
    else:
        detected = [gpu.index for gpu in detect_gpus()]
        if not detected and (requested or gpus_per_worker):
            raise ConfigError("no GPU visible (nvidia-smi lists none); use --workers N for CPU")
        chosen = choose_gpus(detected, requested)
    plan = plan_workers(
        gpus=chosen,
        queues=queues,
        env=env,
        per_worker=gpus_per_worker,
        workers=workers,
        shared=shared,
        tag=tag,
    )
    errors.print(
        f"{len(plan.specs)} {plan.mode} worker(s) on queue(s) {', '.join(queues)}: "
        + ", ".join(host_format(spec.hostname) for spec in plan.specs)
    )
    supervisor = Supervisor(
        plan.specs, log_dir=log_dir, grace_s=grace, say=lambda line: errors.print(line)
    )
    raise typer.Exit(supervisor.run())


@workers_app.command("list")
def list_workers(
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for replies.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The fleet's workers (Celery inspect): GPU group, model loaded, active tasks."""
    from common.celery_app import create_app

    settings = load_settings()
    if settings.broker_url is None:
        settings = settings.model_copy(update={"broker_url": _running_broker_url(settings)})
    celery = create_app(settings)
    found = fleet_workers(celery, timeout=timeout)
    if as_json:
        print(json.dumps(found, indent=2, sort_keys=True))
        return
    if not found:
        errors.print("no worker answered")
        raise typer.Exit(1)
    table = Table("worker", "gpus", "model", "loads", "queues", "active")
    for name, info in sorted(found.items()):
        table.add_row(
            name,
            info["gpu_group"],
            str(info.get("model") or "-"),
            str(info.get("loads", 0)),
            ",".join(info["queues"]),
            ", ".join(f"{task['run_id']}:{task['slice_id']}" for task in info["active"]) or "-",
        )
    console.print(table)


def _running_broker_url(settings: Settings) -> str:
    """The embedded broker of a `fleet run` going on in the state directory, or ConfigError.

    The run holds the broker's lock and keeps its URL in ``broker/url`` while it goes.
    """
    from producer.valkey import BrokerError, claim

    broker_dir = settings.state_dir / "broker"
    if (broker_dir / "url").is_file():
        try:
            claim(broker_dir / "server.lock").close()
        except BrokerError:  # held: a run is going
            return (broker_dir / "url").read_text().strip()
    raise ConfigError(
        f"FLEET_BROKER_URL is not set and no `fleet run` is going in {settings.state_dir}: "
        "no fleet to ask"
    )


def fleet_workers(celery: Any, *, timeout: float) -> dict[str, dict[str, Any]]:
    """Every answering worker: its runtime board, queues and active slices."""
    runtimes = _replies(celery.control.broadcast("fleet_runtime", reply=True, timeout=timeout))
    inspect = celery.control.inspect(timeout=timeout)
    active = inspect.active() or {}
    queues = inspect.active_queues() or {}
    found: dict[str, dict[str, Any]] = {}
    for name, runtime in runtimes.items():
        tasks = [
            {"run_id": (task.get("args") or [None])[0], "slice_id": _slice_of(task)}
            for task in active.get(name, [])
        ]
        found[name] = {
            **runtime,
            "queues": sorted(entry["name"] for entry in queues.get(name, [])),
            "active": tasks,
        }
    return found


def _slice_of(task: dict[str, Any]) -> Any:
    args = task.get("args") or []
    return args[1] if len(args) > 1 else None


def _replies(replies: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {name: body for reply in replies or [] for name, body in reply.items()}


@app.command()
def flower(
    address: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 5555,
    flower_port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="Flower's own port on 127.0.0.1 (0: a free one)."),
    ] = 0,
) -> None:
    """Flower with basic auth on every route (FLOWER_BASIC_AUTH=user:password, required).

    Flower itself listens on 127.0.0.1 only; a gate on ADDRESS:PORT answers 401 to any
    request without the credentials, /metrics included, and hands the others to Flower.
    """
    from producer.flower import serve

    settings = load_settings()
    if settings.broker_url is None:
        raise ConfigError(
            "FLEET_BROKER_URL is not set (for a running `fleet run`: "
            "FLEET_BROKER_URL=$(cat .fleet/broker/url))"
        )
    raise typer.Exit(serve(address=address, port=port, flower_port=flower_port))


@app.command()
def doctor(
    model: Annotated[
        str | None, typer.Option(help="Also check that this model loads (offline).")
    ] = None,
    require_gpu: Annotated[bool, typer.Option(help="Fail when no GPU is visible.")] = False,
) -> None:
    """Check broker, database, GPUs, model and versions; exit 1 if any check fails."""
    from producer.doctor import Level, run_checks

    checks = run_checks(load_settings(), model=model, require_gpu=require_gpu)
    colours = {Level.ok: "green", Level.warn: "yellow", Level.fail: "red"}
    for check in checks:
        level = f"[{colours[check.level]}]{check.level.value:>4}[/]"
        console.print(
            f"{level} {check.name}: {escape(check.detail)}",
            highlight=False,
            soft_wrap=True,
        )
    if any(check.level is Level.fail for check in checks):
        raise typer.Exit(1)
