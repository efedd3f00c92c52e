"""The projector under faults, against the real Kafka and S3: concurrent writers never
move a pointer back; S3 going away and Kafka refusing commits do not stop it, it says
it is degraded meanwhile, and it ends with the same projection as a rebuild."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.domain.names import AdapterRef
from mint.projection import canonical_json, mutable
from mint.registry import Principal, Registry
from streams.backoff import Backoff
from streams.projector.runner import Projector, rebuild
from streams.projector.sink import S3Sink
from tests.infra.own_s3 import own_client, own_s3, restart
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
REFS = [AdapterRef("acme", "one"), AdapterRef("acme", "two")]


def rid() -> str:
    return uuid.uuid4().hex


def _registry(kafka: KafkaConnection, s3: Minio, model_files: dict, topic: str) -> Registry:
    """Two adapters with two revisions each, on a two-partition topic."""
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK))
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    for ref in REFS:
        registry.create_adapter(ALICE, ref, model_files["fingerprint"], rid())
        for _ in range(2):
            registry.publish_revision(ALICE, ref, model_files["upload"], rid())
    return registry


def _objects(s3: Minio, bucket: str) -> dict[str, bytes]:
    return {
        str(o.object_name): s3.get_object(bucket, str(o.object_name)).read()
        for o in s3.list_objects(bucket, recursive=True)
    }


def _versions(s3: Minio, bucket: str) -> dict[str, int]:
    """The stream version every pointer in the projection reflects now."""
    versions = {}
    for obj in s3.list_objects(bucket, prefix="adapters/", recursive=True):
        key = str(obj.object_name)
        if key.endswith("current.json") or "/channels/" in key:
            versions[key] = json.loads(s3.get_object(bucket, key).read())["stream_version"]
    return versions


def _equals_rebuild(registry: Registry, s3: Minio, bucket: str, blobs: str) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    rebuild(registry.log, S3Sink(s3, fresh, blobs_bucket=blobs, kek=TEST_KEK))
    assert _objects(s3, bucket) == _objects(s3, fresh)


class _AfterRead:
    """The S3 client, but `hook(key)` runs right after every read (found or not): the
    moment between a writer's read and its write, where a blind write goes backwards."""

    def __init__(self, s3: Minio, hook: Callable[[str], None]) -> None:
        self._s3, self._hook = s3, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, bucket: str, key: str) -> Any:
        try:
            return self._s3.get_object(bucket, key)
        finally:
            self._hook(key)


def _pointer(version: int) -> bytes:
    return canonical_json({"revision": version, "stream_version": version})


@pytest.mark.parametrize("stored", [None, 4], ids=["new-object", "existing-object"])
def test_a_pointer_write_that_loses_a_race_does_not_go_back(
    s3: Minio, unique: str, stored: int | None
) -> None:
    key = "adapters/acme/one/channels/stable.json"
    newer = S3Sink(s3, unique, blobs_bucket=unique, kek=TEST_KEK)
    if stored is not None:
        newer.apply([mutable(key, _pointer(stored), stored)])

    raced: list[str] = []

    def newer_writes_version_6(read: str) -> None:
        if read == key and not raced:
            raced.append(read)
            newer.apply([mutable(key, _pointer(6), 6)])

    racing = _AfterRead(s3, newer_writes_version_6)
    older = S3Sink(racing, unique, blobs_bucket=unique, kek=TEST_KEK)  # type: ignore[arg-type]
    older.apply([mutable(key, _pointer(5), 5)])  # read v<=4, then v6 lands, then its write
    assert json.loads(s3.get_object(unique, key).read())["stream_version"] == 6
    assert older.written == 0


