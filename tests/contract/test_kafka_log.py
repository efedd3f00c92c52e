"""The EventLog contract against the real Kafka broker, plus Kafka-only guarantees."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from mint.backends import kafka_transaction
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.backends.kafka_producers import close_producer, commit_within
from mint.deadlines import caller_deadline
from mint.domain.errors import Unavailable
from mint.eventlog.port import AppendResult, EventLog
from tests.contract.event_log_contract import EventLogContract, meta, moves


class TestKafkaEventLog(EventLogContract):
    @pytest.fixture(autouse=True)
    def _topic(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka
        self.topic = f"events-{uuid.uuid4().hex[:10]}"
        self.prefix = f"txn-{uuid.uuid4().hex[:8]}"

    def make_log(self) -> EventLog:
        return KafkaEventLog(self.kafka, self.topic, partitions=3, txn_prefix=self.prefix)

    def reopen(self, log: EventLog) -> EventLog:
        # A restarted owner: same transactional ids, so it fences the old instance.
        return KafkaEventLog(self.kafka, self.topic, partitions=3, txn_prefix=self.prefix)


def test_a_new_owner_fences_the_old_one(kafka: KafkaConnection) -> None:
    topic, prefix = f"events-{uuid.uuid4().hex[:10]}", f"txn-{uuid.uuid4().hex[:8]}"
    old = KafkaEventLog(kafka, topic, partitions=1, txn_prefix=prefix)
    old.append("acme/x", 0, moves(1), meta())
    new = KafkaEventLog(kafka, topic, partitions=1, txn_prefix=prefix)
    with pytest.raises(Unavailable, match="another writer"):
        old.append("acme/x", 1, moves(2), meta())  # the zombie cannot write any more
    new.append("acme/x", 1, moves(2), meta())
    assert [r.envelope.stream_version for r in new.read_stream("acme/x")] == [1, 2]
    old.close()
    new.close()


def test_non_owner_refuses_with_a_retryable_error(kafka: KafkaConnection) -> None:
    topic = f"events-{uuid.uuid4().hex[:10]}"
    reader = KafkaEventLog(kafka, topic, partitions=2, owned=())
    with pytest.raises(Unavailable, match="does not own partition"):
        reader.append("acme/x", 0, moves(1), meta())
    reader.close()


def test_partitioning_is_stable() -> None:
    assert partition_for("acme/tone", 6) == partition_for("acme/tone", 6)
    assert len({partition_for(f"t/n{i}", 6) for i in range(100)}) == 6


def test_a_replica_configured_with_another_partition_count_refuses_to_start(
    kafka: KafkaConnection,
) -> None:
    topic = f"events-{uuid.uuid4().hex[:10]}"
    KafkaEventLog(kafka, topic, partitions=3, owned=()).close()
    with pytest.raises(ValueError, match="has 3 partitions, not 6"):
        KafkaEventLog(kafka, topic, partitions=6, owned=())


def test_a_non_owner_reads_a_stream_after_a_version_from_the_topic(kafka: KafkaConnection) -> None:
    topic = f"events-{uuid.uuid4().hex[:10]}"
    owner = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    owner.append("acme/x", 0, moves(1, 2, 3), meta())
    reader = KafkaEventLog(kafka, topic, partitions=2, owned=())
    try:
        assert [r.event for r in reader.read_stream("acme/x", after_version=1)] == moves(2, 3)
        assert reader.read_stream("acme/x", after_version=3) == []
    finally:
        reader.close()
        owner.close()


def test_a_take_waits_out_an_open_transaction_instead_of_reading_past_it(
    kafka: KafkaConnection,
) -> None:
    """A writer nobody fenced holds a transaction open: reading to the committed end
    would stop before it and miss what it commits later; a take's read stalls instead."""
    from kafka.errors import KafkaTimeoutError

    from mint.backends.kafka import durable_producer
    from mint.backends.kafka_reader import read_partitions

    topic = f"events-{uuid.uuid4().hex[:10]}"
    KafkaEventLog(kafka, topic, partitions=1, owned=()).close()
    unfenced = durable_producer(kafka, transactional_id=f"stray-{topic}")
    unfenced.init_transactions()
    unfenced.begin_transaction()
    unfenced.send(topic, value=b"pending", partition=0).get(timeout=10)
    try:
        assert list(read_partitions(kafka, topic, {0: 0}, stall_s=2)) == []
        with pytest.raises(KafkaTimeoutError, match="no progress"):
            list(read_partitions(kafka, topic, {0: 0}, stall_s=2, past_open_transactions=True))
    finally:
        unfenced.abort_transaction()
        unfenced.close()


