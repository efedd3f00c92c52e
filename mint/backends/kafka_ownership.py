"""Partition ownership for registry replicas, decided by a Kafka consumer group.

Each replica joins one group on the event topic. Whatever partitions the group assigns
to a replica, it takes as their single writer (`KafkaEventLog.take`: fence, then
rebuild); whatever is revoked or lost, it gives up. A replica that dies stops
heartbeating, the group reassigns its partitions after the session timeout, and the new
owner's fencing makes any late write of the dead one fail.

Taking a partition is blocking I/O, which must not run inside the rebalance callbacks
(they share the consumer's heartbeat loop), so a reconciler thread applies the changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.structs import TopicPartition

from .kafka_log import KafkaEventLog

log = logging.getLogger(__name__)
RECONCILE_EVERY_S = 1.0
SETTLE_S = 0.2


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records what the group wants this replica to own; never does I/O itself."""

    def __init__(self, owner: GroupOwnership) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.owner.want(self.owner.wanted() - {tp.partition for tp in revoked})

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = list(assigned)
        self.owner.consumer.pause(*tps)  # membership only: never fetch records
        self.owner.want(self.owner.wanted() | {tp.partition for tp in tps})


class GroupOwnership:
    """Keeps the partitions this replica writes equal to what the group assigns it.

    A reconciler thread compares the latest wanted set with what is owned: it gives up
    the extra, takes the missing (retrying a failed take), and re-takes a wanted
    partition whose writer was fenced. Acting on the latest wish, never on a queue of
    old ones, means a replica slow to follow two quick rebalances does not take back
    a partition it no longer has.
    """

    def __init__(
        self, event_log: KafkaEventLog, group_id: str, session_timeout_ms: int = 8000
    ) -> None:
        self.event_log = event_log
        self._wanted: set[int] = set()
        self._changed = threading.Condition()
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
            threading.Thread(target=self._reconcile_loop, name="ownership-apply", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def wanted(self) -> set[int]:
        with self._changed:
            return set(self._wanted)

    def want(self, partitions: set[int]) -> None:
        with self._changed:
            self._wanted = set(partitions)
            self._changed.notify()

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

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                self._changed.wait(timeout=RECONCILE_EVERY_S)
            time.sleep(SETTLE_S)  # an eager rebalance revokes all, then assigns: let it land
            self._reconcile(self.wanted())

    def _reconcile(self, wanted: set[int]) -> None:
        writers = self.event_log.writers
        stale = {p for p in wanted if p in writers and writers[p].fenced}
        for partition in sorted((set(writers) - wanted) | stale):
            self.event_log.give_up(partition)
        for partition in sorted(wanted - set(writers)):
            try:
                self.event_log.take(partition)
            except Exception:  # keep serving the others; the next round retries
                log.exception("could not take partition %d; retrying", partition)
        if set(writers) != wanted:
            log.info("owning %s of wanted %s", sorted(writers), sorted(wanted))

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify()
        for thread in self._threads:
            thread.join(timeout=5)
        self.consumer.close()
