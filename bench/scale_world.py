"""What a scale-out run measures against: the filled topic, registry replicas as their own
processes (as deployed), and the raw calls the figures time.

Commands are sent through a bare gRPC stub, one attempt each, so that every answer is
seen (the client library would retry an UNAVAILABLE out of sight).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from minio import Minio

from bench.scale_fill import Layout, Upload
from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.stack import free_ports
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_snapshots import SnapshotTable, snapshot_topic
from mint.client import parse_ref
from mint.eventlog.snapshots import SUMMARY_KEY
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc
from mint.v1.snapshots_pb2 import PartitionSummary

TOKEN = "bench"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CHANNEL = "stable"  # what the timed commands move (to revision 1: always allowed)
PROJECTION_PREFIX = "projection/"  # the registry lists from here (bucket: the topic)
RETRY_PAUSE_S = 0.05  # between attempts of one command (the client library starts at 0.1)
RETRY_FOR_S = 30.0


def tokens_file(folder: Path) -> Path:
    return write_tokens(
        folder / "tokens.json", {TOKEN: {"principal": "bench", "tenants": ["*"], "admin": True}}
    )


def memory_mib(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM), in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = round(int(value.split()[0]) / 1024, 1)  # "123456 kB"
    return {"rss_mib": found["VmRSS"], "peak_rss_mib": found["VmHWM"]}


@dataclass
class Replica:
    """One registry replica in its own process, and a bare stub to it."""

    process: RegistryProcess
    stub: registry_pb2_grpc.RegistryStub | None = None
    channel: grpc.Channel | None = None

    @classmethod
    def new(
        cls, topic: str, tokens: Path, log: Path, env: dict[str, str], partitions: int
    ) -> Replica:
        flags = ["--projection-bucket", topic, "--projection-prefix", PROJECTION_PREFIX]
        return cls(
            RegistryProcess(free_ports(1)[0], topic, tokens, log, env, partitions, extra_args=flags)
        )

    @property
    def address(self) -> str:
        return self.process.address

    @property
    def pid(self) -> int:
        if self.process.process is None or self.process.process.proc is None:
            raise RuntimeError("the replica is not running")
        return self.process.process.proc.pid

    def start(self, timeout_s: float) -> Replica:
        self.process.start(timeout_s)
        self.channel = grpc.insecure_channel(self.address)
        self.stub = registry_pb2_grpc.RegistryStub(self.channel)
        return self

    def memory(self) -> dict[str, float]:
        return memory_mib(self.pid)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.process.stop()

    def move(self, ref: str, request_id: str = "", timeout_s: float = 30.0) -> str:
        """One MoveChannel attempt: "" if it was applied, else the status and its text."""
        request = pb.MoveChannelRequest(
            ref=parse_ref(ref),
            channel=CHANNEL,
            revision=1,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._attempt(lambda s: s.MoveChannel(request, metadata=AUTH, timeout=timeout_s))

    def get(self, ref: str, timeout_s: float = 30.0) -> str:
        request = pb.GetAdapterRequest(ref=parse_ref(ref))
        return self._attempt(lambda s: s.GetAdapter(request, metadata=AUTH, timeout=timeout_s))

    def publish(self, ref: str, upload: Upload, timeout_s: float = 30.0) -> str:
        header = pb.PublishRevisionHeader(
            ref=parse_ref(ref),
            request_id=uuid.uuid4().hex,
            adapter_config=upload.config,
            weights_sha256=upload.sha256,
            weights_size=len(upload.weights),
        )
        parts = [
            pb.PublishRevisionRequest(header=header),
            pb.PublishRevisionRequest(weights_chunk=upload.weights),
        ]
        return self._attempt(
            lambda s: s.PublishRevision(iter(parts), metadata=AUTH, timeout=timeout_s)
        )

    def _attempt(self, call: object) -> str:
        if self.stub is None:
            raise RuntimeError("the replica is not started")
        try:
            call(self.stub)  # type: ignore[operator]
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return ""


def refuses_as_non_owner(answer: str) -> bool:
    return answer.startswith("UNAVAILABLE") and "does not own" in answer


@dataclass(frozen=True)
class Sample:
    """One command as a client lives it: its attempts until one was applied."""

    partition: int
    seconds: float  # from the first attempt to the last answer
    errors: tuple[str, ...]  # the answers of the attempts that failed
    applied: bool


@dataclass
class CommandLoop:
    """MoveChannel on random adapters, one after another. A command the replica answers
    with a retryable status is sent again with the same request id (as the client
    library does) after a short pause, unless the replica says it does not own the
    adapter; every failed attempt is recorded."""

    replica: Replica
    layout: Layout
    rng: random.Random
    samples: list[Sample] = field(default_factory=list)

    def run(self, count: int | None = None, until: threading.Event | None = None) -> list[Sample]:
        """`count` commands, or until `until` is set."""
        done = 0
        while (count is None or done < count) and not (until is not None and until.is_set()):
            self.samples.append(self.command(self.rng.randrange(self.layout.adapters)))
            done += 1
        return self.samples

    def command(self, i: int) -> Sample:
        ref, request_id = self.layout.ref(i), uuid.uuid4().hex
        errors: list[str] = []
        began = time.perf_counter()
        while True:
            answer = self.replica.move(ref, request_id)
            elapsed = time.perf_counter() - began
            if not answer:
                return Sample(self.layout.partition(i), elapsed, tuple(errors), True)
            errors.append(answer)
            retryable = answer.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))
            if not retryable or refuses_as_non_owner(answer) or elapsed > RETRY_FOR_S:
                return Sample(self.layout.partition(i), elapsed, tuple(errors), False)
            time.sleep(RETRY_PAUSE_S)


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    if len(seconds) == 1:
        return {"p50_ms": round(seconds[0] * 1000, 2), "p99_ms": round(seconds[0] * 1000, 2)}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(seconds) * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
    }


def one_per_partition(layout: Layout) -> dict[int, str]:
    """An adapter of each partition (the first found)."""
    found: dict[int, str] = {}
    for i in range(layout.adapters):
        found.setdefault(layout.partition(i), layout.ref(i))
        if len(found) == layout.partitions:
            break
    return found


def adapters_in(layout: Layout, rng: random.Random, partitions: set[int], count: int) -> list[str]:
    """`count` random adapters (repeats allowed) of the given partitions."""
    found: list[str] = []
    while len(found) < count:
        i = rng.randrange(layout.adapters)
        if layout.partition(i) in partitions:
            found.append(layout.ref(i))
    return found


def wait_until_serving(replica: Replica, layout: Layout, timeout_s: float) -> None:
    """Until the replica answers a read of an adapter in every partition: each partition
    taken (a replica answers UNAVAILABLE for a partition it is still taking)."""
    deadline = time.monotonic() + timeout_s
    waiting = dict(one_per_partition(layout))
    while waiting:
        for partition, ref in list(waiting.items()):
            if not replica.get(ref):
                del waiting[partition]
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"partitions {sorted(waiting)} not served after {timeout_s} s")
        time.sleep(0.1 if waiting else 0)


def snapshot_summaries(kafka: KafkaConnection, topic: str, partitions: int) -> dict[int, int]:
    """Per partition, the stream count in the last committed snapshot summary (a
    transaction writes each partition's summary last, so the tail holds it)."""
    consumer = KafkaConsumer(
        **kafka.options(), isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(snapshot_topic(topic), p) for p in range(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - 8))
        found: dict[int, int] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if record.key == SUMMARY_KEY and record.value:
                        found[tp.partition] = PartitionSummary.FromString(record.value).streams
        return found
    finally:
        consumer.close()


def wait_for_snapshots(
    kafka: KafkaConnection, topic: str, streams: dict[int, int], timeout_s: float
) -> None:
    """Until every partition's snapshot summary counts all its streams and its table
    holds what the summary says (a large partition's snapshots are written a chunk per
    transaction, each with the whole summary: the count alone is reached at the first)."""
    deadline = time.monotonic() + timeout_s
    whole: set[int] = set()
    while True:
        summaries = snapshot_summaries(kafka, topic, len(streams))
        counted = {p for p, n in streams.items() if summaries.get(p, 0) >= n}
        whole |= {p for p in counted - whole if _table_holds(kafka, topic, p)}
        if whole == set(streams):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"snapshots not written after {timeout_s} s: summaries {summaries}, "
                f"streams {streams}"
            )
        time.sleep(0.5)


def _table_holds(kafka: KafkaConnection, topic: str, partition: int) -> bool:
    table = SnapshotTable(kafka, topic, partition)
    table.read(30.0)
    return table.restored().state is not None


def object_count(s3: Minio, bucket: str) -> int:
    return sum(1 for _ in s3.list_objects(bucket, recursive=True))