@pytest.mark.parametrize("landed", [True, False], ids=["committed", "not-committed"])
def test_after_an_ambiguous_commit_a_retry_learns_what_happened(
    kafka: KafkaConnection, landed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client loses the answer to its commit (the commit itself landed or not): the
    writer drops its producer, takes the partition again from the log, and a retry with
    the same request id gets the first result or appends, never a second copy."""
    from kafka.errors import KafkaTimeoutError

    topic = f"events-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=1, txn_prefix=topic)
    real_commit = commit_within

    def lost_answer(producer: Any, timeout_s: float) -> None:
        monkeypatch.setattr(kafka_transaction, "commit_within", real_commit)
        if landed:
            real_commit(producer, timeout_s)
        raise KafkaTimeoutError("the answer to EndTxn was lost")

    monkeypatch.setattr(kafka_transaction, "commit_within", lost_answer)
    first = meta("r1")
    try:
        with pytest.raises(Unavailable, match="retry with the same request id"):
            log.append("acme/x", 0, moves(1), first)
        result = _retry_until_taken_again(lambda: log.append("acme/x", 0, moves(1), first))
        assert result.duplicate == landed
        assert [r.envelope.stream_version for r in log.read_stream("acme/x")] == [1]
        reader = KafkaEventLog(kafka, topic, partitions=1, owned=())
        assert [r.envelope.request_id for r in reader.read_all()] == ["r1"]
        reader.close()
    finally:
        log.close()


def test_a_commit_that_hangs_is_given_up_and_the_partition_taken_again(
    kafka: KafkaConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python waits for a commit without a limit (after its transaction coordinator
    died it waited two minutes): the writer gives up after COMMIT_TIMEOUT_S, drops the
    producer and writes again through a fresh one."""
    monkeypatch.setattr(kafka_transaction, "COMMIT_TIMEOUT_S", 1.0)
    log = _log_whose_commits_hang(kafka, monkeypatch)
    stuck = log.writer.producer
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="retry with the same request id"):
            log.append("acme/x", 0, moves(1), meta("r1"))
        assert time.monotonic() - started < 5, "the hung commit was waited on too long"
        result = _retry_until_taken_again(lambda: log.append("acme/x", 0, moves(1), meta("r1")))
        assert not result.duplicate, "a commit that never finished must not count as landed"
        assert log.writer.producer is not stuck
        assert [r.envelope.request_id for r in log.read_stream("acme/x")] == ["r1"]
    finally:
        log.close()


def _log_whose_commits_hang(
    kafka: KafkaConnection, monkeypatch: pytest.MonkeyPatch
) -> KafkaEventLog:
    """A log whose current producer's commits never finish, as after its transaction
    coordinator died."""
    from kafka.producer.transaction_manager import TransactionalRequestResult

    topic = f"events-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=1, txn_prefix=topic)
    stuck = log.writer.producer
    assert stuck is not None
    monkeypatch.setattr(
        stuck._transaction_manager, "begin_commit", lambda: TransactionalRequestResult()
    )
    return log


def _retry_until_taken_again(append: Callable[[], AppendResult]) -> AppendResult:
    deadline = time.monotonic() + 30
    while True:  # the partition is taken again in the background
        try:
            return append()
        except Unavailable:
            assert time.monotonic() < deadline, "never taken again"
            time.sleep(0.2)


def test_an_append_answers_before_the_callers_deadline(
    kafka: KafkaConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a commit hangs, a caller with 2 s left hears a retryable error within them,
    not its own DEADLINE_EXCEEDED (which would leave it unsure whether the write landed)."""
    log = _log_whose_commits_hang(kafka, monkeypatch)
    try:
        started = time.monotonic()
        with (
            caller_deadline(2.0),
            pytest.raises(Unavailable, match="retry with the same request id"),
        ):
            log.append("acme/x", 0, moves(1), meta("r1"))
        assert time.monotonic() - started < 2.0
    finally:
        log.close()


def test_a_dropped_producer_stops_even_with_records_unsent(kafka: KafkaConnection) -> None:
    """kafka-python's close raises from its flush while records are pending, before it
    stops the sender thread; a producer the writer drops must not live on."""
    from mint.backends.kafka import durable_producer

    topic = f"events-{uuid.uuid4().hex[:10]}"
    KafkaEventLog(kafka, topic, partitions=1, owned=()).close()  # creates it
    producer = durable_producer(kafka)
    producer.send(topic, value=b"x")  # pending: its acknowledgement takes a round trip
    close_producer(producer, timeout_s=0)
    producer._sender.join(timeout=5)
    assert not producer._sender.is_alive()


def test_a_partition_given_up_is_forgotten_and_read_from_the_topic(
    kafka: KafkaConnection,
) -> None:
    topic = f"events-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=1, txn_prefix=f"txn-{uuid.uuid4().hex[:8]}")
    log.append("acme/x", 0, moves(1, 2), meta())
    log.give_up(0)
    # Nothing of the partition stays in memory: a replica that kept what it gave away
    # would grow with every partition it ever held.
    assert 0 not in log.writer.partitions and 0 not in log.writer._earlier
    with pytest.raises(Unavailable, match="does not own"):
        log.append("acme/x", 2, moves(3), meta())
    assert [r.envelope.stream_version for r in log.read_stream("acme/x")] == [1, 2]
    log.close()
