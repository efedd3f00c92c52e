"""The figures of the scale-out benchmark, each a function of a `Run` (bench/scale_out.py
runs them in this file's order, for each size). Each returns what it measured as a dict
of plain numbers, flags and short texts; what a later figure needs is kept on the run.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from minio import Minio

from bench import registry_append
from bench.scale_fill import LISTED_TENANT, Filled, Layout, Upload, fill
from bench.scale_world import (
    PROJECTION_PREFIX,
    TOKEN,
    CommandLoop,
    Replica,
    Sample,
    percentiles_ms,
    tokens_file,
    wait_for_snapshots,
    wait_until_serving,
)
from mint.backends.kafka import KafkaConnection
from mint.backends.s3_blobs import S3BlobStore
from mint.client import RegistryClient
from mint.domain.events import AdapterCreated, ChannelGateSet
from mint.eventlog.port import Metadata, Position, Recorded, build_envelopes
from mint.projection import Operation, Planner
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

Figure = dict[str, Any]
BLOB_WRITERS = 16  # concurrent blob PUTs of the fill (the projector's default S3 concurrency)


@dataclass(frozen=True)
class Options:
    listed: int = 300  # adapters of the tenant ListAdapters pages through
    commands: int = 300  # timed MoveChannel commands on the owner
    list_requests: int = 50  # timed first pages
    clients: int = 16  # concurrent clients of the append throughput
    append_commands: int = 2000  # commands per append-throughput run
    settle_s: float = 5.0  # how long commands go on after the second replica serves
    start_timeout_s: float = 900.0  # for a replica to serve
    fill_workers: int = 1
    projector: bool = True
    audit: bool = True
    controller: bool = True
    plan_turns: int = 200  # steady controller planning turns
    seed: int = 0


@dataclass
class Run:
    """One size's world: its topic (also the bucket of its blobs and projection) and
    replicas, and what figures hand on to later ones."""

    env: dict[str, str]
    kafka: KafkaConnection
    s3: Minio
    topic: str
    layout: Layout
    options: Options
    folder: Path
    upload: Upload = field(default_factory=Upload.make)
    rng: random.Random = field(default_factory=random.Random)
    filled: Filled | None = None
    first: Replica | None = None  # the replica that runs from "ready from snapshots" on
    second: Replica | None = None
    steady: list[Sample] = field(default_factory=list)
    moved: set[int] = field(default_factory=set)  # partitions the second replica took
    catalog_written: bool = False  # the listed tenant's entries
    one_replica_events_per_s: float = 0.0

    def replica(self, name: str) -> Replica:
        return Replica.new(
            self.topic,
            tokens_file(self.folder),
            self.folder / f"{name}.log",
            self.env,
            self.layout.partitions,
        )

    def started(self, replica: Replica) -> float:
        """Start `replica`; seconds until it serves every partition it was given."""
        began = time.perf_counter()
        replica.start(self.options.start_timeout_s)
        wait_until_serving(replica, self.layout, self.options.start_timeout_s)
        return time.perf_counter() - began

    def stop(self) -> None:
        for replica in (self.first, self.second):
            if replica is not None:
                replica.stop()


def fill_topic(run: Run) -> Figure:
    """The fill: N adapters x 3 events, and each adapter's blob its revision points to
    (blobs are sealed per adapter, so there is one per adapter, as in a real catalog;
    stored BLOB_WRITERS at a time, timed apart from the events). Only the projector and
    the audit read blobs: with both skipped none is stored (at 10^6 that saves some 40
    minutes of S3 writes here)."""
    blobs = S3BlobStore(run.s3, run.topic, TEST_KEK)
    began = time.perf_counter()
    if run.options.projector or run.options.audit:
        with ThreadPoolExecutor(BLOB_WRITERS) as pool:
            ids = (run.layout.adapter_id(i) for i in range(run.layout.adapters))
            for _ in pool.map(lambda a: blobs.put(a, run.upload.weights), ids):
                pass
    blobs_s = time.perf_counter() - began
    filled = run.filled = fill(
        run.kafka, run.topic, run.layout, run.upload, run.options.fill_workers
    )
    return {
        "events": filled.events,
        "seconds": round(filled.seconds, 2),
        "events_per_s": round(filled.events_per_s),
        "workers": run.options.fill_workers,
        "blobs_seconds": round(blobs_s, 2),
    }


def first_start(run: Run) -> Figure:
    """A replica on a log with no snapshots (as after an upgrade): it replays every
    partition, serves, and writes every snapshot (its RSS and peak once it has); then it
    stops."""
    if run.filled is None:
        raise RuntimeError("fill the topic first")
    replica = run.replica("first-start")
    began = time.perf_counter()
    try:
        ready_s = run.started(replica)
        wait_for_snapshots(run.kafka, run.topic, run.filled.streams, run.options.start_timeout_s)
        written_s = time.perf_counter() - began
        memory = replica.memory()  # the peak includes writing every snapshot
    finally:
        replica.stop()
    return {"ready_s": round(ready_s, 2), "snapshots_written_s": round(written_s, 2), **memory}


def ready_from_snapshots(run: Run) -> Figure:
    """The acceptance figure: a replica taking every partition from the snapshots."""
    run.first = run.replica("first")
    ready_s = run.started(run.first)
    log = run.first.process.log_file.read_text(errors="replace")
    return {
        "ready_s": round(ready_s, 2),
        **run.first.memory(),
        "snapshots_used": "snapshots not used" not in log,
    }


def command_latency(run: Run) -> Figure:
    """MoveChannel on random adapters, on the replica that owns every partition."""
    assert run.first is not None
    run.steady = CommandLoop(run.first, run.layout, run.rng).run(run.options.commands)
    return latencies(run.steady)


def latencies(samples: list[Sample]) -> Figure:
    """Each command's time until applied (retries included), and the failed attempts."""
    errors = [e for s in samples for e in s.errors]
    return {
        "commands": len(samples),
        **percentiles_ms([s.seconds for s in samples]),
        "failed_attempts": len(errors),
        "not_applied": sum(1 for s in samples if not s.applied),
        "first_errors": sorted(set(errors))[:3],
    }


