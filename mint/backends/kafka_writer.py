"""The single writer of a replica's partitions, with group commit.

One transactional producer per replica writes every partition the replica owns. Callers
queue their command and wait; one committer thread drains the queue, checks each
command against its partition's state (rebuilt when the partition was taken) plus the
commands before it in the batch, sends all surviving events in one transaction, and
wakes every caller with its own result or error. While a transaction is in flight the
next batch gathers, so batches grow with the load, across partitions.

Who may write a partition is settled by transactional ids (KIP-98 fencing):
- static ownership (`claims` None: this replica owns every partition): the id is fixed,
  so a second instance fences the first with `init_transactions`;
- group ownership: each producer a replica creates gets an id never used before, and
  `Claims` records which id writes each partition. Taking a partition fences the id
  that claimed it before, then claims it, then rebuilds the state, in that order: every
  earlier writer is fenced by the one after it, so once the state is rebuilt no other
  producer can commit to the partition (kafka_ownership.py).
After a failed transaction the writer drops its producer and every partition's state;
each partition is taken again (fence, claim, rebuild) before its next command, so the
outcome of an ambiguous commit is read back from the log, never guessed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
# default caps a producer near 10 transactions per second.
TXN_RETRY_BACKOFF_MS = 5
APPEND_TIMEOUT_S = 60.0
STATE_WAIT_S = 10.0
# Well under Kafka's default 1 MiB record limit: one oversized event must fail alone, not
# poison the transaction it would share with other commands.
MAX_EVENT_BYTES = 256 * 1024


class Claims(Protocol):
    """Which transactional id writes which partition (group ownership)."""

    def new_transactional_id(self) -> str:
        """An id no producer has used before."""
        ...

    def previous_writer(self, partition: int) -> str | None:
        """The id that last claimed `partition`, if any. Raises Unavailable if this
        replica is not assigned the partition now."""
        ...

    def claim(self, partition: int, transactional_id: str) -> None:
        """Record `transactional_id` as the partition's writer. Raises Unavailable if this
        replica is not assigned the partition in the group's current generation."""
        ...


@dataclass
class PartitionState:
    """What a partition's writer knows: every stream's events and every request id."""

    streams: dict[str, list[Recorded]] = field(default_factory=dict)
    requests: dict[tuple[str, str], AppendResult] = field(default_factory=dict)

    def observe(self, recorded: Recorded) -> None:
        env = recorded.envelope
        self.streams.setdefault(env.stream_id, []).append(recorded)
        key = (env.stream_id, env.request_id)
        first = self.requests.get(key)
        start = first.first_version if first else env.stream_version
        self.requests[key] = AppendResult(env.stream_id, start, env.stream_version, True)


@dataclass
class _Pending:
    partition: int
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


