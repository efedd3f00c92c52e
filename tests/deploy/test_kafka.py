"""Production Kafka (Strimzi): durable topics named as the services name them, clients
on the TLS listener with certificates, and ACLs that let each topic have only its one
writer — above all the event topic, which only the registry may write."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_settings import BaseSettings

from mint.backends.kafka_checkpoints import checkpoint_topic
from mint.backends.kafka_responses import ResponsesTopic
from mint.backends.kafka_snapshots import SNAPSHOT_TOPIC_MAX_BYTES, snapshot_topic
from streams.evaluator.settings import EvaluatorSettings
from streams.trainer.settings import TrainerSettings

from .manifests import Manifests, load

WRITE = {"Write", "All"}


@pytest.fixture
def manifests() -> Manifests:
    return load("production")


def config(manifests: Manifests) -> dict[str, str]:
    return manifests.env(manifests.mint()["registry"]) | manifests.env(
        manifests.mint()["controller"]
    )


def topics(manifests: Manifests) -> dict[str, dict[str, Any]]:
    return {t["spec"]["topicName"]: t["spec"] for t in manifests.of_kind("KafkaTopic")}


def acls(manifests: Manifests) -> list[tuple[str, dict[str, Any]]]:
    return [
        (user["metadata"]["name"], acl)
        for user in manifests.of_kind("KafkaUser")
        for acl in user["spec"]["authorization"]["acls"]
    ]


def test_topics_are_the_ones_the_services_use(manifests: Manifests) -> None:
    env = config(manifests)
    prefix = env["MINT_RESIDENCY_TOPICS_PREFIX"]
    residency = {f"{prefix}.{kind}" for kind in ("desired", "status", "demand", "erased")}
    events_topic = env["MINT_EVENTS_TOPIC"]
    log = {events_topic, snapshot_topic(events_topic), checkpoint_topic(events_topic)}
    responses = ResponsesTopic()  # the nodes' default
    assert set(topics(manifests)) == log | residency | {responses.name}
    assert topics(manifests)[responses.name]["config"]["retention.ms"] == responses.retention_ms
    events = topics(manifests)[env["MINT_EVENTS_TOPIC"]]
    assert events["partitions"] == int(env["MINT_EVENTS_PARTITIONS"])
    assert events["config"]["retention.ms"] == -1  # the log is the source of truth
    snapshots = topics(manifests)[snapshot_topic(env["MINT_EVENTS_TOPIC"])]
    assert snapshots["partitions"] == events["partitions"]  # partition p beside partition p
    assert snapshots["config"]["cleanup.policy"] == "compact"
    assert snapshots["config"]["max.message.bytes"] == SNAPSHOT_TOPIC_MAX_BYTES
    checkpoints = topics(manifests)[checkpoint_topic(events_topic)]
    assert checkpoints["partitions"] == events["partitions"]
    assert checkpoints["config"]["retention.ms"] == -1  # a deleted checkpoint is a hole
    assert "cleanup.policy" not in checkpoints["config"]  # every one kept, not compacted


def test_topics_survive_a_broker(manifests: Manifests) -> None:
    (kafka,) = manifests.of_kind("Kafka")
    cluster = kafka["spec"]["kafka"]["config"]
    assert cluster["min.insync.replicas"] == 2
    assert cluster["transaction.state.log.min.isr"] == 2
    for spec in topics(manifests).values():
        assert spec["replicas"] == 3
        assert spec["config"]["min.insync.replicas"] == 2
    brokers = [p for p in manifests.of_kind("KafkaNodePool") if "broker" in p["spec"]["roles"]]
    assert sum(p["spec"]["replicas"] for p in brokers) >= 3


def test_clients_use_the_tls_listener_with_certificates(manifests: Manifests) -> None:
    (kafka,) = manifests.of_kind("Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"] == {"type": "tls"}
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    for service, container in manifests.mint().items():
        env = manifests.env(container)
        assert env["MINT_KAFKA_BOOTSTRAP"] == bootstrap, service
        assert env["MINT_KAFKA_SECURITY_PROTOCOL"] == "SSL", service
        assert {"MINT_KAFKA_SSL_CERTFILE", "MINT_KAFKA_SSL_KEYFILE"} <= set(env), service


def test_each_service_is_its_own_kafka_principal(manifests: Manifests) -> None:
    users = {u["metadata"]["name"] for u in manifests.of_kind("KafkaUser")}
    for service, container in manifests.mint().items():
        found = container.volume_for(manifests.env(container)["MINT_KAFKA_SSL_CERTFILE"])
        assert found is not None, service
        volume, _ = found
        names = {s["secret"]["name"] for s in volume["projected"]["sources"]}
        assert f"mint-{service}" in names & users, service


@pytest.mark.parametrize(
    ("topic", "writer"),
    [
        ("events", "mint-registry"),
        ("snapshots", "mint-registry"),
        ("checkpoints", "mint-registry"),
        ("desired", "mint-controller"),
        ("status", "mint-node"),
        ("demand", "mint-router"),
        ("responses", "mint-node"),
    ],
)
def test_each_topic_has_one_writer(manifests: Manifests, topic: str, writer: str) -> None:
    env = config(manifests)
    name = {
        "events": env["MINT_EVENTS_TOPIC"],
        "snapshots": snapshot_topic(env["MINT_EVENTS_TOPIC"]),
        "checkpoints": checkpoint_topic(env["MINT_EVENTS_TOPIC"]),
        "responses": ResponsesTopic().name,
    }.get(topic, f"{env['MINT_RESIDENCY_TOPICS_PREFIX']}.{topic}")
    writers = {
        user
        for user, acl in acls(manifests)
        if acl["resource"]["type"] == "topic"
        and _covers(acl["resource"], name)
        and WRITE & set(acl["operations"])
    }
    assert writers == {writer}


def test_acls_name_only_mint_topics_literally(manifests: Manifests) -> None:
    """No wildcard or prefix grant could reach the event topic, and no ACL names a topic
    that does not exist (a typo there is a service refused at run time)."""
    names = set(topics(manifests))
    for user, acl in acls(manifests):
        resource = acl["resource"]
        assert acl.get("type", "allow") == "allow"
        if resource["type"] == "topic":
            assert resource["patternType"] == "literal" and resource["name"] in names, user
        assert resource["type"] != "cluster", user


def _covers(resource: dict[str, Any], topic: str) -> bool:
    if resource.get("patternType") == "prefix":
        return topic.startswith(resource["name"])
    return resource["name"] in (topic, "*")


def test_no_service_may_create_topics(manifests: Manifests) -> None:
    """The topics come from KafkaTopic resources, with replication 3: a service allowed to
    create a missing one would make it with its defaults (one replica), which min ISR 2
    then refuses every write to."""
    creators = [user for user, acl in acls(manifests) if {"Create", "All"} & set(acl["operations"])]
    assert creators == []


@pytest.mark.parametrize(
    ("worker", "settings"), [("trainer", TrainerSettings), ("evaluator", EvaluatorSettings)]
)
def test_workers_may_read_the_event_topic_in_their_group(
    manifests: Manifests, worker: str, settings: type[BaseSettings]
) -> None:
    env = manifests.env(manifests.mint()[worker])
    group = env.get("MINT_GROUP", settings.model_fields["group"].default)
    granted = {
        (acl["resource"]["type"], acl["resource"]["name"], operation)
        for user, acl in acls(manifests)
        if user == f"mint-{worker}"
        for operation in acl["operations"]
    }
    assert ("topic", env["MINT_EVENTS_TOPIC"], "Read") in granted
    assert {("group", group, "Read"), ("group", group, "Describe")} <= granted


def test_gc_reads_the_log_and_sees_its_snapshot_topic(manifests: Manifests) -> None:
    """The log's start-up check lists the snapshot topic: one gc may not see is missing."""
    events = manifests.env(manifests.mint()["gc"])["MINT_EVENTS_TOPIC"]
    granted = {
        (acl["resource"]["name"], operation)
        for user, acl in acls(manifests)
        if user == "mint-gc"
        for operation in acl["operations"]
    }
    assert {(events, "Read"), (events, "Describe"), (snapshot_topic(events), "Describe")} <= granted
