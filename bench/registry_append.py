"""Events appended per second through the registry vs the raw kafka-python producer.

Registry: C gRPC clients issue commands (SetChannelGate, one event each) against a
registry server in its own process, as deployed, over Kafka: authentication, state
check, hash chain, transactional append (concurrent commands share a transaction),
acknowledged only once committed.
Baseline: the raw kafka-python producer (acks=all, idempotent) sending records of the
same size from the same number of threads, each send acknowledged before the next.
Both run --rounds times, alternating; the medians are compared (single runs vary by a
third on a 2-core machine). For context it also prints a fire-and-forget run of the raw
producer and the ceiling any gRPC service has here: empty health checks against the same
registry process from the same clients.

  python -m bench.registry_append [--commands 4000] [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import bar_chart_svg, record, servers
from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.stack import free_ports
from mint.backends.kafka import KafkaConnection, create_log_topic, durable_producer
from mint.backends.kafka_log import KafkaEventLog
from mint.client import RegistryClient

PARTITIONS = 6  # the registry default


def registry_run(env: dict[str, str], commands: int, clients: int) -> tuple[float, int, float]:
    """(events per second, mean envelope bytes, empty calls per second) through gRPC +
    registry + Kafka, and through the same server's health check."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        tokens = write_tokens(
            Path(tmp) / "tokens.json",
            {"t": {"principal": "bench", "tenants": ["*"], "admin": True}},
        )
        replica = RegistryProcess(
            free_ports(1)[0], topic, tokens, Path(tmp) / "registry.log", env, PARTITIONS
        ).start()
        target = replica.address
        setup = RegistryClient(target, "t")
        fingerprint = "ab" * 32
        setup.register_base("synthetic", fingerprint, {"w": [1, 1]})
        refs = [f"bench/a{i}" for i in range(clients * 4)]
        for ref in refs:
            setup.create_adapter(ref, fingerprint)

        def ping(k: int) -> None:
            with grpc.insecure_channel(target) as channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing is partial
                for _ in range(commands // clients):
                    stub.Check(health_pb2.HealthCheckRequest())

        rates = [
            gate_commands_per_second(target, "t", refs, commands, clients),
            calls_per_second(ping, clients, commands // clients * clients),
        ]
        replica.stop()
    reader = KafkaEventLog(
        KafkaConnection(env["MINT_KAFKA_BOOTSTRAP"]), topic, PARTITIONS, owned=()
    )
    sizes = [len(r.envelope.SerializeToString()) for r in reader.read_all()]
    reader.close()
    return rates[0], round(statistics.mean(sizes)), rates[1]


def gate_commands_per_second(
    target: str, token: str, refs: list[str], commands: int, clients: int
) -> float:
    """SetChannelGate commands per second (one event each) from `clients` concurrent
    clients, each on its own share of `refs` (no two share an adapter: no conflicts)."""

    def work(k: int) -> None:
        c = RegistryClient(target, token)
        mine = refs[k::clients]
        for i in range(commands // clients):
            c.set_gate(mine[i % len(mine)], f"c{i % 5}", "" if i % 2 else "suite")
        c.close()

    return calls_per_second(work, clients, commands // clients * clients)


def calls_per_second(work: Callable[[int], None], threads: int, calls: int) -> float:
    """`calls` per second of `work(k)` run on `threads` threads, k = 0..threads-1."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return calls / (time.perf_counter() - started)


def raw_run(env: dict[str, str], events: int, threads: int, size: int, acked: bool) -> float:
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    kafka = KafkaConnection(env["MINT_KAFKA_BOOTSTRAP"])
    create_log_topic(kafka, topic, PARTITIONS, 1)
    producer = durable_producer(kafka)
    payload = os.urandom(size)

    def work(k: int) -> None:
        key = f"bench/a{k}".encode()
        for _ in range(events // threads):
            future = producer.send(topic, key=key, value=payload)
            if acked:
                future.get(timeout=30)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return (events // threads * threads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=4000, help="events per run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients / threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    args = parser.parse_args()
    registry, raw, ceiling = [], [], []
    with servers() as env:
        raw_run(env, 200, args.clients, 256, acked=True)  # warm up connections and JIT-less paths
        for _ in range(args.rounds):
            eps, size, grpc_eps = registry_run(env, args.commands, args.clients)
            registry.append(eps)
            ceiling.append(grpc_eps)
            raw.append(raw_run(env, args.commands, args.clients, size, acked=True))
            print(f"  round: registry {eps:.0f}, raw acknowledged {raw[-1]:.0f} events/s")
        raw_async = raw_run(env, args.commands, args.clients, size, acked=False)
    registry_eps, raw_acked = statistics.median(registry), statistics.median(raw)
    grpc_eps = statistics.median(ceiling)
    ratio = registry_eps / raw_acked
    print(f"payload {size} B, {args.clients} concurrent clients, {args.commands} events each run")
    print(f"medians of {args.rounds} rounds:")
    print(f"  registry (gRPC, transactional, acknowledged) {registry_eps:8.0f} events/s")
    print(f"  raw producer, each send acknowledged         {raw_acked:8.0f} events/s")
    print(f"  raw producer, fire and forget + flush        {raw_async:8.0f} events/s")
    print(f"  empty gRPC calls to the same server          {grpc_eps:8.0f} calls/s")
    print(
        f"ratio registry / raw acknowledged = {ratio:.2f}x (target >= 0.5x); "
        f"the gRPC ceiling alone is {grpc_eps / raw_acked:.2f}x"
    )
    path = record(
        "registry_append",
        {
            "payload_bytes": size,
            "clients": args.clients,
            "events": args.commands,
            "registry_events_per_s": round(registry_eps, 1),
            "raw_acked_events_per_s": round(raw_acked, 1),
            "raw_fire_and_forget_events_per_s": round(raw_async, 1),
            "empty_grpc_calls_per_s": round(grpc_eps, 1),
            "rounds": args.rounds,
            "registry_runs": [round(x, 1) for x in registry],
            "raw_acked_runs": [round(x, 1) for x in raw],
            "ratio_vs_raw_acked": round(ratio, 3),
            "ratio_vs_raw_fire_and_forget": round(registry_eps / raw_async, 3),
            "grpc_ceiling_vs_raw_acked": round(grpc_eps / raw_acked, 3),
            "target": ">= 0.5x vs raw acknowledged",
        },
    )
    chart = bar_chart_svg(
        "registry_append",
        f"Events appended per second ({args.clients} clients, {size}-byte events, medians)",
        [
            ("registry (gRPC, transactional)", registry_eps),
            ("raw producer, each send acked", raw_acked),
            ("raw producer, fire and forget", raw_async),
            ("empty gRPC calls, same server", grpc_eps),
        ],
        "events/s",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
