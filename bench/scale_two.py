"""The scale-out figures with a second replica: what adding it does to the first (errors,
latency, memory), how a non-owner answers, and append throughput over both."""

from __future__ import annotations

import threading
import time

from bench.scale_figures import Figure, Run, append_rate, latencies
from bench.scale_world import (
    CommandLoop,
    Replica,
    adapters_in,
    object_count,
    one_per_partition,
    percentiles_ms,
    refuses_as_non_owner,
)

NON_OWNER_COMMANDS = 200


def second_replica(run: Run) -> Figure:
    """Start a second replica while a client runs commands on the first; keep them going
    for `settle_s` after it serves. Commands on partitions the first replica keeps are
    compared with the steady state before (the command-latency figure); the first
    replica's memory is read before and after it gave partitions away."""
    first = run.first
    assert first is not None
    before = first.memory()
    stop = threading.Event()
    loop = CommandLoop(first, run.layout, run.rng)
    commands = threading.Thread(target=loop.run, args=(None, stop))
    commands.start()
    began = time.perf_counter()
    try:
        run.second = run.replica("second")
        run.second.start(run.options.start_timeout_s)  # serves once it owns its share
        serving_s = time.perf_counter() - began
        time.sleep(run.options.settle_s)
    finally:
        stop.set()
        commands.join()
    kept = owned_partitions(first, run)
    run.moved = set(range(run.layout.partitions)) - kept
    stayed = [s for s in loop.samples if s.partition in kept]
    during, steady = latencies(stayed), latencies(run.steady)
    after = first.memory()
    return {
        "second_serving_s": round(serving_s, 2),
        "kept_partitions": sorted(kept),
        "second_took_partitions": bool(run.moved),
        "during": during,
        "steady": steady,
        # Judged only if partitions moved: else nothing was rebalanced.
        "errors_on_kept": during["failed_attempts"] if run.moved else None,
        "p99_vs_steady": round(during["p99_ms"] / steady["p99_ms"], 2) if run.moved else None,
        "commands_on_moved": len(loop.samples) - len(stayed),
        "memory_before": before,
        "memory_after": after,
        "rss_fell": after["rss_mib"] < before["rss_mib"],
    }


def owned_partitions(replica: Replica, run: Run, timeout_s: float = 120.0) -> set[int]:
    """The partitions `replica` writes now, from a command on each: a non-owner refuses
    it at once; a partition being taken is asked again."""
    deadline = time.monotonic() + timeout_s
    pending, owned = one_per_partition(run.layout), set()
    while pending:
        for partition, ref in list(pending.items()):
            answer = replica.move(ref)
            if not answer:
                owned.add(partition)
            if not answer or refuses_as_non_owner(answer):
                del pending[partition]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"partitions {sorted(pending)} neither served nor refused")
        if pending:
            time.sleep(0.2)
    return owned


def non_owner(run: Run) -> Figure:
    """Commands sent to a replica that does not own their partition (the first, for the
    partitions the second took; the second, for any, if it took none): how fast it says
    so, and a refused publish leaves the bucket as it was. Also how long a read
    (GetAdapter) takes there: a non-owner serves reads by reading the partition."""
    if run.first is None or run.second is None:
        raise RuntimeError("needs two replicas")
    asked, partitions = (
        (run.first, run.moved) if run.moved else (run.second, set(range(run.layout.partitions)))
    )
    refs = adapters_in(run.layout, run.rng, partitions, NON_OWNER_COMMANDS)
    times, answers = [], []
    for ref in refs:
        began = time.perf_counter()
        answers.append(asked.move(ref))
        times.append(time.perf_counter() - began)
    began = time.perf_counter()
    read = asked.get(refs[0])  # a read is served there: from the log, not refused
    read_s = time.perf_counter() - began
    objects = object_count(run.s3, run.topic)
    published = asked.publish(refs[0], run.upload)
    objects_after = object_count(run.s3, run.topic)
    return {
        "asked": "first" if asked is run.first else "second",
        "commands": len(refs),
        **percentiles_ms(times),
        "max_ms": round(max(times) * 1000, 2),
        "all_refused": all(refuses_as_non_owner(a) for a in answers),
        "read_ms": round(read_s * 1000, 1),
        "read_answer": read or "OK",
        "publish_refused": refuses_as_non_owner(published),
        "bucket_objects_before": objects,
        "bucket_objects_after": objects_after,
        "bucket_unchanged": objects == objects_after,
    }


def append_two_replicas(run: Run) -> Figure:
    """Events per second with the clients spread over both replicas (the client finds
    each adapter's owner), beside one replica's."""
    if run.first is None or run.second is None:
        raise RuntimeError("needs two replicas")
    two = append_rate(run, f"{run.first.address},{run.second.address}")
    one = run.one_replica_events_per_s
    return {
        "registry_events_per_s": round(two),
        "one_replica_events_per_s": round(one),
        "two_vs_one": round(two / one, 3) if one else None,
    }
