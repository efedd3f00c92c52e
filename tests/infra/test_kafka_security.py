"""Kafka security settings reach every client: against a broker of the test's own that
also listens with SASL_PLAINTEXT (PLAIN), MinT's admin, producer and consumers
authenticate, a wrong password is refused, and the controller runs on it from its
settings (the password from a secret file)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import KafkaError

from deploy.local.kafka import KafkaCluster, KafkaNode, fetch_jars, new_cluster_id
from deploy.local.stack import default_cache, free_ports
from mint.backends.kafka import KafkaConnection, admin, create_missing_topics
from mint.domain.errors import FailedPrecondition
from tests.infra.smoke import kafka_round_trip
from tests.test_entry_points import run_controller_until_active

pytestmark = pytest.mark.slow
PASSWORD = "pl41n-s3cret"
REFUSED = "Authentication failed: Invalid username or password"  # the broker's log


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    state = tmp_path_factory.mktemp("sasl-kafka")
    port, controller_port, sasl_port = free_ports(3)
    node = KafkaNode(1, port, controller_port, state, sasl_port=sasl_port)
    cluster = KafkaCluster(
        (node,), new_cluster_id(), sasl_users=(("mint", PASSWORD),), authorizer=True
    )
    libs = fetch_jars(default_cache())
    cluster.write_configs()
    cluster.format_storage(libs)
    cluster.start(libs)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def sasl(cluster: KafkaCluster, password: str) -> KafkaConnection:
    return KafkaConnection(
        cluster.sasl_bootstrap,
        "SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="mint",
        sasl_plain_password=password,
    )


def test_clients_authenticate_and_a_wrong_password_is_refused(cluster: KafkaCluster) -> None:
    broker_log = cluster.nodes[0].process.log_file
    assert kafka_round_trip(sasl(cluster, PASSWORD), records=3) == [b"v0", b"v1", b"v2"]
    assert REFUSED not in broker_log.read_text()
    with pytest.raises(KafkaError):  # kafka-python keeps trying until its timeout
        kafka_round_trip(sasl(cluster, "wrong"), records=1, timeout_s=5)
    assert REFUSED in broker_log.read_text()


def test_the_controller_runs_on_sasl_from_its_settings(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "MINT_KAFKA_SASL_PASSWORD").write_text(f"{PASSWORD}\n")
    env = {
        "MINT_KAFKA_BOOTSTRAP": cluster.sasl_bootstrap,
        "MINT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "MINT_KAFKA_SASL_MECHANISM": "PLAIN",
        "MINT_KAFKA_SASL_USERNAME": "mint",
        "MINT_SECRETS_DIR": str(secrets),
    }
    run_controller_until_active(env, tmp_path)


def test_a_principal_without_create_uses_existing_topics_and_names_a_missing_one(
    cluster: KafkaCluster,
) -> None:
    """As in production, where only the operator makes topics (with replication 3): the
    broker refuses "mint" Create, and creating what exists is no error, while a missing
    topic is named rather than made. Last in this module: its ACLs stay until the end."""
    superuser = admin(KafkaConnection(cluster.bootstrap))
    everything = ResourcePattern(ResourceType.TOPIC, "*", ACLResourcePatternType.LITERAL)
    cluster_wide = ResourcePattern(ResourceType.CLUSTER, "kafka-cluster")
    acls = [
        ACL("User:mint", "*", ACLOperation.ALL, ACLPermissionType.ALLOW, everything),
        ACL("User:mint", "*", ACLOperation.CREATE, ACLPermissionType.DENY, everything),
        ACL("User:mint", "*", ACLOperation.CREATE, ACLPermissionType.DENY, cluster_wide),
    ]
    existing, missing = f"made-{uuid.uuid4().hex[:6]}", f"absent-{uuid.uuid4().hex[:6]}"
    try:
        superuser.create_topics([NewTopic(existing, 1, 1)])
        superuser.create_acls(acls)
        time.sleep(1)  # ACLs reach the authorizer through the metadata log
        mint = sasl(cluster, PASSWORD)
        create_missing_topics(mint, [NewTopic(existing, 1, 1)])
        with pytest.raises(FailedPrecondition, match=f"topic {missing} does not exist"):
            create_missing_topics(mint, [NewTopic(existing, 1, 1), NewTopic(missing, 1, 1)])
        assert missing not in superuser.list_topics()
    finally:
        superuser.close()
