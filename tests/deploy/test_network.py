"""NetworkPolicies: ingress and MinT's egress are denied unless allowed; each allow
selects real pods and declared ports; nodes take calls from routers only; each service may
reach exactly the servers its settings name (DNS, Kafka, S3, the registry, nodes)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from .manifests import OVERLAYS, Container, Manifests, load


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return load(request.param)


def rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return list(policy["spec"].get("ingress", []))


def test_ingress_is_denied_by_default(manifests: Manifests) -> None:
    denies = [
        p
        for p in manifests.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"] == {} and not rules(p) and "Ingress" in p["spec"]["policyTypes"]
    ]
    assert denies


def test_policies_select_pods_and_ports_that_exist(manifests: Manifests) -> None:
    for policy in manifests.of_kind("NetworkPolicy"):
        name = policy["metadata"]["name"]
        selected = manifests.selected(policy["spec"]["podSelector"])
        assert selected, f"{name} selects no pods"
        for rule in rules(policy):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert manifests.selected(peer["podSelector"]), f"{name}: {peer}"
            for port in rule.get("ports", []):
                for container in selected:
                    assert container.port(port["port"]) is not None, f"{name}: {port}"


def test_nodes_take_calls_from_routers_only(manifests: Manifests) -> None:
    node = manifests.mint()["node"]
    grpc = node.ports["grpc"]
    allowing = [
        rule
        for policy in manifests.of_kind("NetworkPolicy")
        if node in manifests.selected(policy["spec"]["podSelector"])
        for rule in rules(policy)
        if "ports" not in rule or any(node.port(p["port"]) == grpc for p in rule["ports"])
    ]
    assert allowing
    for rule in allowing:
        assert rule.get("from"), "a rule without `from` lets every pod in"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, peer
            callers = {c.service for c in manifests.selected(peer["podSelector"])}
            assert callers == {"router"}, callers


def test_kafka_and_s3_take_mint_pods_only(manifests: Manifests) -> None:
    """Dev: the Kafka and S3 pods; production: Strimzi's listener (its NetworkPolicy is
    made by the operator from networkPolicyPeers)."""
    peers = []
    for kafka in manifests.of_kind("Kafka"):
        for listener in kafka["spec"]["kafka"]["listeners"]:
            peers += listener["networkPolicyPeers"]
    for name in ("kafka-from-mint", "s3-from-mint"):
        for policy in manifests.of_kind("NetworkPolicy"):
            if policy["metadata"]["name"] == name:
                peers += [peer for rule in rules(policy) for peer in rule["from"]]
    assert peers
    every_service = set(manifests.mint())
    for peer in peers:
        assert set(peer) == {"podSelector"}
        allowed = {c.service for c in manifests.selected(peer["podSelector"])}
        assert allowed == every_service


def egress_rules(manifests: Manifests, container: Container) -> list[dict[str, Any]]:
    """Every egress rule of every policy that governs `container`'s pod."""
    return [
        rule
        for policy in manifests.of_kind("NetworkPolicy")
        if "Egress" in policy["spec"]["policyTypes"]
        and container in manifests.selected(policy["spec"]["podSelector"])
        for rule in policy["spec"].get("egress", [])
    ]


def reaches(rules: list[dict[str, Any]], port: int, peer: Callable[[dict[str, Any]], bool]) -> bool:
    return any(
        any(p["port"] == port for p in rule["ports"]) and any(peer(to) for to in rule["to"])
        for rule in rules
    )


def test_egress_of_every_mint_pod_is_denied_by_default(manifests: Manifests) -> None:
    denying = [
        p
        for p in manifests.of_kind("NetworkPolicy")
        if "Egress" in p["spec"]["policyTypes"] and not p["spec"].get("egress")
    ]
    governed = {c.service for p in denying for c in manifests.selected(p["spec"]["podSelector"])}
    assert governed >= set(manifests.mint()), set(manifests.mint()) - governed


def test_no_egress_rule_opens_everything(manifests: Manifests) -> None:
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    for policy in manifests.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            name = policy["metadata"]["name"]
            assert rule.get("to") and rule.get("ports"), f"{name}: a rule open to all"
            for peer in rule["to"]:
                if "ipBlock" in peer:  # outside the cluster only, never into it
                    excepted = [ipaddress.ip_network(n) for n in peer["ipBlock"].get("except", [])]
                    assert all(n in excepted for n in private), f"{name}: {peer}"


Peer = Callable[[dict[str, Any]], bool]
STRIMZI_BROKERS = {"strimzi.io/cluster": "mint-kafka", "strimzi.io/kind": "Kafka"}


def _labelled(labels: dict[str, str]) -> Peer:
    return lambda to: to.get("podSelector", {}).get("matchLabels") == labels


def _outside_the_cluster(to: dict[str, Any]) -> bool:
    return "ipBlock" in to


def _behind(manifests: Manifests, address: str) -> tuple[Peer, int]:
    """Who serves a `service:port` address in the manifests (that Service's pods exactly),
    and the port the pods take it on."""
    host, _, port = address.rpartition(":")
    service = manifests.get("Service", host)
    pods = manifests.selected(service["spec"]["selector"])
    (target,) = [
        p.get("targetPort", p["port"]) for p in service["spec"]["ports"] if p["port"] == int(port)
    ]
    return _pods(manifests, pods), pods[0].port(target) or int(port)


def _pods(manifests: Manifests, pods: list[Container]) -> Peer:
    return lambda to: set(to) == {"podSelector"} and manifests.selected(to["podSelector"]) == pods


def _servers(
    manifests: Manifests, service: str, env: dict[str, str]
) -> list[tuple[str, Peer, int]]:
    """What `service` is configured to connect to: (what, who, port)."""
    servers = [("DNS", _labelled({"k8s-app": "kube-dns"}), 53)]
    kafka = env["MINT_KAFKA_BOOTSTRAP"]
    if kafka.startswith("mint-kafka-kafka-bootstrap:"):  # Strimzi's Service, made by its operator
        servers.append(("Kafka", _labelled(STRIMZI_BROKERS), int(kafka.rpartition(":")[2])))
    else:
        servers.append(("Kafka", *_behind(manifests, kafka)))
    if "MINT_S3_ENDPOINT" in env:
        if env.get("MINT_S3_SECURE") == "true":  # outside the cluster, over HTTPS
            servers.append(("S3", _outside_the_cluster, 443))
        else:
            servers.append(("S3", *_behind(manifests, env["MINT_S3_ENDPOINT"])))
    return servers


def test_each_service_may_reach_the_servers_it_is_configured_for(manifests: Manifests) -> None:
    mint = manifests.mint()
    registry, node = mint["registry"], mint["node"]
    for service, container in mint.items():
        rules, env = egress_rules(manifests, container), manifests.env(container)
        for what, peer, port in _servers(manifests, service, env):
            assert reaches(rules, port, peer), f"{service} may not reach {what} on {port}"
        # Registry clients, and registries (a read goes to the adapter's owner); routers
        # to nodes; nobody else to either.
        to_registry = reaches(rules, registry.ports["grpc"], _pods(manifests, [registry]))
        assert to_registry == ("MINT_REGISTRY" in env or service == "registry"), service
        to_nodes = reaches(rules, node.ports["grpc"], _pods(manifests, [node]))
        assert to_nodes == (service == "router"), service
