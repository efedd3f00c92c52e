"""Two registry replicas race on the same adapters; one is SIGKILLed mid-run.

Afterwards, from the Kafka topic alone: every adapter's versions are contiguous with no
duplicates, every hash chain verifies, and every acknowledged command's events are in the
log exactly once, at the versions the command was told.
"""

from __future__ import annotations

import random
import signal
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.services import stop_all
from deploy.local.stack import free_ports
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.client import RegistryClient
from mint.eventlog.chain import verify_stream

pytestmark = pytest.mark.slow

ADAPTERS = 8
CLIENTS = 4
COMMANDS_PER_CLIENT = 60  # 240 in all, plus retries
KILL_AFTER = 80  # commands acknowledged before replica 0 is SIGKILLed


@dataclass(frozen=True)
class Ack:
    ref: str
    request_id: str
    first: int
    last: int


@dataclass
class Replicas:
    processes: list[RegistryProcess]
    target: str
    topic: str


@pytest.fixture
def replicas(tmp_path: Path, endpoints: dict[str, str]) -> Iterator[Replicas]:
    tokens = write_tokens(
        tmp_path / "tokens.json",
        {
            "admin": {"principal": "ops", "tenants": ["*"], "admin": True},
            "alice": {"principal": "alice", "tenants": ["acme"]},
        },
    )
    topic = f"race-{uuid.uuid4().hex[:8]}"
    processes = [
        RegistryProcess(port, topic, tokens, tmp_path / f"replica-{i}.log", endpoints, 4)
        for i, port in enumerate(free_ports(2))
    ]
    try:
        for replica in processes:
            replica.start()
        target = "ipv4:" + ",".join(r.address for r in processes)
        yield Replicas(processes, target, topic)
    finally:
        stop_all(processes)


def test_two_replicas_racing_with_one_killed(
    replicas: Replicas, model_files: dict, kafka: KafkaConnection
) -> None:
    admin = RegistryClient(replicas.target, "admin", retry_for_s=90)
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    refs = [f"acme/race-{i}" for i in range(ADAPTERS)]
    setup = RegistryClient(replicas.target, "alice", retry_for_s=90)
    for ref in refs:
        setup.create_adapter(ref, model_files["fingerprint"])

    acks: list[Ack] = []
    conflicts = [0]
    lock = threading.Lock()
    killed = threading.Event()
    killed_status: list[int] = []

    def record(ref: str, request_id: str, first: int, last: int) -> None:
        with lock:
            acks.append(Ack(ref, request_id, first, last))
            if len(acks) >= KILL_AFTER and not killed.is_set():
                killed.set()
                killed_status.append(replicas.processes[0].kill())

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        client = RegistryClient(replicas.target, "alice", retry_for_s=90)
        mine: list[tuple[str, str, int, str, int, int]] = []
        for _ in range(COMMANDS_PER_CLIENT):
            ref = rng.choice(refs)
            if mine and rng.random() < 0.25:  # retry an acknowledged command, same id
                ref, channel, version, request_id, first, last = rng.choice(mine)
                again = client.set_gate(ref, channel, "suite", version, request_id)
                assert again.duplicate and (again.first_version, again.last_version) == (
                    first,
                    last,
                ), "a retry must return the first result"
                continue
            version = client.get_adapter(ref).version
            channel, request_id = f"c{rng.randrange(3)}", uuid.uuid4().hex
            try:
                result = client.set_gate(ref, channel, "suite", version, request_id)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ABORTED:
                    raise
                with lock:
                    conflicts[0] += 1
                continue
            mine.append(
                (ref, channel, version, request_id, result.first_version, result.last_version)
            )
            record(ref, request_id, result.first_version, result.last_version)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for done in [pool.submit(client_loop, seed) for seed in range(CLIENTS)]:
            done.result(timeout=600)  # re-raises a client's failed assertion here
    assert killed.is_set(), "the kill never happened: too few commands acknowledged"
    assert killed_status == [-signal.SIGKILL]
    assert conflicts[0] > 0, "no command raced: the test did not exercise concurrency"

    # The log alone, read back by a fresh client that owns nothing.
    reader = KafkaEventLog(kafka, replicas.topic, partitions=4, owned=())
    streams: dict[str, list] = defaultdict(list)
    for recorded in reader.read_all():
        streams[recorded.envelope.stream_id].append(recorded)
    reader.close()
    for ref in refs:
        events = streams[ref]
        versions = [r.envelope.stream_version for r in events]
        assert versions == list(range(1, len(versions) + 1)), f"{ref}: {versions}"
        assert verify_stream((r.envelope, str(r.position)) for r in events) == []
    for ack in acks:
        hits = [
            r.envelope.stream_version
            for r in streams[ack.ref]
            if r.envelope.request_id == ack.request_id
        ]
        assert hits == list(range(ack.first, ack.last + 1)), f"{ack}: found {hits}"
    print(
        f"\n{len(acks)} acknowledged, {conflicts[0]} conflicts, "
        f"{sum(len(v) for v in streams.values())} events"
    )
