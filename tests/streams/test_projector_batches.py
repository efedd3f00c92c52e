"""The projector's batches, against the real Kafka and S3: writes made concurrently still
land files before manifests and manifests before the pointers to them; a catch-up writes
only the newest of many moves of a pointer; members of one group share the partitions.
Each ends with the projection equal to a rebuild."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.backends.s3_blobs import S3BlobStore
from mint.domain.names import AdapterRef
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.registry import Principal, Registry
from streams.projector.runner import Projector, rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))


def rid() -> str:
    return uuid.uuid4().hex


def _registry(
    kafka: KafkaConnection, s3: Minio, model_files: dict, topic: str, partitions: int = 2
) -> Registry:
    log = KafkaEventLog(kafka, topic, partitions=partitions, txn_prefix=topic)
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK))
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    return registry


def _adapter(registry: Registry, model_files: dict, ref: AdapterRef, revisions: int) -> None:
    registry.create_adapter(ALICE, ref, model_files["fingerprint"], rid())
    for _ in range(revisions):
        registry.publish_revision(ALICE, ref, model_files["upload"], rid())


def _objects(s3: Minio, bucket: str) -> dict[str, bytes]:
    return {
        str(o.object_name): s3.get_object(bucket, str(o.object_name)).read()
        for o in s3.list_objects(bucket, recursive=True)
    }


def _rebuilt(registry: Registry, s3: Minio, blobs: str) -> dict[str, bytes]:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    rebuild(registry.log, S3Sink(s3, fresh, blobs_bucket=blobs, kek=TEST_KEK))
    return _objects(s3, fresh)


class _Timeline:
    """The S3 client, recording when each write (PUT, conditional PUT, copy) started and
    ended, and each pointer's body."""

    def __init__(self, s3: Minio) -> None:
        self._s3, self._lock = s3, threading.Lock()
        self.writes: list[tuple[str, float, float]] = []  # key, started, ended
        self.pointers: list[tuple[float, dict]] = []  # started, body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def _timed(self, key: str, write: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return write()
        finally:
            with self._lock:
                self.writes.append((key, started, time.perf_counter()))

    def put_object(self, bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        return self._timed(key, lambda: self._s3.put_object(bucket, key, *args, **kwargs))

    def copy_object(self, bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        return self._timed(key, lambda: self._s3.copy_object(bucket, key, *args, **kwargs))

    def _put_object(self, bucket: str, key: str, data: bytes, **kwargs: Any) -> Any:
        if "/channels/" in key or key.endswith("current.json"):
            with self._lock:
                self.pointers.append((time.perf_counter(), json.loads(data)))
        return self._timed(key, lambda: self._s3._put_object(bucket, key, data, **kwargs))


def test_concurrent_writes_land_files_then_manifests_then_pointers(
    kafka: KafkaConnection, s3: Minio, model_files: dict, unique: str
) -> None:
    registry = _registry(kafka, s3, model_files, unique)
    refs = [AdapterRef("acme", f"a{i}") for i in range(6)]
    for ref in refs:
        _adapter(registry, model_files, ref, revisions=3)
        registry.move_channel(ALICE, ref, "stable", 2, rid())
    timeline = _Timeline(s3)
    bucket = f"{unique}-proj"
    sink = S3Sink(timeline, bucket, unique, concurrency=8, kek=TEST_KEK)  # type: ignore[arg-type]
    projector = Projector(kafka, unique, sink, group_id=bucket)
    projector.run(stop_when_caught_up_s=1)
    projector.close()

    started: dict[str, float] = {}  # each immutable object's first (only) write
    ended: dict[str, float] = {}
    for key, start, end in timeline.writes:
        started.setdefault(key, start)
        ended.setdefault(key, end)
    assert timeline.pointers
    for pointer_started, pointer in timeline.pointers:
        manifest = pointer["manifest"]
        folder = manifest.rsplit("/", 1)[0]
        assert ended[manifest] <= pointer_started, f"a pointer to {manifest} came first"
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            assert ended[f"{folder}/{name}"] <= started[manifest], f"{folder}/{name} came late"
    assert _max_in_flight(timeline.writes) > 1, "the writes were made one at a time"
    assert _objects(s3, bucket) == _rebuilt(registry, s3, unique)
    registry.log.close()


def _max_in_flight(writes: list[tuple[str, float, float]]) -> int:
    edges = sorted([(start, 1) for _, start, _ in writes] + [(end, -1) for _, _, end in writes])
    in_flight = most = 0
    for _, change in edges:
        in_flight += change
        most = max(most, in_flight)
    return most


class _CountingSink(S3Sink):
    """Counts the objects written (not those skipped as already there), per key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: Counter[str] = Counter()
        self._writes_lock = threading.Lock()

    def _landed(self, key: str) -> None:
        super()._landed(key)
        with self._writes_lock:
            self.writes[key] += 1


def test_a_catch_up_writes_only_the_newest_of_many_pointer_moves(
    kafka: KafkaConnection, s3: Minio, model_files: dict, unique: str
) -> None:
    registry = _registry(kafka, s3, model_files, unique)
    ref, moves = AdapterRef("acme", "busy"), 30
    _adapter(registry, model_files, ref, revisions=2)
    for i in range(moves):
        registry.move_channel(ALICE, ref, "stable", 1 + i % 2, rid())  # ends on revision 2
    newest = registry.log.read_stream(str(ref))[-1].envelope.stream_version
    stable, current = "adapters/acme/busy/channels/stable.json", "adapters/acme/busy/current.json"

    bucket = f"{unique}-live"
    sink = _CountingSink(s3, bucket, unique, kek=TEST_KEK)
    projector = Projector(kafka, unique, sink, group_id=bucket)
    projector.run(stop_when_caught_up_s=1)
    projector.close()
    for key in (stable, current):
        pointer = json.loads(s3.get_object(bucket, key).read())
        assert (pointer["revision"], pointer["stream_version"]) == (2, newest)
        assert 1 <= sink.writes[key] < moves, f"{key} written {sink.writes[key]} times"

    rebuilt = _CountingSink(s3, f"{unique}-rebuilt", unique, kek=TEST_KEK)
    rebuild(registry.log, rebuilt)  # one batch: each pointer written once
    assert (rebuilt.writes[stable], rebuilt.writes[current]) == (1, 1)
    assert _objects(s3, bucket) == _objects(s3, f"{unique}-rebuilt")
    registry.log.close()


def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_members_of_one_group_share_the_partitions(
    kafka: KafkaConnection, s3: Minio, model_files: dict, unique: str
) -> None:
    partitions = 4
    registry = _registry(kafka, s3, model_files, unique, partitions)
    refs = [AdapterRef("acme", f"m{i}") for i in range(12)]
    assert {partition_for(str(r), partitions) for r in refs} == set(range(partitions))
    for ref in refs:
        _adapter(registry, model_files, ref, revisions=1)
    bucket = f"{unique}-proj"
    members = [
        Projector(kafka, unique, S3Sink(s3, bucket, unique, kek=TEST_KEK), group_id=bucket)
        for _ in range(2)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=m.run, args=(stop,)) for m in members]
    for thread in threads:
        thread.start()
    try:

        def shared() -> bool:
            owned = [set(m.planners) for m in members]
            return all(len(o) == 2 for o in owned) and owned[0] | owned[1] == set(range(4))

        _wait_for(shared, 60, "each member to hold two partitions")
        before = [m.applied for m in members]
        for ref in refs:  # events on every partition, now that the members share them
            registry.move_channel(ALICE, ref, "stable", 1, rid())
        expected = _rebuilt(registry, s3, unique)
        _wait_for(lambda: _objects(s3, bucket) == expected, 60, "the projection to catch up")
        assert all(m.applied > b for m, b in zip(members, before, strict=True)), (
            "both members must have projected their partitions' events"
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for member in members:
            member.close()
    registry.log.close()
