"""Group ownership on the real broker: claims, and fencing a replica the group dropped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from mint.backends import kafka_ownership
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_claims import writer_of
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.backends.kafka_ownership import GroupOwnership, reconcile
from mint.domain.errors import Unavailable
from tests.contract.event_log_contract import meta, moves

PARTITIONS = 2


Replica = tuple[KafkaEventLog, GroupOwnership]


@pytest.fixture
def replica(kafka: KafkaConnection) -> Iterator[Callable[[], Replica]]:
    """Makes registry replicas of one fresh topic and group; closes them all afterwards."""
    topic, group = f"events-{uuid.uuid4().hex[:10]}", f"owners-{uuid.uuid4().hex[:8]}"
    made: list[Replica] = []

    def make() -> Replica:
        log = KafkaEventLog(kafka, topic, PARTITIONS, txn_prefix=group, owned=())
        made.append((log, GroupOwnership(log, group, session_timeout_ms=6000)))
        return made[-1]

    yield make
    for _, ownership in made:  # leave the group first, then stop writing
        ownership.close()
    for log, _ in made:
        log.close()


def _once_taken_again(log: KafkaEventLog, stream: str, version: int, events: list) -> None:
    """Append, retrying while the writer takes the partition again after a failure."""
    deadline = time.monotonic() + 30
    while True:
        try:
            log.append(stream, version, events, meta())
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stream_in(partition: int) -> str:
    return next(s for i in range(1000) if partition_for(s := f"acme/s{i}", PARTITIONS) == partition)


def test_a_replica_is_ready_once_it_writes_every_partition_it_was_given(
    replica: Callable[[], Replica],
) -> None:
    """Partitions are claimed one per poll round: a replica that served after its first
    claim answered 'retry elsewhere', with nowhere else to go, for the others."""
    log, group = replica()
    assert group.wait_until_owning() == {0, 1}
    for partition in range(PARTITIONS):
        log.append(_stream_in(partition), 0, moves(1), meta())  # no UNAVAILABLE


def test_a_join_interrupted_by_the_end_of_a_poll_still_gives_the_replica_its_partitions(
    kafka: KafkaConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python 3.0.12 drops the assignment of a join that a poll's timeout cut in
    half (the leader's rejoin after the topic's partitions first became known): the
    replica stayed in the group owning nothing. Polls of 1 ms cut nearly every join."""
    monkeypatch.setattr(kafka_ownership, "POLL_MS", 1)
    for _ in range(2):
        topic, group = f"events-{uuid.uuid4().hex[:10]}", f"owners-{uuid.uuid4().hex[:8]}"
        log = KafkaEventLog(kafka, topic, PARTITIONS, txn_prefix=group, owned=())
        ownership = GroupOwnership(log, group, session_timeout_ms=6000)
        try:
            assert ownership.wait_until_owning(30, at_least=PARTITIONS) == {0, 1}
        finally:
            ownership.close()
            log.close()


