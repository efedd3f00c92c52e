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
  `Claims` records which id (and which take of it) writes each partition. Taking a
  partition fences the id that claimed it before, unless the snapshot table says that
  very claim gave the partition up (it writes it no more), then claims it, then rebuilds
  the state, in that order: so once the state is rebuilt no other producer can commit to
  the partition (kafka_claims.py, kafka_ownership.py).
After a failed transaction the writer drops its producer, and a background thread takes
each partition again (fence, claim, catch up from the last offset it knew; commands
meanwhile get a retryable error), so the outcome of an ambiguous commit, or of one that
took too long (kafka_transaction.py), is read back from the log, never guessed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from kafka import KafkaProducer
from kafka.errors import KafkaError, ProducerFencedError

from mint.deadlines import time_left
from mint.domain.errors import DomainError, Unavailable
from mint.domain.events import Event
from mint.eventlog.port import AppendResult, Metadata
from mint.v1.snapshots_pb2 import StreamSnapshot

from .kafka import KafkaConnection, durable_producer
from .kafka_batch import PartitionState, PendingAppend, check_batch, log_foreign
from .kafka_claims import (
    Claims,
    NotHeld,
    earlier_writers,
    new_claim,
    writable_error,
    writer_of,
)
from .kafka_producers import FENCER, WRITER_PRODUCER, close_producer
from .kafka_reader import read_partitions
from .kafka_rewrites import Rewrite, first_chunks, snapshots_summary
from .kafka_snapshots import SnapshotTable, snapshot_topic
from .kafka_transaction import Transaction, stage

log = logging.getLogger(__name__)

# Every wait of the writer ends well within a client's deadline (30 s by default, and a
# caller's own deadline cuts these shorter: mint/deadlines.py), with a retryable answer.
APPEND_TIMEOUT_S = 20.0
STATE_WAIT_S = 10.0
# A take reads the partition to its high watermark: an open transaction of a writer that
# was not fenced holds it up, and the take fails rather than miss that writer's records.
TAKE_STALL_S = 30.0
RETAKE_EVERY_S = 1.0  # how often a partition that could not be taken again is retried
# How long a new owner waits for the previous one's word that it gave a partition up,
# before fencing it instead. The previous owner gives up what a rebalance moved once the
# rebalance settles (kafka_ownership.SETTLE_S) and says so in its next transaction.
RELEASE_WAIT_S = 1.0


