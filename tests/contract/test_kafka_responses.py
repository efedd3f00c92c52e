"""The responses topic on the real Kafka: a record is found by its id alone, seeking by
the id's time in the key's partition; one that cannot be sent is dropped and counted
without holding up the records after it; a missing topic is an error, not a new topic."""

from __future__ import annotations

import pytest

from mint.backends.kafka import KafkaConnection, topic_partitions
from mint.backends.kafka_responses import ResponseRecorder, ResponsesTopic, find_response
from mint.domain.errors import Unavailable
from mint.serving.provenance import new_response_id, response_time_ms


def test_records_are_found_by_id_and_an_unsendable_one_is_dropped_and_counted(
    kafka: KafkaConnection, unique: str
) -> None:
    topic = ResponsesTopic(f"{unique}.responses", retention_ms=3_600_000)
    topic.create(kafka)
    assert topic_partitions(kafka, topic.name) == topic.partitions
    dropped: list[int] = []
    recorder = ResponseRecorder(kafka, topic.name, on_drop=lambda: dropped.append(1))
    ids = [new_response_id() for _ in range(6)]
    try:
        recorder.record(ids[0], b"x" * (2 << 20))  # over the producer's request size
        for i, made in enumerate(ids[1:], start=1):
            recorder.record(made, f"record {i}".encode())
        recorder.flush()
    finally:
        recorder.close()
    assert dropped == [1]
    for i, made in enumerate(ids[1:], start=1):
        found = find_response(kafka, topic.name, made, response_time_ms(made))
        assert found == f"record {i}".encode()
    assert find_response(kafka, topic.name, ids[0], response_time_ms(ids[0])) is None
    later = new_response_id(response_time_ms(ids[-1]) + 120_000)  # after every record
    assert find_response(kafka, topic.name, later, response_time_ms(later)) is None
    with pytest.raises(Unavailable, match="does not exist"):
        find_response(kafka, f"{unique}.nowhere", ids[1], response_time_ms(ids[1]))
