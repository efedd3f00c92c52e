"""The evaluator's loop: a consumer group on the events topic (read_committed).

A revision published to an adapter with a platform gate, or a platform gate set on an
adapter (for its newest revision), is a job: the evaluator reads the adapter from the
registry (what the log says now, evaluations included), scores each revision the gates
still need a verdict on with the suite's stored examples, and records the verdict as
the platform's principal under a request id derived from what it judged. A record
redelivered after a crash, or seen by a second replica during a rebalance, is scored
again at most, never recorded twice: the registry appends a request id once, and a
verdict already in the log is not scored at all. Offsets are committed only once every
job of a poll was recorded; after a failure (Kafka, S3, the registry) the loop backs
off and reads again from the last commit.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from mint.backends.kafka import KafkaConnection, subscribe_known
from mint.backends.kafka_reader import to_recorded
from mint.blobs.port import BlobStore
from mint.client import RegistryClient
from mint.domain.errors import DataLoss, Erased, InvalidArgument, NotFound, Unavailable
from mint.domain.events import ChannelGateSet, RevisionPublished
from mint.domain.gates import EXAMPLES, MEAN_LOGPROB, PLATFORM, THRESHOLD, parse_examples
from mint.eventlog.port import Recorded
from mint.serving.requests import RevisionRef
from mint.v1 import registry_pb2 as pb

from .jobs import Job, owed
from .metrics import EvaluatorMetrics
from .scorer import SuiteScorer

log = logging.getLogger(__name__)

TRANSIENT = (KafkaError, Unavailable, grpc.RpcError)
# The registry's answers that trying again will not change: the job is skipped (counted).
REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)
KAFKA_CALL_TIMEOUT_MS = 10_000
POLL_RECORDS = 100  # scoring, not reading, takes the time
BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.5, 30.0  # after failed rounds, doubling
NEWEST = 0  # a gate set: judge the adapter's newest revision


@dataclass
class Evaluator:
    kafka: KafkaConnection
    topic: str
    registry: RegistryClient  # with the platform principal's token
    blobs: BlobStore  # the suites' examples
    scorer: SuiteScorer
    group_id: str = "mint-evaluator"
    instance_id: str | None = None
    session_timeout_ms: int = 10_000
    failed_rounds: int = 0  # since the last round that succeeded

    def __post_init__(self) -> None:
        self.metrics = EvaluatorMetrics()
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
            # Scoring a poll's revisions may take minutes on a large base.
            max_poll_interval_ms=30 * 60_000,
        )
        subscribe_known(self.consumer, self.topic)

    def run(self, stop: threading.Event) -> None:
        """Evaluate until `stop` is set; Kafka, S3 or the registry failing only delays it."""
        while not stop.is_set():
            try:
                self.round()
                if self.failed_rounds:
                    self.failed_rounds = 0
                    self.metrics.recovered()
            except TRANSIENT as exc:
                self.failed_rounds += 1
                delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** (self.failed_rounds - 1))
                log.warning("evaluation failed (%s); retrying in %.1f s", exc, delay)
                self.metrics.degraded(f"{type(exc).__name__}: {exc}")
                self._rewind()
                stop.wait(delay)

    def round(self) -> int:
        """Poll once, record every verdict owed, commit; the number of events read."""
        batches = self.consumer.poll(timeout_ms=500)
        offsets = {}
        for tp, records in batches.items():
            for record in records:
                self.handle(to_recorded(record))
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        if offsets:
            self.consumer.commit(offsets, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        read = sum(len(records) for records in batches.values())
        self.metrics.events.inc(read)
        return read

    def handle(self, recorded: Recorded) -> None:
        stream, event = recorded.envelope.stream_id, recorded.event
        if isinstance(event, RevisionPublished):
            self.evaluate(stream, event.revision)
        elif isinstance(event, ChannelGateSet) and event.requirement == PLATFORM:
            self.evaluate(stream, NEWEST)

    def evaluate(self, ref: str, revision: int) -> None:
        """Record every verdict `ref`'s platform gates still lack on `revision` (NEWEST:
        its newest revision, if it has any)."""
        try:
            adapter = self.registry.get_adapter(ref)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise
        number = len(adapter.revisions) if revision == NEWEST else revision
        if adapter.archived or adapter.erased or not 1 <= number <= len(adapter.revisions):
            return
        for job in owed(adapter, [number]):
            try:
                self._judge(job, adapter.base_fingerprint, adapter.revisions[number - 1])
            except grpc.RpcError as exc:
                if exc.code() not in REFUSALS:
                    raise  # the registry away, or this evaluator's token refused: retried
                self._skip(job, "refused", exc.details())  # archived meanwhile, say

    def _skip(self, job: Job, reason: str, why: object) -> None:
        log.error("cannot evaluate %s@%d on %s: %s", job.ref, job.revision, job.suite, why)
        self.metrics.skipped.labels(reason).inc()

    def _judge(self, job: Job, base: str, revision: pb.Revision) -> None:
        try:
            examples = parse_examples(self.blobs.get(job.adapter_id, job.examples_sha256))
        except Erased as exc:  # erased since the registry answered: nothing to judge
            return self._skip(job, "erased", exc)
        except (NotFound, DataLoss, InvalidArgument) as exc:
            return self._skip(job, "examples", exc)
        if base != self.scorer.base_fingerprint:
            return self._skip(job, "base", "its base is not the one this evaluator holds")
        ref = RevisionRef(
            job.adapter_id,
            job.ref,
            job.revision,
            revision.weights_sha256,
            revision.weights_size,
            base,
            revision.config_json,
        )
        weights = self.registry.download_weights(job.ref, job.revision)
        started = time.perf_counter()
        try:
            scored = self.scorer.score(ref, weights, examples)
        except (InvalidArgument, DataLoss) as exc:  # too long, too high a rank, altered
            return self._skip(job, "unscorable", exc)
        self.metrics.seconds.observe(time.perf_counter() - started)
        passed = scored.mean_token_logprob >= job.threshold
        metrics = {
            MEAN_LOGPROB: scored.mean_token_logprob,
            THRESHOLD: job.threshold,
            EXAMPLES: float(len(examples)),
            "tokens": float(scored.tokens),
        }
        self.registry.record_evaluation(
            job.ref,
            job.revision,
            job.suite,
            metrics,
            passed,
            request_id=job.request_id,
            dataset_fingerprint=job.examples_sha256,
        )
        self.metrics.verdicts.labels("passed" if passed else "failed").inc()
        log.info(
            "%s@%d on %s: %s (%.3f against %g)",
            job.ref,
            job.revision,
            job.suite,
            "passed" if passed else "failed",
            scored.mean_token_logprob,
            job.threshold,
        )

    def _rewind(self) -> None:
        """Read again from the last commit: what was handled since is judged again,
        which records nothing twice."""
        try:
            for tp in self.consumer.assignment():
                committed = self.consumer.committed(tp, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
                self.consumer.seek(tp, committed or 0)
        except KafkaError as exc:  # the next round finds out
            log.warning("could not rewind: %s", exc)

    def close(self) -> None:
        self.consumer.close()
        self.registry.close()