def list_adapters(run: Run) -> Figure:
    """The first page of 100 of one tenant, and a walk of all its pages while commands
    run and the catalog gains entries: each adapter listed exactly once."""
    assert run.first is not None
    listed = write_listed_catalog(run)
    client = RegistryClient(run.first.address, TOKEN)
    times = []
    for _ in range(run.options.list_requests):
        began = time.perf_counter()
        client.list_page(LISTED_TENANT, page_size=100)
        times.append(time.perf_counter() - began)
    walked, stop = [], threading.Event()
    commands = threading.Thread(
        target=CommandLoop(run.first, run.layout, run.rng).run, args=(None, stop)
    )
    commands.start()
    try:
        late = threading.Thread(target=_write_late_entries, args=(run, listed))
        late.start()
        walked = [a.ref.name for a in client.list_adapters(LISTED_TENANT, page_size=100)]
        late.join()
    finally:
        stop.set()
        commands.join()
        client.close()
    originals = {run.layout.ref(i).partition("/")[2] for i in range(listed)}
    return {
        "adapters": listed,
        **percentiles_ms(times),
        "walk_listed": len(walked),
        "walk_each_once": len(set(walked)) == len(walked) and originals <= set(walked),
    }


def write_listed_catalog(run: Run) -> int:
    """The listed tenant's catalog entries, once per run; how many adapters it has."""
    listed = min(run.options.listed, run.layout.adapters)
    if not run.catalog_written:
        _write_catalog(run, [run.layout.created(i) for i in range(listed)])
        run.catalog_written = True
    return listed


def _write_catalog(run: Run, created: list[AdapterCreated]) -> None:
    """Catalog entries as the projector writes them (its planner and sink), for these
    adapters only: the rest of the log is not projected."""
    planner, meta = Planner(), Metadata("bench", "catalog")
    operations: list[Operation] = []
    for event in created:
        stream = f"{event.tenant}/{event.name}"
        envelope = build_envelopes(stream, 0, b"", [event], meta)[0]
        operations += planner.plan(Recorded(envelope, Position(0, 0)))
    sink = S3Sink(run.s3, run.topic, blobs_bucket=run.topic, prefix=PROJECTION_PREFIX, kek=TEST_KEK)
    try:
        sink.apply(operations)
    finally:
        sink.close()


def _write_late_entries(run: Run, listed: int) -> None:
    """Entries of new adapters, among the names a walk has passed and those it has not
    reached yet, written while it walks."""
    late = [
        replace(event, adapter_id=uuid.uuid4().hex, name=event.name + "-late")
        for event in (run.layout.created(i) for i in range(0, listed, max(1, listed // 20)))
    ]
    _write_catalog(run, late)


def append_one_replica(run: Run) -> Figure:
    """Events per second through one replica, beside the raw producer (acks=all, each
    send acknowledged) at the same event size and concurrency (bench/registry_append)."""
    assert run.first is not None
    registry = append_rate(run, run.first.address)
    raw = registry_append.raw_run(
        run.env, run.options.append_commands, run.options.clients, _gate_event_bytes(), acked=True
    )
    run.one_replica_events_per_s = registry
    return {
        "registry_events_per_s": round(registry),
        "raw_acked_events_per_s": round(raw),
        "ratio_vs_raw": round(registry / raw, 3),
    }


def append_rate(run: Run, target: str) -> float:
    """SetChannelGate commands per second on adapters of the topic (registry_append's)."""
    chosen = run.rng.sample(
        range(run.layout.adapters), min(run.options.clients * 4, run.layout.adapters)
    )
    clients = min(run.options.clients, len(chosen))
    refs = [run.layout.ref(i) for i in chosen]
    return registry_append.gate_commands_per_second(
        target, TOKEN, refs, run.options.append_commands, clients
    )


def _gate_event_bytes() -> int:
    """The size of the envelope a SetChannelGate command appends."""
    event = ChannelGateSet("c1", "suite")
    meta = Metadata("bench", uuid.uuid4().hex)
    return build_envelopes("bulk1/a0000001", 4, bytes(32), [event], meta)[0].ByteSize()
