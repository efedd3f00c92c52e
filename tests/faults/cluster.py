"""A 3-broker Kafka cluster and an S3 server of the test's own, with two registry replicas
and a projector running on them: what the fault tests kill parts of."""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError
from minio import Minio

from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.services import ServiceProcess, stop_all
from deploy.local.stack import Stack, free_ports
from mint.backends.kafka import KafkaConnection, admin
from mint.backends.kafka_claims import writer_of
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3 import S3Settings, client
from mint.backends.s3_blobs import S3BlobStore
from streams.projector.runner import rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK, kek_file

PARTITIONS = 4
INTERNAL_TOPICS = ("__transaction_state", "__consumer_offsets")


@dataclass
class Cluster:
    stack: Stack
    topic: str
    registries: list[RegistryProcess]
    projector: ServiceProcess
    projection: str  # the projector's bucket

    @property
    def kafka(self) -> KafkaConnection:
        return self.stack.endpoints.kafka()

    @property
    def target(self) -> str:
        return "ipv4:" + ",".join(r.address for r in self.registries)

    def s3(self) -> Minio:
        e = self.stack.endpoints
        return client(S3Settings(e.s3_endpoint, e.s3_access_key, e.s3_secret_key))

    def writers(self) -> set[str]:
        """The transactional ids claimed by the registry replicas' producers now."""
        client = admin(self.kafka)
        try:
            group = f"{self.topic}-owners"
            offsets = client.list_group_offsets(group)[group]
        finally:
            client.close()
        return {writer_of(o.metadata) for o in offsets.values() if o.metadata}

    def dump_stacks(self) -> None:
        for registry in self.registries:
            if registry.process is not None and registry.process.proc is not None:
                os.kill(registry.process.proc.pid, signal.SIGUSR1)  # mint/cli.py

    def coordinator_of(self, transactional_id: str) -> int:
        client = admin(self.kafka)
        try:
            described = client.describe_transactions([transactional_id])
        finally:
            client.close()
        return int(described[transactional_id].coordinator_id)

    def leaders(self) -> dict[int, int]:
        """Partition of the event topic -> the broker leading it."""
        client = admin(self.kafka)
        try:
            (described,) = client.describe_topics([self.topic])
        finally:
            client.close()
        return {p["partition_index"]: p["leader_id"] for p in described["partitions"]}

    def kill_broker(self, node_id: int) -> float:
        """SIGKILL one broker; returns the moment it died (monotonic)."""
        self.stack.kafka.nodes[node_id - 1].process.kill()
        return time.monotonic()

    def heal(self, timeout_s: float = 90.0) -> None:
        """Restart whatever was killed and wait until every replica is in sync again, so
        the next fault starts from a whole cluster."""
        self.stack.up()
        deadline = time.monotonic() + timeout_s
        while not self._in_sync():
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not get back in sync")
            time.sleep(0.5)

    def _in_sync(self) -> bool:
        try:
            client = admin(self.kafka)
            try:
                described = client.describe_topics([self.topic, *INTERNAL_TOPICS])
            finally:
                client.close()
        except KafkaError:
            return False
        return all(
            len(p["isr_nodes"]) == len(p["replica_nodes"])
            for t in described
            for p in t["partitions"]
        )

    def projection_differences(self, timeout_s: float = 90.0) -> list[str]:
        """Keys where the live projection differs from a rebuild from offset 0, once the
        projector has had `timeout_s` to catch up ([] when equal)."""
        s3 = self.s3()
        fresh = f"rebuilt-{uuid.uuid4().hex[:8]}"
        log = KafkaEventLog(self.kafka, self.topic, PARTITIONS, owned=())
        try:
            rebuild(log, S3Sink(s3, fresh, blobs_bucket=self.topic, kek=TEST_KEK))
        finally:
            log.close()
        expected = _objects(s3, fresh)
        deadline = time.monotonic() + timeout_s
        while True:
            live = _objects(s3, self.projection)
            differ = sorted(
                k for k in expected.keys() | live.keys() if expected.get(k) != live.get(k)
            )
            if not differ or time.monotonic() > deadline:
                return differ
            time.sleep(1.0)


def _objects(s3: Minio, bucket: str) -> dict[str, bytes]:
    return {
        str(o.object_name): s3.get_object(bucket, str(o.object_name)).read()
        for o in s3.list_objects(bucket, recursive=True)
    }


def start_cluster(state: Path, model_files: dict, tokens: dict[str, dict[str, object]]) -> Cluster:
    stack = Stack(state / "stack", brokers=3)
    stack.up()
    env = stack.endpoints.as_env()
    topic = f"faults-{uuid.uuid4().hex[:8]}"
    tokens_file = write_tokens(state / "tokens.json", tokens)
    kek = kek_file(state)
    registries = [
        RegistryProcess(
            port,
            topic,
            tokens_file,
            state / f"registry-{i}.log",
            env,
            PARTITIONS,
            3,
            kek_file=kek,  # the one the checks open blobs with (the rebuild's)
        )
        for i, port in enumerate(free_ports(2))
    ]
    for registry in registries:
        registry.start(timeout_s=180)
    projection = f"projection-{topic}"
    _create_bucket(stack, topic)  # the registry's, which the projector reads
    projector = ServiceProcess(
        "streams.projector",
        [
            *("run", "--events-topic", topic, "--events-partitions", str(PARTITIONS)),
            *("--projection-bucket", projection, "--blobs-bucket", topic),
            *("--kek-file", str(registries[0].kek_path)),
            *("--group", projection, "--instance-id", "projector-0"),
            *("--metrics-port", "0"),
        ],
        state / "projector.log",
        env,
    )
    projector.start()
    return Cluster(stack, topic, registries, projector, projection)


def _create_bucket(stack: Stack, bucket: str) -> None:
    e = stack.endpoints
    S3BlobStore(
        client(S3Settings(e.s3_endpoint, e.s3_access_key, e.s3_secret_key)), bucket, TEST_KEK
    )


def stop_cluster(cluster: Cluster) -> None:
    stop_all([cluster.projector, *cluster.registries])
    cluster.stack.down()
