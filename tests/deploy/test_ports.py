"""Ports agree across manifests: what a service listens on (its MINT_*PORT settings) is
what its container declares, what its probes, Service, ServiceMonitor and
NetworkPolicies name, and what its clients dial."""

from __future__ import annotations

from typing import Any

import pytest

from services.inference.app import SERVICE_NAME as INFERENCE
from services.registry.server import SERVICE_NAME as REGISTRY

from .manifests import OVERLAYS, Container, Manifests, load, matches

PORT_SETTINGS = {
    "MINT_PORT": "grpc",
    "MINT_METRICS_PORT": "metrics",
    "MINT_HEALTH_PORT": "health",
    "MINT_HTTP_PORT": "http",  # the router's OpenAI-compatible API
}
GRPC_SERVICE = {"registry": REGISTRY, "router": INFERENCE, "node": INFERENCE}


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return load(request.param)


def probes(container: Container) -> dict[str, dict[str, Any]]:
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    return {k: container.spec[k] for k in kinds if k in container.spec}


def test_declared_ports_are_the_ports_the_service_listens_on(manifests: Manifests) -> None:
    for service, container in manifests.mint().items():
        env = manifests.env(container)
        listening = {name: int(env[var]) for var, name in PORT_SETTINGS.items() if var in env}
        assert container.ports == listening, service


def test_probes_ask_the_ports_that_answer_them(manifests: Manifests) -> None:
    for container in manifests.containers():
        found = probes(container)
        if container.runs_to_completion:  # a job: it ends, nothing waits for it to be ready
            assert not found, container.spec["name"]
            continue
        assert {"readinessProbe", "livenessProbe"} <= set(found), container.spec["name"]
        for kind, probe in found.items():
            action = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
            assert action is not None, f"{container.spec['name']} {kind}"
            assert container.port(action["port"]) is not None, f"{container.spec['name']} {kind}"


def test_grpc_servers_are_probed_on_their_health_port(manifests: Manifests) -> None:
    """The kubelet's gRPC probe speaks no TLS: it asks the plaintext health port, and the
    readiness probe asks for the service the server really registers."""
    for service, name in GRPC_SERVICE.items():
        container = manifests.mint()[service]
        health = container.ports["health"]
        for kind, probe in probes(container).items():
            assert probe["grpc"]["port"] == health, f"{service} {kind}"
        assert container.spec["readinessProbe"]["grpc"]["service"] == name


def test_stream_processors_are_probed_on_healthz_and_readyz(manifests: Manifests) -> None:
    """mint/probes.py: /healthz fails when the service is stuck (restart it), /readyz also
    while it drains."""
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for service in ("projector", "controller", "trainer", "evaluator"):
        container = manifests.mint()[service]
        for kind, probe in probes(container).items():
            assert probe["httpGet"]["path"] == paths[kind], f"{service} {kind}"
            assert container.port(probe["httpGet"]["port"]) == container.ports["metrics"]


def test_services_route_to_declared_ports(manifests: Manifests) -> None:
    for service in manifests.of_kind("Service"):
        name = service["metadata"]["name"]
        targets = manifests.selected(service["spec"]["selector"])
        assert targets, f"Service {name} selects no pods"
        for port in service["spec"]["ports"]:
            for container in targets:
                assert container.port(port["targetPort"]) is not None, f"{name} {port}"


def test_service_monitor_scrapes_every_metrics_port(manifests: Manifests) -> None:
    (monitor,) = manifests.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]
    services = [
        s for s in manifests.of_kind("Service") if matches(selector, s["metadata"]["labels"])
    ]
    scraped = set()
    for endpoint in monitor["spec"]["endpoints"]:
        for service in services:
            ports = {p["name"]: p for p in service["spec"]["ports"]}
            assert endpoint["port"] in ports, service["metadata"]["name"]
            for container in manifests.selected(service["spec"]["selector"]):
                port = container.port(ports[endpoint["port"]]["targetPort"])
                assert port == container.ports["metrics"]
                scraped.add(container.service)
    with_metrics = {s for s, c in manifests.mint().items() if "metrics" in c.ports}
    servers = {"projector", "controller", "router", "node", "registry", "trainer", "evaluator"}
    assert scraped == with_metrics == servers


def test_clients_dial_the_servers_they_are_given(manifests: Manifests) -> None:
    """MINT_KAFKA_BOOTSTRAP and MINT_S3_ENDPOINT name a Service and one of its ports (dev:
    Kafka and S3 in the namespace; production: Strimzi's bootstrap Service, checked in
    test_kafka)."""
    if not manifests.of_kind("Kafka"):
        env = manifests.env(manifests.mint()["registry"])
        for variable in ("MINT_KAFKA_BOOTSTRAP", "MINT_S3_ENDPOINT"):
            host, _, port = env[variable].partition(":")
            service = manifests.get("Service", host)
            assert int(port) in {p["port"] for p in service["spec"]["ports"]}, variable


@pytest.mark.parametrize("worker", ["trainer", "evaluator"])
def test_workers_dial_the_registry_over_tls(manifests: Manifests, worker: str) -> None:
    """MINT_REGISTRY names the registry's Service and a port that reaches its gRPC server;
    the host is a name on its certificate, and the worker trusts the CA that signed it."""
    container = manifests.mint()[worker]
    env = manifests.env(container)
    host, _, port = env["MINT_REGISTRY"].partition(":")
    service = manifests.get("Service", host)
    (target,) = [p["targetPort"] for p in service["spec"]["ports"] if p["port"] == int(port)]
    registry = manifests.mint()["registry"]
    assert registry in manifests.selected(service["spec"]["selector"])
    assert registry.port(target) == registry.ports["grpc"]
    certificate = manifests.get("Certificate", "mint-registry-tls")
    assert host in certificate["spec"]["dnsNames"]
    found = container.volume_for(env["MINT_REGISTRY_CA_FILE"])
    assert found is not None, worker
    volume, _ = found
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # not its key
