"""Events appended per second through the registry vs the raw kafka-python producer.

Registry: C gRPC clients issue commands (SetChannelGate, one event each) against a
registry server in its own process, as deployed, over Kafka: authentication, state
check, hash chain, transactional append (concurrent commands share a transaction),
acknowledged only once committed.
Baseline: the raw kafka-python producer (acks=all, idempotent) sending records of the
same size from the same number of threads, each send acknowledged before the next.
A fire-and-forget run of the raw producer is printed too, for context.

  python -m bench.registry_append [--commands 2000] [--clients 16]   (from the repo root)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import bar_chart_svg, record, servers
from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.stack import free_ports
from mint.backends.kafka import create_log_topic, durable_producer
from mint.backends.kafka_log import KafkaEventLog
from mint.client import RegistryClient

PARTITIONS = 6  # the registry default


def registry_run(env: dict[str, str], commands: int, clients: int) -> tuple[float, int]:
    """(events per second, mean envelope bytes) through gRPC + registry + Kafka."""
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

        def work(k: int) -> None:
            c = RegistryClient(target, "t")
            mine = refs[k::clients]  # no two clients share an adapter: no conflicts
            for i in range(commands // clients):
                c.set_gate(mine[i % len(mine)], f"c{i % 5}", "" if i % 2 else "suite")
            c.close()

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(work, range(clients)))
        elapsed = time.perf_counter() - started
        replica.stop()
    reader = KafkaEventLog(env["MINT_KAFKA_BOOTSTRAP"], topic, PARTITIONS, owned=())
    sizes = [len(r.envelope.SerializeToString()) for r in reader.read_all()]
    reader.close()
    return (commands // clients * clients) / elapsed, round(statistics.mean(sizes))


def raw_run(env: dict[str, str], events: int, threads: int, size: int, acked: bool) -> float:
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    create_log_topic(env["MINT_KAFKA_BOOTSTRAP"], topic, PARTITIONS, 1)
    producer = durable_producer(env["MINT_KAFKA_BOOTSTRAP"])
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
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with servers() as env:
        raw_run(env, 200, args.clients, 256, acked=True)  # warm up connections and JIT-less paths
        registry_eps, size = registry_run(env, args.commands, args.clients)
        raw_acked = raw_run(env, args.commands, args.clients, size, acked=True)
        raw_async = raw_run(env, args.commands, args.clients, size, acked=False)
    ratio = registry_eps / raw_acked
    print(f"payload {size} B, {args.clients} concurrent clients, {args.commands} events each run")
    print(f"  registry (gRPC, transactional, acknowledged) {registry_eps:8.0f} events/s")
    print(f"  raw producer, each send acknowledged         {raw_acked:8.0f} events/s")
    print(f"  raw producer, fire and forget + flush        {raw_async:8.0f} events/s")
    print(
        f"ratio registry / raw acknowledged = {ratio:.2f}x (target >= 0.5x); "
        f"vs fire-and-forget {registry_eps / raw_async:.2f}x"
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
            "ratio_vs_raw_acked": round(ratio, 3),
            "ratio_vs_raw_fire_and_forget": round(registry_eps / raw_async, 3),
            "target": ">= 0.5x vs raw acknowledged",
        },
    )
    chart = bar_chart_svg(
        "registry_append",
        f"Events appended per second ({args.clients} clients, {size}-byte events)",
        [
            ("registry (gRPC, transactional)", registry_eps),
            ("raw producer, each send acked", raw_acked),
            ("raw producer, fire and forget", raw_async),
        ],
        "events/s",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