def test_two_projectors_on_the_same_partitions_never_move_a_pointer_back(
    kafka: KafkaConnection, s3: Minio, model_files: dict, unique: str
) -> None:
    """Two groups, so both own every partition (a zombie, or two members during a
    rebalance), writing one bucket while channels move; a reader checks all along."""
    registry = _registry(kafka, s3, model_files, unique)
    bucket = f"{unique}-proj"
    # Once both are caught up, the second one pauses between its reads and its writes,
    # long enough for the first to write the next version of the same pointer meanwhile.
    pausing = threading.Event()

    def pause(_: str) -> None:
        if pausing.is_set():
            time.sleep(0.25)

    clients: list[Any] = [s3, _AfterRead(s3, pause)]
    projectors = [
        Projector(
            kafka, unique, S3Sink(client, bucket, unique, kek=TEST_KEK), group_id=f"{bucket}-{i}"
        )
        for i, client in enumerate(clients)
    ]
    stop, done = threading.Event(), threading.Event()
    backwards: list[str] = []

    def mover() -> None:
        """Moves in pairs: the second lands while the slow one still holds the first."""
        for i in range(8):
            for revision in (1, 2):
                registry.move_channel(ALICE, REFS[i % 2], "stable", revision, rid())
            time.sleep(0.6)  # the slow one catches up: both start the next pair together
        done.set()

    def reader() -> None:
        seen: dict[str, int] = {}
        while not stop.is_set():
            for key, version in _versions(s3, bucket).items():
                if version < seen.get(key, 0):
                    backwards.append(f"{key}: v{seen[key]} -> v{version}")
                seen[key] = max(version, seen.get(key, 0))

    threads = [threading.Thread(target=p.run, args=(stop,)) for p in projectors]
    threads += [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    try:
        history = sum(1 for _ in registry.log.read_all())
        _wait_for(lambda: min(p.applied for p in projectors) >= history, 30, "both caught up")
        pausing.set()
        threads.append(threading.Thread(target=mover))
        threads[-1].start()
        assert done.wait(timeout=60)
        time.sleep(3)  # both catch up
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for projector in projectors:
            projector.close()
    assert backwards == []
    _equals_rebuild(registry, s3, bucket, unique)
    registry.log.close()


@pytest.fixture
def probes() -> Iterator[Callable[[Projector], str]]:
    servers = []

    def serve(projector: Projector) -> str:
        server = projector.metrics.serve(0, host="127.0.0.1")
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_projector_rides_out_an_s3_outage(
    kafka: KafkaConnection,
    model_files: dict,
    tmp_path: Path,
    probes: Callable[[Projector], str],
) -> None:
    """The projector's S3 is killed while events keep coming, then started again."""
    topic = f"s3down-{uuid.uuid4().hex[:8]}"
    with own_s3(tmp_path / "s3") as server:
        s3 = own_client(server)
        registry = _registry(kafka, s3, model_files, topic)
        projector = Projector(kafka, topic, S3Sink(s3, "proj", topic, kek=TEST_KEK), group_id=topic)
        projector.backoff = Backoff(first_s=0.2, cap_s=1.0)
        url = probes(projector)
        stop = threading.Event()
        runner = threading.Thread(target=projector.run, args=(stop,))
        runner.start()
        try:
            events = sum(1 for _ in registry.log.read_all())
            _wait_for(lambda: projector.applied >= events, 30, "the first events projected")
            assert _get(f"{url}/healthz") == (200, "ok\n")

            server.process.kill()
            registry.move_channel(ALICE, REFS[0], "stable", 1, rid())  # Kafka only
            _wait_for(lambda: _get(f"{url}/healthz")[0] == 503, 30, "/healthz to say degraded")
            health = _get(f"{url}/healthz")[1]
            assert health.startswith("degraded: Unavailable: object storage is unavailable")
            metrics = _get(f"{url}/metrics")[1]
            assert "mint_projector_degraded 1" in metrics
            assert "mint_projector_failures_total 0" not in metrics
            time.sleep(3)  # several failed rounds: it must still be running
            assert runner.is_alive()

            restart(server)
            registry.move_channel(ALICE, REFS[1], "stable", 2, rid())
            _wait_for(lambda: _get(f"{url}/healthz")[0] == 200, 60, "/healthz to recover")
            assert "mint_projector_degraded 0" in _get(f"{url}/metrics")[1]
        finally:
            stop.set()
            runner.join(timeout=30)
        assert not runner.is_alive()
        projector.run(stop_when_caught_up_s=1)  # the same projector, to the end of the log
        projector.close()
        _equals_rebuild(registry, s3, "proj", topic)
        registry.log.close()


def test_projector_retries_commits_that_kafka_refuses(
    kafka: KafkaConnection,
    s3: Minio,
    model_files: dict,
    unique: str,
    probes: Callable[[Projector], str],
) -> None:
    """Commits fail as they did with brokers down (connection lost, then a timeout):
    the projector backs off, reports it, rewinds to its last commit and carries on."""
    registry = _registry(kafka, s3, model_files, unique)
    bucket = f"{unique}-proj"
    projector = Projector(kafka, unique, S3Sink(s3, bucket, unique, kek=TEST_KEK), group_id=bucket)
    projector.backoff = Backoff(first_s=0.2, cap_s=1.0)
    url = probes(projector)
    real_commit = projector.consumer.commit
    failures = [KafkaConnectionError("broker gone"), KafkaTimeoutError("commit timed out")]
    health_when_failing: list[tuple[int, str]] = []

    def flaky_commit(*args: Any, **kwargs: Any) -> None:
        if failures:
            if len(failures) == 1:  # the first failure is reported by now
                health_when_failing.append(_get(f"{url}/healthz"))
            raise failures.pop(0)
        real_commit(*args, **kwargs)

    projector.consumer.commit = flaky_commit
    try:
        projector.run(stop_when_caught_up_s=1)
        metrics = _get(f"{url}/metrics")[1]
    finally:
        projector.close()
    assert health_when_failing[0][0] == 503
    assert "KafkaConnectionError" in health_when_failing[0][1]
    assert "mint_projector_failures_total 2" in metrics
    assert "mint_projector_degraded 0" in metrics
    _equals_rebuild(registry, s3, bucket, unique)
    registry.log.close()
