"""Replay rate: events per second to rebuild the registry's state from the log, vs a raw
kafka-python consume of the same topic (records fetched, nothing decoded).

Writes N events (AdapterCreated, then gates and channel moves, hash-chained) for S
adapters into a fresh topic, then times both reads of it in the same run.

  python -m bench.replay [--events 100000] [--streams 1000]
"""

from __future__ import annotations

import argparse
import time
import uuid

from kafka import KafkaConsumer

from bench.common import bar_chart_svg, record, servers
from mint.audit.replay import replay
from mint.backends.kafka import KafkaConnection, create_log_topic, durable_producer
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.domain.events import AdapterCreated, ChannelGateSet, Event
from mint.eventlog.chain import stored_bytes
from mint.eventlog.port import Metadata, build_envelopes

PARTITIONS = 6


def fill(kafka: KafkaConnection, topic: str, events: int, streams: int) -> None:
    create_log_topic(kafka, topic, PARTITIONS, 1)
    producer = durable_producer(kafka, linger_ms=20, batch_size=256 * 1024)
    per_stream = events // streams
    meta = Metadata("bench", "fill")
    for s in range(streams):
        stream = f"bench/a{s}"
        batch: list[Event] = [
            AdapterCreated(
                uuid.uuid4().hex, "bench", f"a{s}", "bench", "ab" * 32, "lora", {"kind": "bench"}
            )
        ]
        batch += [
            ChannelGateSet(f"c{i % 7}", "suite" if i % 2 else "") for i in range(per_stream - 1)
        ]
        partition = partition_for(stream, PARTITIONS)
        for envelope in build_envelopes(stream, 0, b"", batch, meta):
            producer.send(
                topic, key=stream.encode(), value=stored_bytes(envelope), partition=partition
            )
    producer.flush()
    producer.close()


def raw_consume(kafka: KafkaConnection, topic: str, expected: int) -> float:
    consumer = KafkaConsumer(
        topic,
        **kafka.options(),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        max_partition_fetch_bytes=8 << 20,
    )
    started, seen = time.perf_counter(), 0
    for _ in consumer:
        seen += 1
        if seen == expected:
            break
    elapsed = time.perf_counter() - started
    consumer.close()
    assert seen == expected, f"consumed {seen} of {expected}"
    return seen / elapsed


def replay_rate(kafka: KafkaConnection, topic: str, expected: int) -> float:
    log = KafkaEventLog(kafka, topic, PARTITIONS, owned=())
    started = time.perf_counter()
    state = replay(log.read_all())
    elapsed = time.perf_counter() - started
    log.close()
    assert state.events == expected, f"replayed {state.events} of {expected}"
    assert len(state.adapters) > 0
    return state.events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    total = args.events // args.streams * args.streams
    with servers() as env:
        kafka = KafkaConnection(env["MINT_KAFKA_BOOTSTRAP"])
        topic = f"replay-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        fill(kafka, topic, total, args.streams)
        print(f"wrote {total:,} events in {time.perf_counter() - started:.1f} s", flush=True)
        raw = raw_consume(kafka, topic, total)
        rebuilt = replay_rate(kafka, topic, total)
    ratio = rebuilt / raw
    print(f"  replay to registry state  {rebuilt:10,.0f} events/s")
    print(f"  raw kafka-python consume  {raw:10,.0f} events/s")
    print(f"ratio replay / raw consume = {ratio:.2f}x (target >= 0.5x)")
    path = record(
        "replay",
        {
            "events": total,
            "streams": args.streams,
            "partitions": PARTITIONS,
            "replay_events_per_s": round(rebuilt),
            "raw_consume_events_per_s": round(raw),
            "ratio": round(ratio, 3),
            "target": ">= 0.5x",
        },
    )
    chart = bar_chart_svg(
        "replay",
        f"Replaying {total:,} events",
        [("replay to registry state", rebuilt), ("raw consume", raw)],
        "events/s",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
