"""The projector's loops: live (a Kafka consumer group) and rebuild (from offset 0).

Live: read_committed records, polled in batches (up to `POLL_RECORDS` over every
partition this member holds), planned in log order and written as one batch by the sink
(stage by stage, concurrently, the newest write per key); the batch's offsets are
committed only once all its writes landed. When the group hands this projector a
partition, it first folds that partition up to the committed offset (state only, no
writes) so it knows every adapter's revisions and channels, then resumes writing. More
members in the group share the partitions: each folds and writes only its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from mint.backends.kafka import KafkaConnection, subscribe_known
from mint.backends.kafka_reader import read_records, to_recorded
from mint.domain.errors import Unavailable
from mint.eventlog.port import EventLog
from mint.projection import ForeignRecord, Operation, Planner
from streams.backoff import Backoff

from .metrics import ProjectorMetrics
from .sink import S3Sink

log = logging.getLogger(__name__)

# Failures that pass when the servers come back: Kafka's own, and S3's (the sink reports
# those as Unavailable). Anything else is a bug, and the projector exits.
TRANSIENT = (KafkaError, Unavailable)
# What planning a record no registry wrote raises: bytes that are no event envelope, or an
# event its stream cannot have (mint/projection.py).
FOREIGN = (DecodeError, ForeignRecord)
# Without a limit, the client waits for a broker for as long as it takes: bounded calls
# keep the loop in charge (backing off, answering stop) while Kafka is away.
KAFKA_CALL_TIMEOUT_MS = 10_000
# Events written as one batch: large enough to keep the sink's writers busy and to
# coalesce the pointer moves of a catch-up, small enough that a failed batch is cheap to
# do again. A live projector's polls return at once with what there is, however few.
POLL_RECORDS = 1000


def rebuild(event_log: EventLog, sink: S3Sink) -> int:
    """Project the whole log from the beginning into `sink`; return events applied. A
    record no registry wrote is skipped and logged, as the live projector skips it."""
    planner, count = Planner(), 0
    batch: list[Operation] = []
    for recorded in event_log.read_all(on_foreign=_log_foreign):
        try:
            batch += planner.plan(recorded)
        except FOREIGN as exc:
            position = recorded.position
            _log_foreign(position.partition, position.offset, f"{type(exc).__name__}: {exc}")
            continue
        count += 1
        if count % POLL_RECORDS == 0:
            sink.apply(batch)
            batch = []
    sink.apply(batch)
    return count


def _log_foreign(partition: int, offset: int, why: str) -> None:
    log.error(
        "partition %d offset %d is not an event a registry wrote (%s); skipped: "
        "run `python -m mint.audit verify` to see what else the log holds",
        partition,
        offset,
        why,
    )


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.fresh: set[int] = set()
        self.revoked: set[int] = set()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.revoked |= {tp.partition for tp in revoked}
        self.fresh -= self.revoked

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.fresh |= {tp.partition for tp in assigned}


@dataclass
class Projector:
    kafka: KafkaConnection
    topic: str
    sink: S3Sink
    group_id: str = "mint-projector"
    # Static membership (KIP-345): a projector restarted under the same instance id takes
    # its partitions back at once instead of waiting out the dead one's session.
    instance_id: str | None = None
    session_timeout_ms: int = 10_000
    planners: dict[int, Planner] = field(default_factory=dict)  # one per partition
    applied: int = 0
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        self.metrics = ProjectorMetrics()
        self.assignments = _Assignments()
        self.consumer = KafkaConsumer(
            **self.kafka.options(),
            group_id=self.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=POLL_RECORDS,
            group_instance_id=self.instance_id,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.session_timeout_ms // 4,
        )
        subscribe_known(self.consumer, self.topic, self.assignments)

    def run(
        self,
        stop: threading.Event | None = None,
        stop_when_caught_up_s: float | None = None,
        report_every_s: float = 30.0,
    ) -> None:
        """Project until `stop` is set; or, with `stop_when_caught_up_s`, once partitions
        are assigned, nothing is left to project, and nothing arrived for that long.

        Kafka or S3 failing is not a reason to exit: the projector reports itself
        degraded, rewinds to its last commit, waits (longer after each failure) and
        tries again, so it carries on by itself when the servers return."""
        stop = stop or threading.Event()
        quiet_since = reported = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - reported > report_every_s:
                self._report()
                reported = time.monotonic()
            try:
                projected = self._round()
                # Back once something was projected or every partition's end was read
                # and reached (a member with no partition has nothing to wait for).
                if self.backoff.next_s and (projected or not any(self.lag().values())):
                    self._recovered()
                if projected:
                    quiet_since = time.monotonic()
                elif (
                    stop_when_caught_up_s is not None
                    and time.monotonic() - quiet_since > stop_when_caught_up_s
                    and self._caught_up()
                ):
                    return
            except TRANSIENT as exc:
                self._failed(exc, stop)

    def _round(self) -> bool:
        """Poll once and project what came; True if anything was projected."""
        self._catch_up_new_partitions()
        batches = self.consumer.poll(timeout_ms=500)
        # A partition assigned during this poll is projected from the next round, once
        # its state is rebuilt up to where the next round reads it from.
        pending = self.assignments.fresh | self.assignments.revoked
        operations: list[Operation] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in batches.items():
            planner = self.planners.get(tp.partition)
            if planner is None or tp.partition in pending:
                continue
            for record in records:
                operations += self._plan(planner, record, report=True)
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        if not offsets:
            return False
        self.sink.apply(operations)
        # Only now are the round's writes done: commit past them.
        self.consumer.commit(offsets, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        self.applied += sum(len(batches[tp]) for tp in offsets)
        return True

    def _plan(self, planner: Planner, record: Any, report: bool) -> list[Operation]:
        """What `record` writes. A record no registry wrote writes nothing and, the first
        time it is planned (`report`; not again on a catch-up), is logged and counted, so
        that one forged or corrupt record cannot stop the projection of every later
        event; `python -m mint.audit verify` names it too."""
        try:
            return planner.plan(to_recorded(record))
        except FOREIGN as exc:
            if not report:
                return []
            _log_foreign(record.partition, record.offset, f"{type(exc).__name__}: {exc}")
            self.metrics.skipped()
            return []

    def _failed(self, exc: Exception, stop: threading.Event) -> None:
        delay = self.backoff.failed()
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("projection failed (%s); retrying in %.1f s", reason, delay)
        self.metrics.degraded(reason)
        self._rewind()
        stop.wait(delay)

    def _recovered(self) -> None:
        log.info("projecting again")
        self.backoff.succeeded()
        self.metrics.recovered()

    def _rewind(self) -> None:
        """Forget what was planned past the last commits: every partition is caught up
        again from its committed offset, and the writes after it are done again (they
        are idempotent). Local only: Kafka may be down."""
        self.assignments.fresh |= {tp.partition for tp in self.consumer.assignment()}
        self.planners.clear()

    def _report(self) -> None:
        try:
            lag = self.lag()
        except TRANSIENT as exc:  # the next round finds out and backs off
            log.warning("lag unknown: %s", exc)
            return
        self.metrics.publish(self.applied, lag)
        log.info("applied %d events; lag per partition %s", self.applied, lag)

    def _caught_up(self) -> bool:
        return bool(self.planners) and not any(self.lag().values())

    def _catch_up_new_partitions(self) -> None:
        """Rebuild each fresh partition's state up to its committed offset and read on
        from exactly there."""
        for partition in self.assignments.revoked:
            self.planners.pop(partition, None)
        self.assignments.revoked = set()
        for partition in sorted(self.assignments.fresh):
            tp = TopicPartition(self.topic, partition)
            committed = self.consumer.committed(tp, timeout_ms=KAFKA_CALL_TIMEOUT_MS) or 0
            planner = Planner()
            for record in read_records(self.kafka, self.topic, {partition: 0}):
                if record.offset >= committed:
                    break
                self._plan(planner, record, report=False)  # state only: planned before
            self.consumer.seek(tp, committed)
            self.planners[partition] = planner
            self.assignments.fresh.discard(partition)
            log.info("partition %d: state rebuilt up to offset %d", partition, committed)

    def lag(self) -> dict[int, int]:
        """Records per partition not yet projected."""
        tps = [TopicPartition(self.topic, p) for p in self.planners]
        ends = self.consumer.end_offsets(tps, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        return {tp.partition: max(0, ends[tp] - self.consumer.position(tp)) for tp in tps}

    def close(self) -> None:
        self.consumer.close()
        self.sink.close()
