"""The residency topics on Kafka: desired state (controller → nodes), node reports
(nodes → controller, router) and demand (router → controller).

`desired` and `status` are compacted tables: the latest value per key is the state, a
null value (tombstone) deletes a key. Readers consume them from the beginning and keep
following. Writes to `desired` are transactional under one id, so a newly active
controller fences the previous one; readers use read_committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from mint.domain.errors import Unavailable
from mint.serving.erasures import ErasureNotice
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2

from .kafka import (
    COMPACTED,
    DURABLE_PRODUCER,
    KafkaConnection,
    create_missing_topics,
    durable_producer,
    wait_for_partitions,
)

log = logging.getLogger(__name__)
ANNOUNCE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ResidencyTopics:
    prefix: str = "mint.residency"

    @property
    def desired(self) -> str:
        return f"{self.prefix}.desired"

    @property
    def status(self) -> str:
        return f"{self.prefix}.status"

    @property
    def demand(self) -> str:
        return f"{self.prefix}.demand"

    @property
    def erased(self) -> str:
        """Erasure notices (mint/serving/erasures.py), keyed by adapter id."""
        return f"{self.prefix}.erased"

    def create(self, kafka: KafkaConnection, replication: int = 1, partitions: int = 4) -> None:
        """Create the topics if missing (idempotent). `demand` has one partition: the
        controller group's one assignee is the active controller."""
        extra = {"min.insync.replicas": "2"} if replication >= 3 else {}
        wanted = [
            NewTopic(self.desired, partitions, replication, topic_configs={**COMPACTED, **extra}),
            NewTopic(self.status, partitions, replication, topic_configs={**COMPACTED, **extra}),
            NewTopic(self.demand, 1, replication, topic_configs={"retention.ms": "3600000"}),
            NewTopic(self.erased, 1, replication, topic_configs={**COMPACTED, **extra}),
        ]
        create_missing_topics(kafka, wanted)
        for topic in wanted:  # created topics take a moment to have leaders
            wait_for_partitions(kafka, topic.name)


def desired_key(node: str, ref: RevisionRef) -> str:
    return f"{node}|{ref.adapter_id}|{ref.revision}"


def to_proto(ref: RevisionRef, facts: bool = True) -> residency_pb2.ResidentRevision:
    """`facts`: with the base fingerprint and config (intents, demand), or identity only
    (the resident lists of node reports)."""
    return residency_pb2.ResidentRevision(
        adapter_id=ref.adapter_id,
        adapter=ref.adapter,
        revision=ref.revision,
        weights_sha256=ref.weights_sha256,
        weights_size=ref.weights_size,
        base_fingerprint=ref.base_fingerprint if facts else "",
        config_json=ref.config_json if facts else "",
    )


def from_proto(msg: residency_pb2.ResidentRevision) -> RevisionRef:
    return RevisionRef(
        msg.adapter_id,
        msg.adapter,
        msg.revision,
        msg.weights_sha256,
        msg.weights_size,
        msg.base_fingerprint,
        msg.config_json,
    )


class TableFollower:
    """Follows a compacted topic from its beginning: `poll()` yields (key, value or None)
    in log order per partition; `caught_up` once the ends seen at start were reached."""

    def __init__(self, kafka: KafkaConnection, topic: str, **options: Any) -> None:
        self.consumer = KafkaConsumer(
            **kafka.options(),
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
            **options,
        )
        partitions = self.consumer.partitions_for_topic(topic) or set()
        self.tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not self.tps:
            raise ValueError(f"topic {topic} does not exist; create the residency topics first")
        self.consumer.assign(self.tps)
        self.consumer.seek_to_beginning(*self.tps)
        self._ends = self.consumer.end_offsets(self.tps)
        self.caught_up = False

    def poll(self, timeout_s: float = 0.2) -> Iterator[tuple[str, bytes | None]]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        for tp in self.tps:
            for record in batches.get(tp, []):
                yield record.key.decode(), record.value
        if not self.caught_up:
            self.caught_up = all(self.consumer.position(tp) >= self._ends[tp] for tp in self.tps)

    def close(self) -> None:
        self.consumer.close()


def read_table(kafka: KafkaConnection, topic: str) -> dict[str, bytes]:
    """A compacted topic's current table, read from the beginning to its end now."""
    follower = TableFollower(kafka, topic)
    table: dict[str, bytes] = {}
    try:
        while not follower.caught_up:
            for key, value in follower.poll(timeout_s=0.2):
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
    finally:
        follower.close()
    return table


class KafkaErasureNotices:
    """The registry's announcements of erasures (see mint/serving/erasures.py)."""

    def __init__(self, kafka: KafkaConnection, topics: ResidencyTopics) -> None:
        self.topic = topics.erased
        self.producer = durable_producer(kafka)

    def announce(self, notice: ErasureNotice) -> None:
        future = self.producer.send(
            self.topic, key=notice.adapter_id.encode(), value=notice.encode()
        )
        try:
            future.get(timeout=ANNOUNCE_TIMEOUT_S)
        except KafkaError as exc:
            raise Unavailable(
                f"could not announce the erasure of {notice.adapter} ({exc}); erase it again "
                "(the same request id) to finish"
            ) from exc

    def close(self) -> None:
        self.producer.close(timeout=5)


class ErasureWatch:
    """Follows the erasure notices on a thread of its own, from the beginning, handing
    each to `on_notice` (the router's catalog)."""

    def __init__(
        self,
        kafka: KafkaConnection,
        topics: ResidencyTopics,
        on_notice: Callable[[ErasureNotice], None],
    ) -> None:
        self._follower = TableFollower(kafka, topics.erased)
        self._on_notice, self._stop = on_notice, threading.Event()
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="erasures", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for adapter_id, value in self._follower.poll(timeout_s=0.2):
                    if value is not None:
                        self._on_notice(ErasureNotice.decode(adapter_id, value))
                if self._follower.caught_up:
                    self.caught_up.set()
            except Exception:  # Kafka trouble: the next poll tries again
                log.exception("reading erasure notices failed; retrying")
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._follower.close()


class DesiredWriter:
    """The controller's writes to the desired table, each batch one transaction.

    `activate()` calls init_transactions under the controller's transactional id, which
    fences any previous controller still writing under it."""

    def __init__(
        self, kafka: KafkaConnection, topics: ResidencyTopics, transactional_id: str
    ) -> None:
        self.topics = topics
        self.producer = KafkaProducer(
            **kafka.options(),
            transactional_id=transactional_id,
            transaction_timeout_ms=10_000,
            **{k: v for k, v in DURABLE_PRODUCER.items() if k != "retries"},
        )

    def activate(self) -> None:
        self.producer.init_transactions()

    def write(
        self,
        put: list[tuple[str, RevisionRef, bool]],
        remove: list[tuple[str, RevisionRef]],
        term: int,
    ) -> None:
        """Intents `put` (node, revision, pinned) and tombstones for `remove`, atomically."""
        if not put and not remove:
            return
        self.producer.begin_transaction()
        for node, ref, pinned in put:
            intent = residency_pb2.ResidencyIntent(
                node=node, revision=to_proto(ref), pinned=pinned, term=term
            )
            self.producer.send(
                self.topics.desired,
                key=desired_key(node, ref).encode(),
                value=intent.SerializeToString(),
            )
        for node, ref in remove:
            self.producer.send(self.topics.desired, key=desired_key(node, ref).encode(), value=None)
        self.producer.commit_transaction()

    def close(self) -> None:
        self.producer.close(timeout=5)
