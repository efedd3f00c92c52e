"""The single writer of one partition, with group commit.

Commands for a partition are checked against its in-memory state (rebuilt from the log
when the partition was taken) and appended in Kafka transactions. Callers queue their
command and wait; one committer thread per partition drains the queue, checks each
command against the state plus the commands before it in the batch, sends all surviving
events in one transaction, and wakes every caller with its own result or error. While a
transaction is in flight the next batch gathers, so batches grow with the load.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError, ProducerFencedError

from mint.domain.errors import DomainError, InvalidArgument, Unavailable, VersionConflict
from mint.domain.events import Event
from mint.eventlog.port import AppendResult, Metadata, Position, Recorded, build_envelopes
from mint.v1.events_pb2 import EventEnvelope

from .kafka import durable_producer
from .kafka_reader import read_partitions

log = logging.getLogger(__name__)

# After a commit the broker is still writing the markers; the next transaction's first
# request gets CONCURRENT_TRANSACTIONS and retries after this backoff. The client's 100 ms
# default caps a partition near 10 transactions per second.
TXN_RETRY_BACKOFF_MS = 5
APPEND_TIMEOUT_S = 60.0
# Well under Kafka's default 1 MiB record limit: one oversized event must fail alone, not
# poison the transaction it would share with other commands.
MAX_EVENT_BYTES = 256 * 1024


@dataclass
class _Pending:
    stream_id: str
    expected_version: int
    events: Sequence[Event]
    meta: Metadata
    done: threading.Event = field(default_factory=threading.Event)
    result: AppendResult | None = None
    error: DomainError | None = None
    envelopes: list[EventEnvelope] = field(default_factory=list)

    def finish(self, result: AppendResult | None = None, error: DomainError | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class PartitionWriter:
    def __init__(self, bootstrap: str, topic: str, partition: int, txn_prefix: str) -> None:
        self.bootstrap, self.topic, self.partition = bootstrap, topic, partition
        self.transactional_id = f"{txn_prefix}-p{partition}"
        self.lock = threading.Lock()  # guards the state: held while committing or rebuilding
        self._queue: list[_Pending] = []
        self._queued = threading.Condition()  # guards _queue, _closing
        self._closing = False
        self._committer: threading.Thread | None = None
        self.streams: dict[str, list[Recorded]] = {}
        self.requests: dict[tuple[str, str], AppendResult] = {}
        self.producer: KafkaProducer | None = None
        self.fenced = False  # another replica took the partition: never write again

    # ---- ownership -------------------------------------------------------------------

    def acquire(self) -> None:
        """Fence earlier owners, rebuild state from the partition (in that order), serve."""
        with self.lock:
            self._acquire_locked()
        with self._queued:
            self._closing = False
        if self._committer is None:
            self._committer = threading.Thread(
                target=self._commit_loop, name=f"commit-p{self.partition}", daemon=True
            )
            self._committer.start()

    def _acquire_locked(self) -> None:
        self._close_producer()
        producer = durable_producer(
            self.bootstrap,
            transactional_id=self.transactional_id,
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )
        producer.init_transactions()
        self.streams, self.requests = {}, {}
        for recorded in read_partitions(self.bootstrap, self.topic, {self.partition: 0}):
            self._observe(recorded)
        self.producer = producer

    def release(self) -> None:
        with self._queued:
            self._closing = True
            self._queued.notify()
        if self._committer is not None:
            self._committer.join(timeout=30)
            self._committer = None
        with self.lock:
            self._close_producer()
        with self._queued:
            leftover, self._queue = self._queue, []
        for p in leftover:
            p.finish(error=Unavailable(f"partition {self.partition} was given up; retry"))

    def _close_producer(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):  # a failed flush must not keep it set
                producer.close(timeout=2)

    def _observe(self, recorded: Recorded) -> None:
        env = recorded.envelope
        self.streams.setdefault(env.stream_id, []).append(recorded)
        key = (env.stream_id, env.request_id)
        first = self.requests.get(key)
        start = first.first_version if first else env.stream_version
        self.requests[key] = AppendResult(env.stream_id, start, env.stream_version, True)

    # ---- appending -------------------------------------------------------------------

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        pending = _Pending(stream_id, expected_version, events, meta)
        with self._queued:
            if self._closing or self._committer is None:
                raise Unavailable(f"partition {self.partition} is not owned here; retry")
            self._queue.append(pending)
            self._queued.notify()
        if not pending.done.wait(timeout=APPEND_TIMEOUT_S):
            raise Unavailable(
                f"append to partition {self.partition} timed out; retry with the same request id"
            )
        if pending.error is not None:
            raise pending.error
        if pending.result is None:  # its batch broke off unexpectedly
            raise Unavailable(f"append to partition {self.partition} was interrupted; retry")
        return pending.result

    def _commit_loop(self) -> None:
        while True:
            with self._queued:
                while not self._queue and not self._closing:
                    self._queued.wait()
                if self._closing:
                    return
                batch, self._queue = self._queue, []
            with self.lock:
                try:
                    self._commit_batch(batch)
                except Exception:  # never leave callers waiting; they see Unavailable
                    log.exception("commit to partition %d failed", self.partition)
                finally:
                    for p in batch:
                        p.done.set()

    def _commit_batch(self, batch: list[_Pending]) -> None:
        if self.producer is None and not self.fenced:
            # An earlier failure left the partition without a producer: take it again.
            with contextlib.suppress(KafkaError):
                self._acquire_locked()
        if self.producer is None:
            for p in batch:
                p.finish(
                    error=Unavailable(
                        f"partition {self.partition} is not writable here right now; retry"
                    )
                )
            return
        accepted, repeats = self._check(batch)
        if accepted:
            try:
                offsets = self._send_in_one_transaction(accepted)
            except DomainError as exc:
                for p in accepted:
                    p.finish(error=exc)
            else:
                for p in accepted:
                    for envelope in p.envelopes:
                        self._observe(Recorded(envelope, Position(self.partition, offsets.pop(0))))
                    p.finish(
                        AppendResult(
                            p.stream_id, p.expected_version + 1, p.expected_version + len(p.events)
                        )
                    )
        for repeat, first in repeats:  # the same request twice in one batch: one append
            result = first.result and AppendResult(
                first.result.stream_id,
                first.result.first_version,
                first.result.last_version,
                duplicate=True,
            )
            repeat.finish(result, first.error)

    def _check(
        self, batch: list[_Pending]
    ) -> tuple[list[_Pending], list[tuple[_Pending, _Pending]]]:
        """Settle retries and conflicts; build envelopes for the rest, in batch order.

        Returns the commands to append and (repeat, first) pairs of one request sent twice.
        """
        tails: dict[str, tuple[int, bytes]] = {}  # stream -> (version, hash) incl. this batch
        seen: dict[tuple[str, str], _Pending] = {}
        accepted: list[_Pending] = []
        repeats: list[tuple[_Pending, _Pending]] = []
        for p in batch:
            key = (p.stream_id, p.meta.request_id)
            if key in self.requests:
                p.finish(self.requests[key])
                continue
            if key in seen:
                repeats.append((p, seen[key]))
                continue
            stream = self.streams.get(p.stream_id, [])
            version, last_hash = tails.get(
                p.stream_id, (len(stream), stream[-1].envelope.hash if stream else b"")
            )
            if version != p.expected_version:
                p.finish(
                    error=VersionConflict(
                        f"stream {p.stream_id} is at version {version}, not {p.expected_version}: "
                        "re-read it and retry"
                    )
                )
                continue
            envelopes = build_envelopes(p.stream_id, version, last_hash, p.events, p.meta)
            too_big = [e for e in envelopes if e.ByteSize() > MAX_EVENT_BYTES]
            if too_big:
                p.finish(
                    error=InvalidArgument(
                        f"an event of {too_big[0].ByteSize():,} bytes exceeds the "
                        f"{MAX_EVENT_BYTES:,}-byte limit; shorten its labels, metrics or notes"
                    )
                )
                continue
            p.envelopes = envelopes
            tails[p.stream_id] = (version + len(p.events), p.envelopes[-1].hash)
            seen[key] = p
            accepted.append(p)
        return accepted, repeats

    def _send_in_one_transaction(self, batch: list[_Pending]) -> list[int]:
        assert self.producer is not None
        producer = self.producer
        try:
            producer.begin_transaction()
            futures = [
                producer.send(
                    self.topic,
                    key=p.stream_id.encode(),
                    value=e.SerializeToString(),
                    partition=self.partition,
                    headers=[("event-type", e.event_type.encode())],
                )
                for p in batch
                for e in p.envelopes
            ]
            producer.commit_transaction()
            return [int(f.get(timeout=30).offset) for f in futures]
        except ProducerFencedError as exc:
            self.fenced = True
            self._close_producer()  # another replica owns this partition now
            raise Unavailable(f"partition {self.partition} moved to another writer; retry") from exc
        except KafkaError as exc:
            # Ambiguous: the transaction may or may not have committed. Re-fence and
            # rebuild (now, or on the next append if Kafka is still away), so a retry with
            # the same request id finds out which.
            self._close_producer()
            with contextlib.suppress(KafkaError):
                self._acquire_locked()
            raise Unavailable(
                f"append to partition {self.partition} failed ({exc}); "
                "retry with the same request id"
            ) from exc
