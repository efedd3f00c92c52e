"""The Kubernetes manifests name only commands, flags, ports and variables that exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local.stack import ENDPOINT_VARIABLES
from services.registry.server import SERVICE_NAME

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def documents() -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]


def containers() -> list[dict[str, Any]]:
    return [
        c
        for d in documents()
        if d["kind"] in {"Deployment", "StatefulSet"}
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def test_every_server_variable_is_provided() -> None:
    provided = set()
    for d in documents():
        if d["kind"] == "ConfigMap":
            provided |= set(d["data"])
        if d["kind"] == "Secret" and d["metadata"]["name"] == "mint-s3":
            provided |= set(d["stringData"])
    assert provided == set(ENDPOINT_VARIABLES)


@pytest.mark.parametrize("container", containers(), ids=lambda c: c["name"])
def test_commands_and_flags_exist(container: dict[str, Any]) -> None:
    command = container["command"]
    assert command[:2] == ["python", "-m"]
    help_text = subprocess.run(
        [sys.executable, *command[1:], "--help"], capture_output=True, text=True, check=True
    ).stdout
    flags = [a for a in container["args"] if a.startswith("--")]
    assert flags and all(flag in help_text for flag in flags), (flags, help_text)


def test_ports_and_probes_match_the_code() -> None:
    by_name = {c["name"]: c for c in containers()}
    registry, projector = by_name["registry"], by_name["projector"]
    port = int(registry["args"][registry["args"].index("--port") + 1])
    assert registry["ports"][0]["containerPort"] == port
    assert registry["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    for probed in (projector, by_name["controller"]):
        metrics = int(probed["args"][probed["args"].index("--metrics-port") + 1])
        assert probed["ports"][0]["containerPort"] == metrics
        assert probed["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", ["router", "node"])
def test_serving_ports_and_probes_match_the_code(name: str) -> None:
    from services.inference.app import SERVICE_NAME as INFERENCE

    container = {c["name"]: c for c in containers()}[name]
    args = container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(args[args.index("--port") + 1])
    assert ports["metrics"] == int(args[args.index("--metrics-port") + 1])
    assert container["readinessProbe"]["grpc"]["service"] == INFERENCE
    env = {e["name"] for e in container.get("env", [])}
    referenced = {a[2:-1] for a in args if a.startswith("$(")}
    assert referenced <= env, "every $(VAR) in args is defined for the container"
