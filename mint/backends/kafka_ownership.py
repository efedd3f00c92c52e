"""Partition ownership for registry replicas, decided by a Kafka consumer group.

Each replica joins one group on the event topic. Whatever partitions the group assigns
to a replica, it takes as their single writer (`KafkaEventLog.take`); whatever is
revoked or lost, it gives up. A replica that dies stops heartbeating and the group
reassigns its partitions after the session timeout.

A replica writes every partition it owns with one transactional producer, so the
transactional id cannot say who owns a partition. The group does: this class is the
writer's `Claims`. A claim is an offset commit for the partition whose metadata is the
writer's transactional id. The coordinator accepts a commit only from a member of the
current generation; that the partition is assigned to this member in that generation is
checked here, on the polling thread, where kafka-python updates the two together.
Taking a partition reads the previous claim and writes it back unchanged (the check
above, before fencing anyone), fences that id (its owner never re-initialises an id)
unless its owner gave the partition up under that claim (kafka_writer.py), claims, then
catches up: a zombie replica's claims fail on its stale generation, and its
producer was fenced by the next owner, so it can neither claim nor commit.

Assumptions, stated because the argument rests on them: a commit the coordinator has
validated is applied within `offsets.commit.timeout.ms` (5 s by default), shorter than
the session timeout (8 s), so a new generation cannot form around a claim in transit;
and claims outlive every writer they name (`offsets.retention.minutes`, 7 days, counts
only once the group is empty). Static ownership must not run beside a group on the same
topic: a take that finds no claim fences the static id and pre-claim ids, but a static
writer started later fences nobody in the group.

The consumer is not thread-safe, so claims run on the thread that polls it; taking a
partition is blocking I/O, which must not run inside the rebalance callbacks (they share
the consumer's heartbeat loop), so a reconciler thread applies the changes.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition

from mint.domain.errors import Unavailable

from .kafka import admin, subscribe_known
from .kafka_claims import address_of
from .kafka_log import KafkaEventLog

log = logging.getLogger(__name__)
RECONCILE_EVERY_S = 1.0
SETTLE_S = 0.2
POLL_MS = 50  # also how long a claim may wait for the polling thread
CLAIM_TIMEOUT_S = 30.0
CLAIM_TIMEOUT_MS = 10_000  # one round trip of a claim; the caller waits CLAIM_TIMEOUT_S
OWNERS_EVERY_S = 2.0  # how often a replica reads who owns the partitions it does not
UNTOLD_S = 5.0  # how long a join may stay between its JoinGroup and its assignment
T = TypeVar("T")


class Partitions(Protocol):
    """What ownership needs of the log: the partitions it writes (KafkaEventLog)."""

    def assigned(self) -> set[int]: ...
    def owned(self) -> set[int]: ...
    def take(self, partition: int) -> None: ...
    def give_up(self, partition: int) -> None: ...


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
        self.owner.told_in = self.owner.consumer.group_metadata().generation_id
        self.owner.want(self.owner.wanted() | {tp.partition for tp in tps})


def _claim(claim: str) -> OffsetAndMetadata:
    # The offset is unused (nothing consumes this group); the metadata is the claim.
    return OffsetAndMetadata(0, claim, -1)


class GroupOwnership:
    """Keeps the partitions this replica writes equal to what the group assigns it.

    A reconciler thread compares the latest wanted set with what is taken: it gives up
    the extra and takes the missing (retrying a failed take). Acting on the latest wish,
    never on a queue of old ones, means a replica slow to follow two quick rebalances
    does not take back a partition it no longer has.
    """

    def __init__(
        self,
        event_log: KafkaEventLog,
        group_id: str,
        session_timeout_ms: int = 8000,
        advertised: str = "",
    ) -> None:
        """`advertised`: this replica's registry address, named in its claims, so that
        other replicas can send a command for its partitions straight to it."""
        self.event_log, self.advertised = event_log, advertised
        self.group_id = group_id
        self._owners: dict[int, str] = {}  # partition -> its owner's address, as claimed
        self.instance = uuid.uuid4().hex[:12]
        self._producers = itertools.count(1)
        self._wanted: set[int] = set()
        self._changed = threading.Condition()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self.consumer = KafkaConsumer(
            **event_log.kafka.options(),
            group_id=group_id,
            enable_auto_commit=False,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 4, 500),
        )
        self.told_in = -1  # the generation whose assignment the listener was last told
        self._untold_since: float | None = None
        self._listener = _Listener(self)
        subscribe_known(self.consumer, event_log.topic, self._listener)
        event_log.use_claims(self)
        event_log.owner_of = self.owner_of
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, name="ownership-poll", daemon=True),
            threading.Thread(target=self._reconcile_loop, name="ownership-apply", daemon=True),
        ]
        if advertised:  # only a replica that names itself can send clients to the others
            self._threads.append(
                threading.Thread(target=self._read_owners_loop, name="owners", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    # ---- Claims (kafka_claims.py) -----------------------------------------------------

    def new_transactional_id(self) -> str:
        return f"{self.event_log.txn_prefix}-{self.instance}-{next(self._producers)}"

    def previous_writer(self, partition: int) -> str | None:
        def read() -> str | None:
            tp = self._assigned(partition)
            committed = self.consumer.committed(tp, metadata=True, timeout_ms=CLAIM_TIMEOUT_MS)
            previous = committed.metadata if committed is not None else ""
            # Reading a claim is not checked against the generation; writing it back
            # unchanged is, so a member with a stale view stops here, before it fences
            # the current owner.
            self.consumer.commit({tp: _claim(previous)}, timeout_ms=CLAIM_TIMEOUT_MS)
            return previous or None

        return self._on_poll_thread(read)

    def claim(self, partition: int, claim: str) -> None:
        def commit() -> None:
            tp = self._assigned(partition)
            self.consumer.commit({tp: _claim(claim)}, timeout_ms=CLAIM_TIMEOUT_MS)

        self._on_poll_thread(commit)

    def _assigned(self, partition: int) -> TopicPartition:
        """The broker checks a commit's generation, not that the partition is assigned to
        the member; this does, on the polling thread, where kafka-python updates the
        assignment and the generation together."""
        tp = TopicPartition(self.event_log.topic, partition)
        if tp not in self.consumer.assignment():
            raise Unavailable(f"partition {partition} is not assigned to this replica now")
        return tp

    def _on_poll_thread(self, task: Callable[[], T]) -> T:
        if self._stop.is_set():
            raise Unavailable("this replica has left the registry group")
        done: Future[T] = Future()
        self._tasks.put((task, done))
        try:
            return done.result(timeout=CLAIM_TIMEOUT_S)
        except KafkaError as exc:  # e.g. a rebalance began: the claim is refused
            raise Unavailable(f"the registry group refused a claim ({exc}); retry") from exc
        except TimeoutError as exc:
            done.cancel()  # not run later, if it has not started: nobody waits for it now
            raise Unavailable("the registry group did not answer a claim in time") from exc

    # ---- membership -------------------------------------------------------------------

    def wanted(self) -> set[int]:
        with self._changed:
            return set(self._wanted)

    def want(self, partitions: set[int]) -> None:
        with self._changed:
            self._wanted = set(partitions)
            self._changed.notify()

    def owned(self) -> set[int]:
        return self.event_log.owned()

    def wait_until_owning(self, timeout_s: float = 60.0, at_least: int = 1) -> set[int]:
        """Until this replica writes every partition the group gave it (and at least
        `at_least`), or `timeout_s`: one that served before would send commands for the
        partitions still being claimed elsewhere, to no one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            wanted, owned = self.wanted(), self.owned()
            if len(owned) >= at_least and wanted <= owned:
                break
            time.sleep(0.1)
        return self.owned()

    def owner_of(self, partition: int) -> str:
        """The address of the replica that claimed `partition` last (as of a few seconds
        ago; "" if unknown or this one)."""
        owner = self._owners.get(partition, "")
        return "" if owner == self.advertised else owner

    def _read_owners_loop(self) -> None:
        """Every OWNERS_EVERY_S, on a thread and an admin client of its own (never the
        polling thread: a read that waits on a lost coordinator would hold up the
        group's rebalance, and with it every claim): who claimed each partition."""
        client = None
        while not self._stop.wait(OWNERS_EVERY_S):
            try:
                client = client or admin(self.event_log.kafka, timeout_s=OWNERS_EVERY_S)
                claims = client.list_group_offsets(self.group_id)[self.group_id]
            except Exception as exc:  # KafkaError, or a timeout: the next round reads again
                log.debug("could not read the partitions' claims: %s", exc)
                if client is not None:
                    client.close()
                client = None
                continue
            self._owners = {
                tp.partition: address_of(c.metadata)
                for tp, c in claims.items()
                if tp.topic == self.event_log.topic and c.metadata
            }
        if client is not None:
            client.close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            # One claim per round: polling, which rejoins the group after its coordinator
            # moved, must not wait behind a queue of claims (each may wait for that very
            # coordinator), or the group waits for this member and every partition stalls.
            self._run_one_task()
            try:
                self.consumer.poll(timeout_ms=POLL_MS)  # drives the group; paused: no data
                self._rejoin_if_assignment_lost()
            except Exception:  # keep the membership alive; the next poll retries
                log.exception("polling the registry group failed")
                self._stop.wait(1.0)
        while not self._tasks.empty():  # nobody will poll again: refuse what is left
            done = self._tasks.get()[1]
            if done.set_running_or_notify_cancel():
                done.set_exception(Unavailable("this replica is shutting down"))

    def _rejoin_if_assignment_lost(self) -> None:
        """kafka-python (3.0.12) can lose a join: when the leader's rejoin was asked for
        by new metadata and a poll's timeout ends while the JoinGroup is in flight, the
        join completes in the background, after which nothing asks for a rejoin, so its
        assignment is never applied. The member stays rebalancing in the new generation,
        the listener is never told, and the partitions the group gave it have no writer.
        A join's SyncGroup follows its JoinGroup at once; seen for UNTOLD_S, join again."""
        member = self.consumer.group_metadata()
        # A join waiting for its JoinGroup (which may take as long as the slowest member)
        # is in the generation it was told of, or in none (-1); only a newer one is stuck.
        stuck = member.state == MemberState.REBALANCING and member.generation_id > self.told_in
        if not stuck:
            self._untold_since = None
            return
        now = time.monotonic()
        if self._untold_since is None:
            self._untold_since = now
        elif now - self._untold_since > UNTOLD_S:
            log.warning(
                "the group's assignment of generation %d never reached this replica; joining again",
                member.generation_id,
            )
            self._untold_since = None
            self.want(set())  # an eager rebalance revoked them all; say so again
            self.consumer.unsubscribe()
            self.consumer.subscribe([self.event_log.topic], listener=self._listener)

    def _run_one_task(self) -> None:
        try:
            task, done = self._tasks.get_nowait()
        except queue.Empty:
            return
        if not done.set_running_or_notify_cancel():
            return  # its caller gave up waiting
        try:
            done.set_result(task())
        except BaseException as exc:  # handed to the waiting caller
            done.set_exception(exc)

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                self._changed.wait(timeout=RECONCILE_EVERY_S)
            time.sleep(SETTLE_S)  # an eager rebalance revokes all, then assigns: let it land
            self._reconcile(self.wanted())

    def _reconcile(self, wanted: set[int]) -> None:
        reconcile(self.event_log, wanted)

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify()
        for thread in self._threads:  # a claim in progress takes up to CLAIM_TIMEOUT_MS
            thread.join(timeout=CLAIM_TIMEOUT_MS / 1000 + 5)
        self.consumer.close()


def reconcile(event_log: Partitions, wanted: set[int]) -> None:
    """Give up what is no longer wanted, then take the missing partitions side by side:
    each take reads its partition to the end, so one after another a replica given many
    partitions would be ready only after the sum of their reads."""
    for partition in sorted(event_log.assigned() - wanted):
        event_log.give_up(partition)
    missing = sorted(wanted - event_log.owned())
    if missing:
        with ThreadPoolExecutor(len(missing), thread_name_prefix="take") as pool:
            list(pool.map(lambda p: _take(event_log, p), missing))
    if event_log.owned() != wanted:
        log.info("owning %s of wanted %s", sorted(event_log.owned()), sorted(wanted))


def _take(event_log: Partitions, partition: int) -> None:
    try:
        event_log.take(partition)
    except Exception:  # keep serving the others; the next round retries
        log.exception("could not take partition %d; retrying", partition)
