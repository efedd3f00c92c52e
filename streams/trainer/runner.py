"""The trainer's loop: a Kafka consumer group on the events topic, applying each update
request it finds, in log order, one at a time.

An update's offset is committed only once every stage of it is done; a crash or a
rebalance before that delivers it again, and the stages already done are skipped (the
adapter's state says which) or append nothing (their request ids), so every request is
applied exactly once. Failures a retry can mend (Kafka, S3, the registry unreachable)
rewind to the last commit and back off; the trainer says `degraded` meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from mint.backends.kafka import KafkaConnection, subscribe_known
from mint.backends.kafka_reader import to_recorded
from mint.domain.errors import Unavailable
from mint.training.loop import UpdateLoop
from mint.training.port import job_of
from streams.backoff import Backoff

from .metrics import TrainerMetrics

log = logging.getLogger(__name__)

TRANSIENT = (KafkaError, Unavailable)
KAFKA_CALL_TIMEOUT_MS = 10_000
# Few records per poll: an update takes seconds, and the next poll must come within
# max.poll.interval.ms or the group takes the partitions away.
POLL_RECORDS = 100
MAX_POLL_INTERVAL_MS = 600_000


@dataclass
class Trainer:
    kafka: KafkaConnection
    topic: str
    loop: UpdateLoop
    group_id: str = "mint-trainer"
    instance_id: str | None = None
    session_timeout_ms: int = 10_000
    backoff: Backoff = field(default_factory=Backoff)
    applied: int = 0

    def __post_init__(self) -> None:
        self.metrics = TrainerMetrics()
        self.consumer = KafkaConsumer(
            **self.kafka.options(),
            group_id=self.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=POLL_RECORDS,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            group_instance_id=self.instance_id,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.session_timeout_ms // 4,
        )
        subscribe_known(self.consumer, self.topic)

    def run(self, stop: threading.Event | None = None) -> None:
        """Apply update requests until `stop` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self._round()
                if self.backoff.next_s:
                    log.info("training again")
                    self.backoff.succeeded()
                    self.metrics.recovered()
            except TRANSIENT as exc:
                delay = self.backoff.failed()
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("round failed (%s); retrying in %.1f s", reason, delay)
                self.metrics.degraded(reason)
                self._rewind()
                stop.wait(delay)

    def _round(self) -> None:
        for tp, records in self.consumer.poll(timeout_ms=500).items():
            for record in records:
                job = job_of(to_recorded(record))
                if job is None:
                    continue
                started = time.monotonic()
                result = self.loop.apply(job)
                self.metrics.applied(result.outcome, time.monotonic() - started)
                self.applied += 1
                log.info(
                    "update %s of %s: revision %d %s (%s)",
                    result.update_id,
                    job.ref,
                    result.revision,
                    result.outcome,
                    result.reason,
                )
                self._commit(tp, record.offset + 1)
            self._commit(tp, records[-1].offset + 1)  # past the other events too

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        offsets = {tp: OffsetAndMetadata(offset, "", -1)}
        self.consumer.commit(offsets, timeout_ms=KAFKA_CALL_TIMEOUT_MS)

    def _rewind(self) -> None:
        """Back to the last commit of each partition, so the update that failed is
        delivered again. If Kafka cannot say where that is, the process exits (and is
        restarted): reading on from here could skip a request."""
        try:
            for tp in self.consumer.assignment():
                committed = self.consumer.committed(tp, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
                self.consumer.seek(tp, committed or 0)
        except KafkaError as exc:
            raise SystemExit(f"cannot rewind to the last commit ({exc}); restart") from exc

    def close(self) -> None:
        self.consumer.close()
