"""Each MinT container gets exactly the settings its service reads, the shared ones from
the one ConfigMap, and the values that services must agree on are equal."""

from __future__ import annotations

import pytest

from .contract import ALLOWED, CONFIG_MAP, REQUIRED, SHARED
from .manifests import OVERLAYS, SERVICES, Manifests, load


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return load(request.param)


def test_every_service_runs_once(manifests: Manifests) -> None:
    assert set(manifests.mint()) == set(ALLOWED)


def test_containers_get_only_and_all_the_settings_their_service_reads(
    manifests: Manifests,
) -> None:
    for service, container in manifests.mint().items():
        names = [e["name"] for e in container.spec["env"]]
        assert len(names) == len(set(names)), f"{service}: a variable is set twice"
        assert not container.spec.get("envFrom"), f"{service}: envFrom hides what is set"
        unknown = set(names) - ALLOWED[service]
        assert not unknown, f"{service} does not read {sorted(unknown)}"
        missing = REQUIRED[service] - set(names)
        assert not missing, f"{service} needs {sorted(missing)}"


def test_shared_values_come_from_the_one_config_map(manifests: Manifests) -> None:
    (config_map,) = manifests.of_kind("ConfigMap")
    assert config_map["metadata"]["name"].startswith(f"{CONFIG_MAP}-")  # generated
    for service, container in manifests.mint().items():
        for entry in container.spec["env"]:
            if entry["name"] in SHARED:
                ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                assert ref == {"name": config_map["metadata"]["name"], "key": entry["name"]}, (
                    f"{service} must take {entry['name']} from ConfigMap {CONFIG_MAP}"
                )


@pytest.mark.parametrize(
    ("variable", "services"),
    [
        # what the projector writes is what the registry, routers and nodes read
        ("MINT_PROJECTION_BUCKET", ("projector", "registry", "router", "node")),
        ("MINT_PROJECTION_PREFIX", ("projector", "registry", "router", "node")),
        # what the registry uploads to is what the projector reads blobs from
        # and the workers read requests' examples and suites from, and gc collects in
        ("MINT_BLOBS_BUCKET", ("registry", "projector", "trainer", "evaluator", "gc")),
        ("MINT_EVENTS_TOPIC", ("registry", "projector", "trainer", "evaluator", "gc")),
        ("MINT_EVENTS_PARTITIONS", ("registry", "projector", "gc")),
        ("MINT_RESIDENCY_TOPICS_PREFIX", ("controller", "router", "node")),
        ("MINT_KAFKA_BOOTSTRAP", tuple(ALLOWED)),
        ("MINT_S3_ENDPOINT", tuple(s for s in ALLOWED if s != "controller")),
    ],
)
def test_services_agree_on(manifests: Manifests, variable: str, services: tuple[str, ...]) -> None:
    containers = manifests.mint()
    values = {s: manifests.env(containers[s]).get(variable) for s in services}
    assert len(set(values.values())) == 1, f"{variable} differs: {values}"
    assert None not in values.values()


def test_servers_listen_on_the_pod_and_name_it(manifests: Manifests) -> None:
    for service, container in manifests.mint().items():
        env = manifests.env(container)
        if not container.ports:  # a job: it serves nothing
            assert "MINT_HOST" not in env, service
            continue
        assert env["MINT_HOST"] == "0.0.0.0", service
        if "MINT_NAME" in env:  # each pod is its own node or router
            assert env["MINT_NAME"] == "<field:metadata.name>", service
    node = manifests.env(manifests.mint()["node"])
    assert node["MINT_ADVERTISE_HOST"] == "<field:status.podIP>"
    assert node["MINT_TLS_REQUIRE_CLIENT_CERT"] == "true"  # the router's certificate


def test_commands_are_console_scripts_without_shells(manifests: Manifests) -> None:
    for container in manifests.containers():
        command = container.spec.get("command", [])
        assert not {"sh", "bash", "/bin/sh", "/bin/bash", "-c"} & set(command), command
    for service, container in manifests.mint().items():
        (line,) = [line for line, s in SERVICES.items() if s == service]
        assert container.spec["command"] == [line[0]], service  # the console script
        assert container.command_line[: len(line)] == list(line), service