class LogWriter:
    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        transactional_id: str,
        claims: Claims | None = None,
    ) -> None:
        self.kafka, self.topic, self.claims = kafka, topic, claims
        self.snapshots = snapshot_topic(topic)
        self.static_id = transactional_id
        # Guards the state below; never held during a round trip to Kafka except to
        # create the producer.
        self.lock = threading.Lock()
        self.assigned: set[int] = set()  # what this replica was told to own
        self.partitions: dict[int, PartitionState] = {}  # taken: fenced, claimed, current
        # States of assigned partitions not taken now: a prefix of each, to catch up from.
        self._earlier: dict[int, PartitionState] = {}
        self._in_flight: set[int] = set()  # partitions of the transaction being committed
        self._landed = threading.Condition(self.lock)  # notified when that set empties
        # One take of a partition at a time; different partitions are taken in parallel,
        # so one without a leader does not hold up the others.
        self._taking: dict[int, threading.Lock] = {}
        self.producer: KafkaProducer | None = None
        self.transactional_id = ""
        self.fenced_ids: set[str] = set()  # earlier writers this replica has fenced
        self.fenced = False  # static ownership only: another instance took over for good
        # Taken partitions whose snapshots are to be written whole (with tombstones for
        # these leftover keys) in the next transaction: none were valid, or they lagged.
        self._rewrite: dict[int, Rewrite] = {}
        # Partitions read from the log by a take that then failed (their state kept in
        # `_earlier`), with the leftover keys: the take that succeeds owes their rewrite.
        self._owed: dict[int, set[bytes]] = {}
        self._claims: dict[int, str] = {}  # partition -> this writer's claim of it
        # Partitions given up, with their last state and claim: the next transaction
        # writes a summary saying so (released_by), then they are forgotten.
        self._releasing: dict[int, tuple[PartitionState, str]] = {}
        self._queue: list[PendingAppend] = []
        self._queued = threading.Condition()  # guards _queue, _closing
        self._closing = False
        self._threads: list[threading.Thread] = []  # committer and taker, from the first take
        self._retake_due = threading.Event()  # an assigned partition is not held

    # ---- ownership -------------------------------------------------------------------

    def take(self, partition: int) -> None:
        """Own `partition`: fence its earlier writers, claim it, catch its state up."""
        with self._queued:
            if not self._threads and not self._closing:
                self._threads = [
                    threading.Thread(target=self._commit_loop, name="commit", daemon=True),
                    threading.Thread(target=self._retake_loop, name="retake", daemon=True),
                ]
                for thread in self._threads:
                    thread.start()
        with self.lock:
            self.assigned.add(partition)
        self._take(partition)

    def give_up(self, partition: int) -> None:
        """Stop writing `partition` and forget its state: another replica owns it now, and
        a replica that keeps what it gave away grows with every partition it ever held.
        Under group ownership the next transaction says so in the snapshot table, so the
        next owner need not fence this writer (which would stop its other partitions)."""
        with self.lock:
            self.assigned.discard(partition)
            state = self.partitions.pop(partition, None)
            self._earlier.pop(partition, None)
            self._rewrite.pop(partition, None)
            self._owed.pop(partition, None)
            claim = self._claims.pop(partition, None)
            if state is None or claim is None:
                return
            self._releasing[partition] = (state, claim)
        with self._queued:
            self._queued.notify()

    def owned(self) -> set[int]:
        with self.lock:
            return set(self.partitions)

    def _take(self, partition: int) -> None:
        # setdefault is one atomic step: two threads never get two locks for a partition.
        with self._taking.setdefault(partition, threading.Lock()):
            due = self._take_held(partition)
        if due:  # its rewrite waits for no take to run: told once this one is done
            with self._queued:
                self._queued.notify()

    def _take_held(self, partition: int) -> bool:
        """`_take` under the partition's take lock: whether a rewrite of it is due."""
        with self.lock:
            if partition in self.partitions:
                return False
            if self.fenced:
                raise Unavailable(f"partition {partition} moved to another writer; retry")
            if self._closing:
                raise Unavailable("this registry replica is shutting down")
            while partition in self._in_flight:  # given up mid-commit: let it land
                if not self._landed.wait(timeout=APPEND_TIMEOUT_S):
                    raise Unavailable(f"a commit to partition {partition} is stuck")
            producer = self._producer_locked()
            state = self._earlier.pop(partition, None)
        rewrite: set[bytes] | None = None  # the snapshot keys to replace, if any
        restored = state is None
        try:
            if state is None:  # new to this replica: from the snapshots, if they hold
                table = SnapshotTable(self.kafka, self.topic, partition)
                self._fence_earlier_writers(partition, table)
                state, rewrite = self._restore(partition, table)
            else:
                self._fence_earlier_writers(partition, None)
            tail = read_partitions(
                self.kafka,
                self.topic,
                {partition: state.next_offset},
                stall_s=TAKE_STALL_S,
                past_open_transactions=True,
                on_foreign=log_foreign,
            )
            caught_up = state.observe(tail)  # as it is read: a chunk of it held at a time
        except BaseException:
            with self.lock:
                if state is not None:
                    self._keep_earlier_locked(partition, state)
                    if restored:  # read from its start: its snapshots may not hold
                        self._owe_locked(partition, rewrite or set())
            raise
        with self.lock:
            owed = self._owed.pop(partition, None)
            # No valid snapshots (and something to write), events past them (written
            # by a writer that kept none), or an earlier take that read the partition
            # from the log failed before writing them: write them all.
            if (rewrite is not None and (state.streams or rewrite)) or (restored and caught_up):
                owed = (owed or set()) | (rewrite or set())
            if self.producer is producer and partition in self.assigned:
                self.partitions[partition] = state
                if owed is not None:
                    self._rewrite[partition] = Rewrite.of(state, owed)
                due = partition in self._rewrite
            else:
                self._keep_earlier_locked(partition, state)
                if owed is not None:
                    self._owe_locked(partition, owed)
                due = None
        if due is None:
            raise Unavailable(f"partition {partition} changed hands while being taken; retry")
        return due

    def _restore(
        self, partition: int, table: SnapshotTable
    ) -> tuple[PartitionState, set[bytes] | None]:
        """The partition's state from its snapshots; if they do not hold, an empty state to
        read the whole partition into, and the snapshot keys to replace afterwards."""
        table.read(TAKE_STALL_S)  # on to the end, now that no earlier writer can add to it
        restored = table.restored()
        if restored.state is not None:
            return restored.state, None
        if restored.why:
            log.warning(
                "partition %d: snapshots not used (%s); reading the log", partition, restored.why
            )
        return PartitionState(), restored.keys

    def _release_summaries(self) -> dict[int, bytes]:
        """Only by the producer that made the claim: one made since (after a failed
        transaction) cannot vouch for what the claimant's last transaction held."""
        return {
            partition: snapshots_summary(state, released_by=claim)
            for partition, (state, claim) in self._releasing.items()
            if writer_of(claim) == self.transactional_id
        }

    def _rewrite_chunks(self) -> dict[int, Rewrite]:
        """The next snapshots to write again (kafka_rewrites.first_chunks). None while a
        partition is being taken: a take reading a large partition holds the interpreter
        so much that the producer's records expire before they are sent (seen at 10^6
        adapters, six partitions taken side by side)."""
        if self._taking_now():
            return {}
        return first_chunks(self._rewrite, self.partitions)

    def _rewrite_due(self) -> bool:
        """A taken partition's snapshots are to be written whole (once no take runs)."""
        return not self._taking_now() and any(p in self.partitions for p in list(self._rewrite))

    def _taking_now(self) -> bool:
        return any(lock.locked() for lock in list(self._taking.values()))

    def _keep_earlier_locked(self, partition: int, state: PartitionState) -> None:
        """Keep a prefix of an assigned partition to catch up from on the next take."""
        if partition in self.assigned:
            self._earlier[partition] = state

    def _owe_locked(self, partition: int, leftover: set[bytes]) -> None:
        """The next take of `partition` (from the state kept in `_earlier`) writes its
        snapshots whole: a failed take must not lose that they are due."""
        if partition in self.assigned:
            self._owed[partition] = self._owed.get(partition, set()) | leftover

    def _fence_earlier_writers(self, partition: int, table: SnapshotTable | None) -> None:
        """Group ownership: fence whoever claimed `partition` before, unless it gave the
        partition up under that very claim (the snapshot table says so), then claim it."""
        if self.claims is None:  # static: the fixed id fenced any other static instance
            return
        previous = self.claims.previous_writer(partition)
        earlier = earlier_writers(previous, self.static_id, partition) - {self.transactional_id}
        released = (
            previous is not None
            and bool(earlier)
            and table is not None
            and table.wait_for_release(previous, RELEASE_WAIT_S, TAKE_STALL_S)
        )
        if not released:
            for transactional_id in sorted(earlier):
                self._fence(transactional_id)
        claim = new_claim(self.transactional_id, self.claims.advertised)
        self.claims.claim(partition, claim)
        with self.lock:
            self._claims[partition] = claim

    def _producer_locked(self) -> KafkaProducer:
        if self.producer is None:
            # Static ownership reuses its id: that fences its own earlier producer too.
            txn_id = self.claims.new_transactional_id() if self.claims else self.static_id
            producer = durable_producer(self.kafka, transactional_id=txn_id, **WRITER_PRODUCER)
            try:
                producer.init_transactions()
            except KafkaError:
                close_producer(producer)
                raise
            self.producer, self.transactional_id = producer, txn_id
        return self.producer

    def _fence(self, transactional_id: str) -> None:
        """Make `transactional_id` unusable: its open transaction is aborted, its later
        writes fail. Its owner never re-initialises an id, so this is for good."""
        if transactional_id in self.fenced_ids:
            return
        fencer = durable_producer(self.kafka, transactional_id=transactional_id, **FENCER)
        try:
            fencer.init_transactions()
        finally:
            close_producer(fencer)
        self.fenced_ids.add(transactional_id)

    def _drop_locked(self, fenced: bool) -> None:
        """After a failed transaction: no producer; every partition is taken again."""
        producer, self.producer = self.producer, None
        if producer is not None:
            close_producer(producer, timeout_s=0)  # its transaction is settled by fencing its id
        self._earlier.update(self.partitions)
        self.partitions.clear()
        if fenced and self.claims is None:
            self.fenced = True  # another static instance owns every partition now
            self._earlier.clear()
        self._retake_due.set()

    def _retake_loop(self) -> None:
        """Take again, in the background, assigned partitions a failure dropped: the
        committer never waits for a take, and partitions are taken side by side."""
        while not self._closing:
            self._retake_due.wait(timeout=RETAKE_EVERY_S)
            self._retake_due.clear()
            with self.lock:
                missing = sorted(self.assigned - set(self.partitions))
            if missing:
                with ThreadPoolExecutor(len(missing), thread_name_prefix="retake") as pool:
                    pool.map(self._retake, missing)

    def _retake(self, partition: int) -> None:
        try:
            self._take(partition)
        except Exception as exc:  # the next round retries; the rest go on
            log.warning("could not take partition %d again: %s", partition, exc)

    # ---- reading ---------------------------------------------------------------------

    def snapshot(self, partition: int, stream_id: str) -> StreamSnapshot | None:
        """The stream's snapshot (None: no such stream). Raises NotHeld if this writer holds
        no current state for the partition."""
        if partition not in self.partitions:
            raise NotHeld(partition)
        if not self.lock.acquire(timeout=time_left(STATE_WAIT_S)):
            raise Unavailable(f"partition {partition} is busy rebuilding; retry")
        try:
            state = self.partitions.get(partition)
            if state is None:
                raise NotHeld(partition)
            return state.snapshot(stream_id)
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
        wait_s = time_left(APPEND_TIMEOUT_S)
        if wait_s <= 0:
            raise Unavailable("the call's deadline leaves no time to append; retry with more")
        pending = PendingAppend(partition, stream_id, expected_version, events, meta)
        with self._queued:
            if self._closing or not self._threads:
                raise Unavailable(f"this replica does not own partition {partition}; retry")
            self._queue.append(pending)
            self._queued.notify()
        return pending.outcome(wait_s)

    def close(self) -> None:
        # Partitions given up on the way out (leaving the group revokes them) are said to
        # be released first, so their next owners need not fence this writer.
        deadline = time.monotonic() + RELEASE_WAIT_S * 4
        while self._releasing and self._threads and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._queued:
            self._closing = True
            self._queued.notify()
        self._retake_due.set()
        for thread in self._threads:
            thread.join(timeout=30)
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
                while (
                    not self._queue
                    and not self._closing
                    and not self._rewrite_due()
                    and not self._releasing
                ):
                    self._queued.wait(timeout=RETAKE_EVERY_S)
                if self._closing:
                    return
                batch, self._queue = self._queue, []
            try:
                self._commit_batch(batch)
            except Exception:  # never leave callers waiting; they see Unavailable
                log.exception("commit failed; taking every partition again")
                with self.lock:  # whatever happened, do not trust the state
                    self._drop_locked(fenced=False)
            finally:
                for p in batch:
                    p.done.set()

    def _commit_batch(self, batch: list[PendingAppend]) -> None:
        with self.lock:
            taken = self._refuse_untaken_locked(batch)
            accepted, repeats = check_batch(taken, self.partitions)
            txn = self._gather_locked(accepted)
            producer = self.producer
            self._in_flight = txn.partitions
        try:
            if txn.accepted and producer is None:  # taken partitions always have one: a bug
                raise RuntimeError("partitions are taken but there is no producer")
            if producer is not None and txn:
                # Without the lock: readers see the committed state while this is in
                # flight. Only this thread changes a taken partition's state.
                self._send(producer, txn)
                self._record(txn)
        except DomainError as exc:
            for p in txn.accepted:
                p.finish(error=exc)
        finally:
            with self.lock:
                self._in_flight = set()
                self._landed.notify_all()
        for repeat, first in repeats:  # the same request twice in one batch: one append
            repeat.finish_as_repeat_of(first)

    def _refuse_untaken_locked(self, batch: list[PendingAppend]) -> list[PendingAppend]:
        """The commands to partitions taken here; the others are answered now."""
        for p in batch:
            if p.partition not in self.partitions:
                p.finish(error=writable_error(p.partition, self.assigned, self.fenced))
                if p.partition in self.assigned:
                    self._retake_due.set()
        return [p for p in batch if p.partition in self.partitions]

    def _gather_locked(self, accepted: list[PendingAppend]) -> Transaction:
        """The next transaction: the commands, a chunk of the rewrites due, the releases."""
        accepted, staged = stage(accepted, self.partitions)
        rewrites = self._rewrite_chunks()
        states = {p: self.partitions[p] for p in set(staged) | set(rewrites)}
        # Given up and not taken back meanwhile; tried once (if this transaction fails,
        # the next owner fences this writer instead).
        releases = {
            p: summary
            for p, summary in self._release_summaries().items()
            if p not in self.partitions
        }
        self._releasing.clear()
        return Transaction(accepted, staged, states, rewrites, releases)

    def _send(self, producer: KafkaProducer, txn: Transaction) -> None:
        try:
            txn.send(producer, self.topic, self.snapshots)
        except ProducerFencedError as exc:
            with self.lock:
                self._drop_locked(fenced=True)
            raise Unavailable("this partition moved to another writer; retry") from exc
        except Exception as exc:
            # Ambiguous: the transaction may or may not have committed. Every partition
            # is taken again before its next command (fencing this producer's id first),
            # so a retry with the same request id finds out which.
            with self.lock:
                self._drop_locked(fenced=False)
            raise Unavailable(f"append failed ({exc}); retry with the same request id") from exc

    def _record(self, txn: Transaction) -> None:
        with self.lock:
            for partition, chunk in txn.rewrites.items():
                pending = self._rewrite.get(partition)
                if pending is not None and pending.drop(chunk):
                    del self._rewrite[partition]
            for partition, snapshots in txn.staged.items():
                # Given up meanwhile: its release, in the next transaction, says this.
                state = self.partitions.get(partition) or self._releasing.get(partition, (None,))[0]
                if state is not None:
                    state.keep(snapshots)
        txn.answer()
