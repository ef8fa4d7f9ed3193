"""compose.yaml and deploy/: they parse, name the services, and use only real settings.

``docker compose config`` and ``kubectl kustomize`` are not available here, so the
files are parsed and checked against the code: every ``FLEET_*`` name they set must
be a field of ``common.settings.Settings`` (a renamed setting fails this test), the
worker command is the one the design fixes, and the shutdown grace agrees everywhere.
No secret has a default, no database or broker port is published beyond 127.0.0.1,
and Flower runs behind the gate that asks for credentials on every route.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import ENV_PREFIX, Settings
from producer.cli.workers import DEFAULT_GRACE_S

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
#: Variables that hold a secret: compose must require them (``${X:?...}``), never default them.
SECRETS = {"REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
FLOWER_COMMAND = ["fleet", "flower", "--address=0.0.0.0", "--port=5555"]
#: Seconds between SIGTERM and SIGKILL everywhere: the launcher's grace plus 10 s.
GRACE_S = int(DEFAULT_GRACE_S) + 10
WORKER_COMMAND = ["celery", "-A", "worker", "worker", "--concurrency=1"]


def fleet_names(text: str) -> set[str]:
    return set(re.findall(r"\bFLEET_[A-Z0-9_]+", text))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((K8S / resource).read_text()) if doc]
    return documents


def test_every_fleet_variable_in_the_deploy_files_is_a_setting() -> None:
    files = [ROOT / "compose.yaml", *K8S.glob("*.yaml"), *(ROOT / "deploy").rglob("*")]
    for path in files:
        if path.is_file():
            unknown = fleet_names(path.read_text()) - SETTINGS
            assert not unknown, f"{path.relative_to(ROOT)} sets {unknown}, not in Settings"


def test_compose_names_its_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"redis", "postgres", "flower", "worker-cpu", "producer"}
    expected |= {f"worker-gpu{index}" for index in range(8)}
    assert set(services) == expected


def test_compose_redis_keeps_its_queue(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in compose["services"]["redis"]["volumes"])
    postgres = compose["services"]["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert {"redis-data", "postgres-data"} <= set(compose["volumes"])


def test_compose_flower_runs_behind_the_gate_with_basic_auth(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["command"] == FLOWER_COMMAND
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert "FLEET_BROKER_URL" in flower["environment"]
    assert flower["ports"] == ["${FLOWER_ADDRESS:-127.0.0.1}:5555:5555"]


def substitutions(text: str) -> list[tuple[str, str]]:
    """Every ``${NAME<op>...}`` of a compose file as (NAME, op); op "" for a bare ``${NAME}``."""
    return re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+]|)", text)


def test_compose_requires_every_secret() -> None:
    lines = (ROOT / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = substitutions(text)
    assert {name for name, _ in used} >= SECRETS
    for name, op in used:
        if name in SECRETS or re.search(r"PASSWORD|SECRET|TOKEN|AUTH", name):
            assert op == ":?", f"${{{name}}} in compose.yaml must be required (:?), not {op!r}"
    assert substitutions("${A:-x} ${B:?y} ${C}") == [("A", ":-"), ("B", ":?"), ("C", "")]


def test_compose_publishes_no_database_or_broker_beyond_loopback(compose: dict[str, Any]) -> None:
    for name in ("redis", "postgres"):
        for port in compose["services"][name].get("ports", []):
            assert isinstance(port, str), f"{name}: long port syntax, check host_ip by hand"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    for name, service in compose["services"].items():
        if name not in ("redis", "postgres", "flower"):
            assert "ports" not in service, f"{name} publishes {service['ports']}"


@pytest.mark.parametrize(("profile", "gpus"), [("gpu1", 1), ("gpu2", 2), ("gpu8", 8)])
def test_compose_one_worker_per_gpu(compose: dict[str, Any], profile: str, gpus: int) -> None:
    services = compose["services"]
    started = sorted(
        name for name, service in services.items() if profile in service.get("profiles", [])
    )
    assert started == [f"worker-gpu{index}" for index in range(gpus)]
    for index in range(gpus):
        service = services[f"worker-gpu{index}"]
        assert service["command"][:5] == WORKER_COMMAND
        assert f"--hostname=gpu{index}@%h" in service["command"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [str(index)]
        assert device["capabilities"] == ["gpu"]
        env = service["environment"]
        assert {"FLEET_BROKER_URL", "FLEET_DATABASE_URL"} <= set(env)
        assert service["stop_grace_period"] == f"{GRACE_S}s"


def test_compose_cpu_profile_and_one_shot_producer(compose: dict[str, Any]) -> None:
    cpu = compose["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert cpu["command"][:5] == WORKER_COMMAND
    assert cpu["environment"]["CUDA_VISIBLE_DEVICES"] == ""
    assert "FLEET_TORCH_THREADS" in cpu["environment"]
    assert "deploy" not in cpu or "resources" not in cpu["deploy"]
    producer = compose["services"]["producer"]
    assert producer["command"][:2] == ["fleet", "enqueue"]
    assert producer["restart"] == "no"


def test_k8s_set_names_every_part(k8s: list[dict[str, Any]]) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in k8s}
    assert {
        ("StatefulSet", "redis"),
        ("StatefulSet", "postgres"),
        ("Deployment", "flower"),
        ("Deployment", "fleet-worker"),
        ("Service", "redis"),
        ("Service", "postgres"),
        ("Service", "flower"),
    } <= kinds


def test_k8s_secrets_are_generated_from_an_uncommitted_file() -> None:
    """No password in the manifests: kustomize builds the Secret from secrets.env, which
    git ignores and an operator makes; without it the build fails instead of defaulting."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator == {"name": "fleet-secrets", "envs": ["secrets.env"]}
    assert "deploy/k8s/secrets.env" in (ROOT / ".gitignore").read_text().splitlines()
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path.name} ships a Secret"


def test_k8s_flower_runs_behind_the_gate(k8s: list[dict[str, Any]]) -> None:
    (flower,) = [
        doc for doc in k8s if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "flower"
    ]
    pod = flower["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == FLOWER_COMMAND
    assert "FLOWER_BASIC_AUTH" in {entry["name"] for entry in container["env"]}
    assert "httpGet" not in container["readinessProbe"]  # every route wants credentials
    assert "prometheus.io/scrape" not in pod["metadata"].get("annotations", {})


def test_k8s_worker_has_gpu_limits_and_matching_grace(k8s: list[dict[str, Any]]) -> None:
    (worker,) = [doc for doc in k8s if doc["metadata"]["name"] == "fleet-worker"]
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == GRACE_S
    (container,) = pod["containers"]
    assert container["command"][:5] == WORKER_COMMAND
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {entry["name"] for entry in container["env"]}
    assert {"FLEET_BROKER_URL", "FLEET_DATABASE_URL"} <= env
    (redis,) = [
        doc for doc in k8s if doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "redis"
    ]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"


def test_k8s_settings_config_map_uses_real_settings() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    names = {literal.split("=", 1)[0] for literal in generator["literals"]}
    assert {name for name in names if name.startswith(ENV_PREFIX)} <= SETTINGS


def test_systemd_unit_pins_the_instance_gpus() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "systemd" / "fleet-worker@.service")
    service = unit["Service"]
    assert 'CUDA_VISIBLE_DEVICES=$(echo "%i" | tr _ ,)' in service["ExecStart"]
    assert " ".join(WORKER_COMMAND[1:]) in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) == GRACE_S
    assert service["EnvironmentFile"] == "/etc/fleet/fleet.env"


def test_dockerfile_pins_torch() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}"', text)
    assert "ARG TORCH_VERSION=2.13.0" in text