def test_a_replica_the_group_dropped_cannot_write_and_the_new_owner_continues(
    replica: Callable[[], Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = [_stream_in(p) for p in range(PARTITIONS)]
    old_log, old_group = replica()
    assert old_group.wait_until_owning(at_least=PARTITIONS) == {0, 1}
    for stream in streams:
        old_log.append(stream, 0, moves(1), meta())
    old_id = old_log.writer.transactional_id

    # The old replica leaves the group but its writer still believes it owns both
    # partitions: a zombie, as after a long pause (it never heard it was revoked, so it
    # never said it gave them up).
    monkeypatch.setattr(old_log, "give_up", lambda partition: None)
    old_group.close()
    new_log, new_group = replica()
    assert new_group.wait_until_owning(at_least=PARTITIONS) == {0, 1}
    assert new_log.writer.transactional_id != old_id
    assert old_id in new_log.writer.fenced_ids  # the claimed writer was fenced

    with pytest.raises(Unavailable):
        old_log.append(streams[0], 1, moves(2), meta())
    with pytest.raises(Unavailable):  # and it cannot take the partitions back
        old_log.append(streams[1], 1, moves(2), meta())

    for stream in streams:
        new_log.append(stream, 1, moves(2), meta())
        versions = [r.envelope.stream_version for r in new_log.read_stream(stream)]
        assert versions == [1, 2]
    written = [r.envelope.stream_id for r in new_log.read_all()]
    assert sorted(written) == sorted(streams * 2)  # nothing from the zombie


def test_a_replica_slow_to_follow_a_rebalance_keeps_only_what_it_is_assigned(
    replica: Callable[[], Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = [_stream_in(p) for p in range(PARTITIONS)]
    old_log, old_group = replica()
    assert old_group.wait_until_owning(at_least=PARTITIONS) == {0, 1}
    for stream in streams:
        old_log.append(stream, 0, moves(1), meta())
    # The old replica stays in the group but never applies what it assigns: its
    # writer still holds both partitions after the rebalance.
    old_group._reconcile = lambda wanted: None  # type: ignore[method-assign]
    monkeypatch.setattr(old_log, "give_up", lambda partition: None)
    new_log, new_group = replica()
    (moved,) = new_group.wait_until_owning(at_least=1)
    kept = 1 - moved
    assert old_log.owned() == {0, 1}  # stale

    for _ in range(2):  # fenced by the new owner; then refused by the group
        with pytest.raises(Unavailable):
            old_log.append(streams[moved], 1, moves(2), meta())
    _once_taken_again(old_log, streams[kept], 1, moves(2))  # with a new producer
    new_log.append(streams[moved], 1, moves(3), meta())

    for log, stream, last in ((old_log, streams[kept], 2), (new_log, streams[moved], 3)):
        events = log.read_stream(stream)
        assert [r.envelope.stream_version for r in events] == [1, 2]
        assert events[-1].event == moves(last)[0]
    assert old_log.owned() == {kept}


def test_claims_are_refused_for_a_partition_the_group_did_not_assign(
    replica: Callable[[], Replica],
) -> None:
    log, ownership = replica()
    assert ownership.wait_until_owning(at_least=PARTITIONS) == {0, 1}
    assert writer_of(ownership.previous_writer(0) or "") == log.writer.transactional_id
    with pytest.raises(Unavailable, match="not assigned"):
        ownership.claim(PARTITIONS + 1, "someone-else")


def test_the_group_is_polled_between_claims_and_abandoned_claims_never_run(
    replica: Callable[[], Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims run on the thread that polls the group. A queue of slow claims (each may
    wait on a coordinator that is moving) must not starve polling, which rejoins the
    group; and a claim whose caller gave up is dropped, not run later."""
    import threading

    from mint.backends import kafka_ownership

    _, ownership = replica()
    ownership.wait_until_owning(at_least=PARTITIONS)
    polls = 0
    real_poll = ownership.consumer.poll

    def counted_poll(**kwargs: object) -> object:
        nonlocal polls
        polls += 1
        return real_poll(**kwargs)

    monkeypatch.setattr(ownership.consumer, "poll", counted_poll)
    monkeypatch.setattr(kafka_ownership, "CLAIM_TIMEOUT_S", 0.3)
    ran: list[int] = []

    def slow_claim(n: int) -> Callable[[], None]:
        def claim() -> None:
            ran.append(n)
            time.sleep(1.0)

        return claim

    callers = [
        threading.Thread(target=lambda n=n: _refused(ownership, slow_claim(n))) for n in range(3)
    ]
    for caller in callers:
        caller.start()
        time.sleep(0.05)  # queued in order
    for caller in callers:
        caller.join()
    polls_before = polls
    time.sleep(1.5)  # the first claim finishes; the others were abandoned meanwhile
    assert ran == [0], f"abandoned claims ran: {ran}"
    assert polls > polls_before, "the group was not polled after the claim"


def _refused(ownership: GroupOwnership, claim: Callable[[], None]) -> None:
    with pytest.raises(Unavailable, match="in time"):
        ownership._on_poll_thread(claim)


class _SlowTakes:
    """Partitions whose every take reads for a while (a unit test of `reconcile`)."""

    def __init__(self, owned: set[int]) -> None:
        self._owned, self._assigned = set(owned), set(owned)

    def assigned(self) -> set[int]:
        return set(self._assigned)

    def owned(self) -> set[int]:
        return set(self._owned)

    def take(self, partition: int) -> None:
        self._assigned.add(partition)
        time.sleep(0.4)
        if partition == 3:
            raise Unavailable("no leader")
        self._owned.add(partition)

    def give_up(self, partition: int) -> None:
        self._assigned.discard(partition)
        self._owned.discard(partition)


def test_partitions_are_taken_side_by_side_and_one_failing_holds_up_no_other() -> None:
    partitions = _SlowTakes(owned={0, 1})
    started = time.monotonic()
    reconcile(partitions, {1, 2, 3, 4, 5, 6, 7})
    assert time.monotonic() - started < 1.5  # six takes of 0.4 s, not one after another
    assert partitions.owned() == {1, 2, 4, 5, 6, 7}  # 0 given up, 3 left for the next round


def test_a_partition_moved_to_a_new_replica_stops_nothing_else_on_the_old_one(
    replica: Callable[[], Replica],
) -> None:
    """Cooperative rebalancing and a clean handoff: the old owner gives up only what moves
    and says so, so the new owner fences no one and the old producer writes on."""
    streams = [_stream_in(p) for p in range(PARTITIONS)]
    old_log, old_group = replica()
    assert old_group.wait_until_owning(at_least=PARTITIONS) == {0, 1}
    for stream in streams:
        old_log.append(stream, 0, moves(1), meta())
    old_id = old_log.writer.transactional_id
    new_log, new_group = replica()
    moved = new_group.wait_until_owning(at_least=1)
    (kept,) = {0, 1} - moved
    assert new_log.writer.fenced_ids == set()  # the old owner said it gave the partition up
    assert old_log.owned() == {kept}
    assert old_log.writer.transactional_id == old_id  # its producer was never fenced
    old_log.append(streams[kept], 1, moves(2), meta())  # no error, no retake
    (gone,) = moved
    new_log.append(streams[gone], 1, moves(2), meta())
    with pytest.raises(Unavailable, match="does not own"):
        old_log.append(streams[gone], 2, moves(3), meta())
    for stream in streams:
        assert [r.envelope.stream_version for r in new_log.read_stream(stream)] == [1, 2]