class LogWriter:
    def __init__(
        self, bootstrap: str, topic: str, transactional_id: str, claims: Claims | None = None
    ) -> None:
        self.bootstrap, self.topic, self.claims = bootstrap, topic, claims
        self.static_id = transactional_id
        # Guards the state (partitions, producer): held while checking a batch, recording
        # a committed one and taking a partition, never during a commit's round trips.
        self.lock = threading.Lock()
        # Held by the committer for a whole batch, and by a take: a partition is never
        # rebuilt while a transaction that writes it is in flight.
        self._committing = threading.Lock()
        self.assigned: set[int] = set()  # what this replica was told to own
        self.partitions: dict[int, PartitionState] = {}  # taken: fenced, claimed, rebuilt
        self.producer: KafkaProducer | None = None
        self.transactional_id = ""
        self.fenced_ids: set[str] = set()  # earlier writers this replica has fenced
        self.fenced = False  # static ownership only: another instance took over for good
        self._queue: list[_Pending] = []
        self._queued = threading.Condition()  # guards _queue, _closing
        self._closing = False
        self._committer: threading.Thread | None = None  # started by the first take

    # ---- ownership -------------------------------------------------------------------

    def take(self, partition: int) -> None:
        """Own `partition`: fence its earlier writers, claim it, rebuild its state."""
        with self._queued:
            if self._committer is None and not self._closing:
                self._committer = threading.Thread(
                    target=self._commit_loop, name="commit", daemon=True
                )
                self._committer.start()
        with self._committing, self.lock:
            self.assigned.add(partition)
            self._take_locked(partition)

    def give_up(self, partition: int) -> None:
        with self.lock:
            self.assigned.discard(partition)
            self.partitions.pop(partition, None)

    def owned(self) -> set[int]:
        with self.lock:
            return set(self.partitions)

    def _take_locked(self, partition: int) -> None:
        if partition in self.partitions:
            return
        if self.fenced:
            raise Unavailable(f"partition {partition} moved to another writer; retry")
        self._producer_locked()
        if self.claims is not None:
            previous = self.claims.previous_writer(partition)
            if previous and previous != self.transactional_id:
                self._fence(previous)
            self.claims.claim(partition, self.transactional_id)
        state = PartitionState()
        for recorded in read_partitions(self.bootstrap, self.topic, {partition: 0}):
            state.observe(recorded)
        self.partitions[partition] = state

    def _producer_locked(self) -> KafkaProducer:
        if self.producer is None:
            # Static ownership reuses its id: that fences its own earlier producer too.
            txn_id = self.claims.new_transactional_id() if self.claims else self.static_id
            producer = durable_producer(
                self.bootstrap, transactional_id=txn_id, retry_backoff_ms=TXN_RETRY_BACKOFF_MS
            )
            try:
                producer.init_transactions()
            except KafkaError:
                _close(producer)
                raise
            self.producer, self.transactional_id = producer, txn_id
        return self.producer

    def _fence(self, transactional_id: str) -> None:
        """Make `transactional_id` unusable: its open transaction is aborted, its later
        writes fail. Its owner never re-initialises an id, so this is for good."""
        if transactional_id in self.fenced_ids:
            return
        fencer = durable_producer(self.bootstrap, transactional_id=transactional_id)
        try:
            fencer.init_transactions()
        finally:
            _close(fencer)
        self.fenced_ids.add(transactional_id)

    def _drop_locked(self, fenced: bool) -> None:
        """After a failed transaction: no producer, no state; partitions are taken again."""
        producer, self.producer = self.producer, None
        if producer is not None:
            _close(producer)
        self.partitions.clear()
        if fenced and self.claims is None:
            self.fenced = True  # another static instance owns every partition now

    # ---- reading ---------------------------------------------------------------------

    def read_stream(self, partition: int, stream_id: str) -> list[Recorded] | None:
        """The stream's events if this writer's state for its partition is current."""
        if partition not in self.partitions:
            return None
        if not self.lock.acquire(timeout=STATE_WAIT_S):
            raise Unavailable(f"partition {partition} is busy rebuilding; retry")
        try:
            state = self.partitions.get(partition)
            return None if state is None else list(state.streams.get(stream_id, []))
        finally:
            self.lock.release()

    # ---- appending -------------------------------------------------------------------

    def append(
        self,
        partition: int,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        meta: Metadata,
    ) -> AppendResult:
        pending = _Pending(partition, stream_id, expected_version, events, meta)
        with self._queued:
            if self._closing or self._committer is None:
                raise Unavailable(f"this replica does not own partition {partition}; retry")
            self._queue.append(pending)
            self._queued.notify()
        if not pending.done.wait(timeout=APPEND_TIMEOUT_S):
            raise Unavailable(
                f"append to partition {partition} timed out; retry with the same request id"
            )
        if pending.error is not None:
            raise pending.error
        if pending.result is None:  # its batch broke off unexpectedly
            raise Unavailable(f"append to partition {partition} was interrupted; retry")
        return pending.result

    def close(self) -> None:
        with self._queued:
            self._closing = True
            self._queued.notify()
        if self._committer is not None:
            self._committer.join(timeout=30)
        with self._queued:
            leftover, self._queue = self._queue, []
        for p in leftover:
            p.finish(error=Unavailable("this registry replica is shutting down; retry"))
        with self.lock:
            self.assigned.clear()
            self._drop_locked(fenced=False)

    def _commit_loop(self) -> None:
        while True:
            with self._queued:
                while not self._queue and not self._closing:
                    self._queued.wait()
                if self._closing:
                    return
                batch, self._queue = self._queue, []
            try:
                with self._committing:
                    self._commit_batch(batch)
            except Exception:  # never leave callers waiting; they see Unavailable
                log.exception("commit failed")
            finally:
                for p in batch:
                    p.done.set()

    def _commit_batch(self, batch: list[_Pending]) -> None:
        with self.lock:
            writable = self._writable_locked({p.partition for p in batch})
            for p in batch:
                if p.partition not in writable:
                    p.finish(error=writable_error(p.partition, self.assigned, self.fenced))
            accepted, repeats = self._check([p for p in batch if p.partition in writable])
            producer = self.producer
        if accepted:
            assert producer is not None
            try:
                # Without the lock: readers see the committed state while this is in
                # flight. Only this thread changes a taken partition's state.
                offsets = self._send_in_one_transaction(producer, accepted)
            except DomainError as exc:
                for p in accepted:
                    p.finish(error=exc)
            else:
                self._record(accepted, offsets)
        for repeat, first in repeats:  # the same request twice in one batch: one append
            result = first.result and AppendResult(
                first.result.stream_id,
                first.result.first_version,
                first.result.last_version,
                duplicate=True,
            )
            repeat.finish(result, first.error)

    def _writable_locked(self, wanted: set[int]) -> set[int]:
        """Of `wanted`, the partitions taken now; assigned ones are taken first if needed."""
        for partition in sorted((wanted & self.assigned) - set(self.partitions)):
            try:
                self._take_locked(partition)
            except (KafkaError, DomainError) as exc:
                log.warning("could not take partition %d: %s", partition, exc)
        return wanted & set(self.partitions)

    def _record(self, accepted: list[_Pending], offsets: list[int]) -> None:
        with self.lock:
            for p in accepted:
                state = self.partitions.get(p.partition)
                for envelope in p.envelopes:
                    position = Position(p.partition, offsets.pop(0))
                    if state is not None:  # given up meanwhile: its next owner reads it
                        state.observe(Recorded(envelope, position))
        for p in accepted:
            p.finish(
                AppendResult(
                    p.stream_id, p.expected_version + 1, p.expected_version + len(p.events)
                )
            )

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
            state = self.partitions[p.partition]
            key = (p.stream_id, p.meta.request_id)
            if key in state.requests:
                p.finish(state.requests[key])
                continue
            if key in seen:
                repeats.append((p, seen[key]))
                continue
            stream = state.streams.get(p.stream_id, [])
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

    def _send_in_one_transaction(self, producer: KafkaProducer, batch: list[_Pending]) -> list[int]:
        try:
            producer.begin_transaction()
            futures = [
                producer.send(
                    self.topic,
                    key=p.stream_id.encode(),
                    value=e.SerializeToString(),
                    partition=p.partition,
                    headers=[("event-type", e.event_type.encode())],
                )
                for p in batch
                for e in p.envelopes
            ]
            producer.commit_transaction()
            return [int(f.get(timeout=30).offset) for f in futures]
        except ProducerFencedError as exc:
            with self.lock:
                self._drop_locked(fenced=True)
            raise Unavailable("this partition moved to another writer; retry") from exc
        except KafkaError as exc:
            # Ambiguous: the transaction may or may not have committed. Every partition
            # is taken again before its next command (fencing this producer's id first),
            # so a retry with the same request id finds out which.
            with self.lock:
                self._drop_locked(fenced=False)
            raise Unavailable(f"append failed ({exc}); retry with the same request id") from exc


def writable_error(partition: int, assigned: set[int], fenced: bool) -> Unavailable:
    if fenced:
        return Unavailable(f"partition {partition} moved to another writer; retry")
    if partition in assigned:
        return Unavailable(f"partition {partition} is not writable here right now; retry")
    return Unavailable(f"this replica does not own partition {partition}; retry elsewhere")


def _close(producer: KafkaProducer) -> None:
    with contextlib.suppress(KafkaError):  # a failed flush must not keep it open
        producer.close(timeout=2)
