"""NetworkPolicies: ingress is denied unless allowed; each allow selects real pods and
declared ports; nodes take calls from routers only."""

from __future__ import annotations

from typing import Any

import pytest

from .manifests import OVERLAYS, Manifests, load


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
