"""Projector catch-up from offset 0: events per second with S3 writes made one at a time
(--s3-concurrency 1) vs the default concurrency, and the time `audit verify` takes over
the same log.

Fills a fresh topic with N adapters x 3 events (AdapterCreated, RevisionPublished, the
`latest` channel moved to it), built with the registry's own envelope builder; each
revision holds one of two small contents, stored sealed under its adapter's own data key
(as the registry stores them), so N blobs. Each projector
run is a fresh consumer group writing a fresh bucket; its clock starts once it holds
every partition and stops when every event is projected.

  python -m bench.projector_catchup [--adapters 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid

from minio import Minio

from bench.common import bar_chart_svg, record, remove, servers
from mint.audit import verify
from mint.backends.kafka import KafkaConnection, create_log_topic, durable_producer
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.backends.s3 import S3Settings, client
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.domain.events import (
    AdapterCreated,
    ChannelMoved,
    Event,
    Provenance,
    RevisionPublished,
)
from mint.eventlog.chain import stored_bytes
from mint.eventlog.port import Metadata, build_envelopes
from streams.projector.runner import Projector
from streams.projector.sink import DEFAULT_CONCURRENCY, S3Sink
from tests.keys import TEST_KEK

PARTITIONS = 6
EVENTS_PER_ADAPTER = 3
CONFIG = json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"]})


def fill(kafka: KafkaConnection, topic: str, blobs: S3BlobStore, adapters: int) -> None:
    contents = [os.urandom(4096) for _ in range(2)]
    create_log_topic(kafka, topic, PARTITIONS, 1)
    producer = durable_producer(kafka, linger_ms=20, batch_size=256 * 1024)
    meta = Metadata("bench", "fill")
    for i in range(adapters):
        stream, adapter_id = f"bench/a{i}", uuid.uuid4().hex
        blob = blobs.put(adapter_id, contents[i % 2])  # blobs are sealed per adapter
        events: list[Event] = [
            AdapterCreated(adapter_id, "bench", f"a{i}", "bench", "ab" * 32, "lora"),
            RevisionPublished(1, blob.sha256, blob.size, CONFIG, Provenance("bench")),
            ChannelMoved("latest", 1, 0),
        ]
        partition = partition_for(stream, PARTITIONS)
        for envelope in build_envelopes(stream, 0, b"", events, meta):
            producer.send(
                topic, key=stream.encode(), value=stored_bytes(envelope), partition=partition
            )
    producer.flush()
    producer.close()


def catch_up(
    kafka: KafkaConnection, s3: Minio, topic: str, bucket: str, concurrency: int, total: int
) -> float:
    """Events per second projected from offset 0 into a fresh bucket."""
    sink = S3Sink(s3, bucket, blobs_bucket=topic, concurrency=concurrency, kek=TEST_KEK)
    projector = Projector(kafka, topic, sink, group_id=bucket)
    stop = threading.Event()
    runner = threading.Thread(target=projector.run, args=(stop,))
    runner.start()
    try:
        joined_by = time.monotonic() + 60
        while len(projector.planners) < PARTITIONS:  # joined the group, holds the topic
            assert runner.is_alive(), "the projector stopped"
            assert time.monotonic() < joined_by, "the projector never held every partition"
            time.sleep(0.01)
        started = time.perf_counter()
        while projector.applied < total:
            assert runner.is_alive(), "the projector stopped"
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        runner.join()
        projector.close()
    return total / elapsed


def objects(s3: Minio, bucket: str) -> int:
    return sum(1 for _ in s3.list_objects(bucket, recursive=True))


def verify_time(
    log: KafkaEventLog, blobs: S3BlobStore, projection: S3Objects | None, adapters: int
) -> float:
    started = time.perf_counter()
    report = verify.verify(log.read_all(), blobs, projection)
    elapsed = time.perf_counter() - started
    assert report.clean, report.problems[:5]
    # Each adapter's blob once: sealed per adapter, two adapters' equal contents are two.
    assert report.blobs_checked == adapters, f"{report.blobs_checked} reads of {adapters} blobs"
    return elapsed


def measure(env: dict[str, str], adapters: int, concurrency: int) -> dict[str, float | int]:
    """Fill a fresh topic with `adapters`, project it with 1 and `concurrency` S3 writes in
    flight, then time `audit verify` of it; the figures, as recorded."""
    total = adapters * EVENTS_PER_ADAPTER
    kafka = KafkaConnection(env["MINT_KAFKA_BOOTSTRAP"])
    s3_settings = S3Settings(
        env["MINT_S3_ENDPOINT"], env["MINT_S3_ACCESS_KEY"], env["MINT_S3_SECRET_KEY"]
    )
    s3 = client(s3_settings, connections=concurrency)
    topic = f"catchup-{uuid.uuid4().hex[:8]}"
    blobs = S3BlobStore(s3, topic, TEST_KEK)
    rates: dict[int, float] = {}
    try:
        started = time.perf_counter()
        fill(kafka, topic, blobs, adapters)
        print(f"wrote {total:,} events in {time.perf_counter() - started:.1f} s", flush=True)
        for c in (1, concurrency):
            rates[c] = catch_up(kafka, s3, topic, f"{topic}-c{c}", c, total)
            print(f"  concurrency {c:3d}  {rates[c]:8,.0f} events/s", flush=True)
        counts = {c: objects(s3, f"{topic}-c{c}") for c in rates}
        assert len(set(counts.values())) == 1, f"the projections differ: {counts}"
        log = KafkaEventLog(kafka, topic, PARTITIONS, owned=())
        try:
            verify_s = verify_time(log, blobs, None, adapters)
            projection = S3Objects(s3, f"{topic}-c{concurrency}")
            verify_projection_s = verify_time(log, blobs, projection, adapters)
        finally:
            log.close()
    finally:
        remove(kafka, s3, [topic], [topic, f"{topic}-c1", f"{topic}-c{concurrency}"])
    return {
        "adapters": adapters,
        "events": total,
        "partitions": PARTITIONS,
        "objects_projected": counts[1],
        "events_per_s_concurrency_1": round(rates[1]),
        f"events_per_s_concurrency_{concurrency}": round(rates[concurrency]),
        "ratio": round(rates[concurrency] / rates[1], 2),
        "audit_verify_s": round(verify_s, 2),
        "audit_verify_with_projection_s": round(verify_projection_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapters", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args()
    with servers() as env:
        figures = measure(env, args.adapters, args.concurrency)
    one, many = (figures[f"events_per_s_concurrency_{c}"] for c in (1, args.concurrency))
    print(f"ratio concurrency {args.concurrency} / 1 = {figures['ratio']:.2f}x")
    print(
        f"audit verify: {figures['audit_verify_s']:.1f} s; "
        f"with the projection: {figures['audit_verify_with_projection_s']:.1f} s"
    )
    path = record("projector_catchup", figures)
    chart = bar_chart_svg(
        "projector_catchup",
        f"Projector catch-up of {figures['events']:,} events from offset 0",
        [("1 S3 write in flight", one), (f"{args.concurrency} S3 writes in flight", many)],
        "events/s",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
