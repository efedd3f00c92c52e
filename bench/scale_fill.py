"""Filling a fresh topic with N adapters as a registry writes them, fast.

Each adapter gets the events a registry writes for `create` and one `publish`: created,
then revision 1 published with `latest` moved to it (three events, two requests), built
with the project's envelope builder and codec and hash-chained. One base is registered
(so that commands validate) and one real LoRA upload backs every revision (its blob is
stored once, as the registry stores shared bytes once). No snapshots are written: the
topic looks like one written by a registry from before snapshots.

Building envelopes costs more CPU than sending them, so worker processes share the
adapters (each adapter's events stay in one worker, in order); each sends with large
batches and linger, several requests in flight, acks=1 and no retries, and the topic's
end offsets are checked against the count afterwards.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import safetensors.numpy
from kafka import KafkaProducer
from kafka.structs import TopicPartition

from mint.backends.kafka import KafkaConnection, create_log_topic
from mint.backends.kafka_log import partition_for
from mint.backends.kafka_reader import high_watermarks
from mint.domain.events import (
    AdapterCreated,
    BaseModelRegistered,
    ChannelMoved,
    Event,
    Provenance,
    RevisionPublished,
)
from mint.eventlog.chain import stored_bytes
from mint.eventlog.port import Metadata, build_envelopes
from mint.registry import base_stream
from mint.validation.adapter import validate_adapter

PARTITIONS = 6  # the registry default
LISTED_TENANT = "listed"
BULK_TENANTS = 1000  # the other adapters spread over these
ACTOR = "bench"
BASE_PARAMETERS: dict[str, tuple[int, ...]] = {"model.layers.0.proj.weight": (64, 64)}
BASE_FINGERPRINT = hashlib.sha256(b"scale-out bench base").hexdigest()
RANK = 8
# kafka-python's producer, tuned for bulk: big batches, several in flight, leader acks.
BULK_PRODUCER = {
    "acks": 1,
    "enable_idempotence": False,  # it needs acks=all
    "retries": 0,  # no retry can reorder a stream; a lost batch shows in the count check
    "linger_ms": 50,
    "batch_size": 1 << 20,
    "max_in_flight_requests_per_connection": 8,
    "max_request_size": 8 << 20,
}


@dataclass(frozen=True)
class Layout:
    """Which adapters a run holds: `adapters` in all, the first `listed` of them in the
    tenant that ListAdapters pages through, the rest spread over other tenants."""

    adapters: int
    listed: int
    partitions: int = PARTITIONS

    def ref(self, i: int) -> str:
        tenant = LISTED_TENANT if i < self.listed else f"bulk{i % BULK_TENANTS}"
        return f"{tenant}/a{i:07d}"

    def partition(self, i: int) -> int:
        return partition_for(self.ref(i), self.partitions)

    def adapter_id(self, i: int) -> str:
        """Stable per adapter, so a catalog entry written later matches the log."""
        return uuid.uuid5(uuid.NAMESPACE_URL, self.ref(i)).hex

    def created(self, i: int) -> AdapterCreated:
        tenant, _, name = self.ref(i).partition("/")
        return AdapterCreated(self.adapter_id(i), tenant, name, ACTOR, BASE_FINGERPRINT, "lora")


@dataclass(frozen=True)
class Upload:
    """One valid LoRA for the base, as a client uploads it and as the registry records it."""

    config: bytes
    weights: bytes
    config_json: str  # canonical, as validated
    sha256: str

    @classmethod
    def make(cls) -> Upload:
        width = BASE_PARAMETERS["model.layers.0.proj.weight"][0]
        prefix = "base_model.model.model.layers.0.proj"
        weights = safetensors.numpy.save(
            {
                f"{prefix}.lora_A.weight": np.full((RANK, width), 0.01, np.float32),
                f"{prefix}.lora_B.weight": np.zeros((width, RANK), np.float32),
            }
        )
        config = json.dumps(
            {"peft_type": "LORA", "r": RANK, "lora_alpha": 16.0, "target_modules": ["proj"]}
        ).encode()
        checked = validate_adapter(config, weights, BASE_PARAMETERS)
        return cls(config, weights, checked.config_json, hashlib.sha256(weights).hexdigest())


@dataclass(frozen=True)
class Filled:
    events: int
    seconds: float
    streams: dict[int, int]  # partition -> streams in it (adapters, and the base)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def fill(
    kafka: KafkaConnection, topic: str, layout: Layout, upload: Upload, workers: int
) -> Filled:
    """Write the layout's adapters (and the base) into a new `topic`; raise if any is lost."""
    create_log_topic(kafka, topic, layout.partitions, 1)
    started = time.perf_counter()
    jobs = [(kafka, topic, layout, upload, w, workers) for w in range(workers)]
    if workers == 1:
        shares = [_fill_share(*jobs[0])]
    else:  # spawn: the parent may hold client threads a fork would copy half-way
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            shares = pool.starmap(_fill_share, jobs)
    elapsed = time.perf_counter() - started
    streams: Counter[int] = Counter()
    for share in shares:
        streams.update(share)
    events = 3 * layout.adapters + 1
    tps = [TopicPartition(topic, p) for p in range(layout.partitions)]
    written = sum(high_watermarks(kafka, tps).values())
    if written != events:
        raise RuntimeError(f"the fill of {topic} wrote {written} events, not {events}")
    return Filled(events, elapsed, dict(streams))


def _fill_share(
    kafka: KafkaConnection, topic: str, layout: Layout, upload: Upload, worker: int, workers: int
) -> Counter[int]:
    """Worker `worker`'s adapters (every workers-th), and the base in worker 0."""
    producer = KafkaProducer(**kafka.options(), **BULK_PRODUCER)
    streams: Counter[int] = Counter()

    def send(stream: str, version: int, prev_hash: bytes, events: list[Event]) -> bytes:
        partition = partition_for(stream, layout.partitions)
        envelopes = build_envelopes(
            stream, version, prev_hash, events, Metadata(ACTOR, uuid.uuid4().hex)
        )
        for envelope in envelopes:
            producer.send(
                topic, key=stream.encode(), value=stored_bytes(envelope), partition=partition
            )
        return envelopes[-1].hash

    if worker == 0:
        base = BaseModelRegistered("scale-base", BASE_FINGERPRINT, BASE_PARAMETERS)
        send(base_stream(BASE_FINGERPRINT), 0, b"", [base])
        streams[partition_for(base_stream(BASE_FINGERPRINT), layout.partitions)] += 1
    published: list[Event] = [
        RevisionPublished(
            1, upload.sha256, len(upload.weights), upload.config_json, Provenance(ACTOR)
        ),
        ChannelMoved("latest", 1, 0, "published"),
    ]
    for i in range(worker, layout.adapters, workers):
        ref = layout.ref(i)
        created_hash = send(ref, 0, b"", [layout.created(i)])
        send(ref, 1, created_hash, list(published))
        streams[layout.partition(i)] += 1
    producer.flush()
    producer.close()
    return streams
