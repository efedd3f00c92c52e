"""Partition ownership for registry replicas, decided by a Kafka consumer group.

Each replica joins one group on the event topic. Whatever partitions the group assigns
to a replica, it takes as their single writer (`KafkaEventLog.take`: fence, then
rebuild); whatever is revoked or lost, it gives up. A replica that dies stops
heartbeating, the group reassigns its partitions after the session timeout, and the new
owner's fencing makes any late write of the dead one fail.

Taking a partition is blocking I/O, which must not run inside the rebalance callbacks
(they share the consumer's heartbeat loop), so a worker thread applies the changes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.structs import TopicPartition

from .kafka_log import KafkaEventLog

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: GroupOwnership) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.owner.changes.put(("revoke", {tp.partition for tp in revoked}))

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.owner.changes.put(("revoke", {tp.partition for tp in lost}))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = list(assigned)
        self.owner.consumer.pause(*tps)  # membership only: never fetch records
        self.owner.changes.put(("assign", {tp.partition for tp in tps}))


class GroupOwnership:
    def __init__(
        self, event_log: KafkaEventLog, group_id: str, session_timeout_ms: int = 8000
    ) -> None:
        self.event_log = event_log
        self.changes: queue.Queue[tuple[str, set[int]]] = queue.Queue()
        self.consumer = KafkaConsumer(
            bootstrap_servers=event_log.bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 4, 500),
        )
        self.consumer.subscribe([event_log.topic], listener=_Listener(self))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, name="ownership-poll", daemon=True),
            threading.Thread(target=self._apply, name="ownership-apply", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def owned(self) -> set[int]:
        return set(self.event_log.writers)

    def wait_until_owning(self, timeout_s: float = 60.0, at_least: int = 1) -> set[int]:
        deadline = time.monotonic() + timeout_s
        while len(self.owned()) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.owned()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.consumer.poll(timeout_ms=200)  # drives the group protocol; paused: no data

    def _apply(self) -> None:
        while not self._stop.is_set():
            try:
                kind, partitions = self.changes.get(timeout=0.2)
            except queue.Empty:
                continue
            for partition in sorted(partitions):
                try:
                    if kind == "revoke":
                        self.event_log.give_up(partition)
                    elif partition not in self.event_log.writers:
                        self.event_log.take(partition)
                except Exception:  # keep serving the other partitions; log the cause
                    log.exception("could not %s partition %d", kind, partition)
            log.info("owning partitions %s", sorted(self.owned()))

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.consumer.close()
