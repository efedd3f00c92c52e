"""The projector's loops: live (a Kafka consumer group) and rebuild (from offset 0).

Live: read_committed records, planned and written in order; the group's offsets are
committed only after the writes they cover. When the group hands this projector a
partition, it first folds that partition up to the committed offset (state only, no
writes) so it knows every adapter's revisions and channels, then resumes writing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from mint.backends.kafka_reader import read_partitions, to_recorded
from mint.eventlog.port import EventLog

from .metrics import ProjectorMetrics
from .planner import Planner
from .sink import S3Sink

log = logging.getLogger(__name__)


def rebuild(event_log: EventLog, sink: S3Sink) -> int:
    """Project the whole log from the beginning into `sink`; return events applied."""
    planner, count = Planner(), 0
    for recorded in event_log.read_all():
        sink.apply(planner.plan(recorded))
        count += 1
    return count


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.fresh: set[int] = set()
        self.revoked: set[int] = set()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.revoked |= {tp.partition for tp in revoked}

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.fresh |= {tp.partition for tp in assigned}


@dataclass
class Projector:
    bootstrap: str
    topic: str
    sink: S3Sink
    group_id: str = "mint-projector"
    # Static membership (KIP-345): a projector restarted under the same instance id takes
    # its partitions back at once instead of waiting out the dead one's session.
    instance_id: str | None = None
    session_timeout_ms: int = 10_000
    planners: dict[int, Planner] = field(default_factory=dict)  # one per partition
    applied: int = 0

    def __post_init__(self) -> None:
        self.metrics = ProjectorMetrics()
        self.assignments = _Assignments()
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=200,
            group_instance_id=self.instance_id,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.session_timeout_ms // 4,
        )
        self.consumer.subscribe([self.topic], listener=self.assignments)

    def run(
        self,
        stop: threading.Event | None = None,
        stop_when_caught_up_s: float | None = None,
        report_every_s: float = 30.0,
    ) -> None:
        """Project until `stop` is set; or, with `stop_when_caught_up_s`, once partitions
        are assigned, nothing is left to project, and nothing arrived for that long."""
        quiet_since = reported = time.monotonic()
        while not (stop and stop.is_set()):
            if time.monotonic() - reported > report_every_s:
                lag = self.lag()
                self.metrics.publish(self.applied, lag)
                log.info("applied %d events; lag per partition %s", self.applied, lag)
                reported = time.monotonic()
            batches = self.consumer.poll(timeout_ms=500)
            self._catch_up_new_partitions()
            if not batches:
                if (
                    stop_when_caught_up_s is not None
                    and time.monotonic() - quiet_since > stop_when_caught_up_s
                    and self._caught_up()
                ):
                    return
                continue
            quiet_since = time.monotonic()
            for tp, records in batches.items():
                planner = self.planners[tp.partition]
                for record in records:
                    self.sink.apply(planner.plan(to_recorded(record)))
                    self.applied += 1
                # Only now are this partition's writes done: commit past them.
                self.consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)})

    def _caught_up(self) -> bool:
        return bool(self.planners) and not any(self.lag().values())

    def _catch_up_new_partitions(self) -> None:
        for partition in self.assignments.revoked:
            self.planners.pop(partition, None)
        self.assignments.revoked = set()
        for partition in sorted(self.assignments.fresh):
            tp = TopicPartition(self.topic, partition)
            committed = self.consumer.committed(tp) or 0
            planner = Planner()
            for recorded in read_partitions(self.bootstrap, self.topic, {partition: 0}):
                if recorded.position.offset >= committed:
                    break
                planner.observe(recorded)
            self.planners[partition] = planner
            log.info("partition %d: state rebuilt up to offset %d", partition, committed)
        self.assignments.fresh = set()

    def lag(self) -> dict[int, int]:
        """Records per partition not yet projected."""
        tps = [TopicPartition(self.topic, p) for p in self.planners]
        ends = self.consumer.end_offsets(tps)
        return {tp.partition: max(0, ends[tp] - self.consumer.position(tp)) for tp in tps}

    def close(self) -> None:
        self.consumer.close()
