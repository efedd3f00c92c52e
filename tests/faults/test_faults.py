"""Faults during a stream of commands from several clients, on a 3-broker cluster
(replication 3, min ISR 2) with two registry replicas and a projector.

For each fault: writes resume within RESUME_S of it; every command a client saw fail was
answered with a retryable status before its deadline and then retried to success with
the same request id; the projector stays up; afterwards no acknowledged command is lost
or applied twice, and the projection equals a rebuild from offset 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from mint.backends.kafka import broker_ids, wait_for_partitions

from .cluster import PARTITIONS, Cluster, start_cluster, stop_cluster
from .load import CommandLoad, Outcomes, check_log

pytestmark = [pytest.mark.slow, pytest.mark.faults]

RESUME_S = 15.0
ADAPTERS = 8
TOKENS: dict[str, dict[str, object]] = {
    "admin": {"principal": "ops", "tenants": ["*"], "admin": True},
    "alice": {"principal": "alice", "tenants": ["acme"]},
}
REFS = [f"acme/fault-{i}" for i in range(ADAPTERS)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_files: dict) -> Iterator[Cluster]:
    from mint.client import RegistryClient

    running = start_cluster(tmp_path_factory.mktemp("faults"), model_files, TOKENS)
    try:
        admin = RegistryClient(running.target, "admin", retry_for_s=120)
        admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
        alice = RegistryClient(running.target, "alice", retry_for_s=120)
        for ref in REFS:  # at once: what one replica acknowledged, the other reads
            alice.create_adapter(ref, model_files["fingerprint"])
        yield running
    finally:
        stop_cluster(running)


def _load(cluster: Cluster, model_files: dict) -> CommandLoad:
    upload = model_files["upload"]
    return CommandLoad(cluster.target, "alice", REFS, (upload.config, upload.weights))


def _check_after(cluster: Cluster, outcomes: Outcomes, fault_at: float) -> None:
    resumed = outcomes.resumed_after(fault_at, PARTITIONS)
    waited = outcomes.longest_wait_s(since=fault_at)
    print(
        f"\n{len(outcomes.acks)} acknowledged, {len(outcomes.retried)} retried; writes to each "
        f"partition resumed after {', '.join(f'{t:.1f}' for t in resumed.values())} s; "
        f"the longest a command waited: {waited:.1f} s"
    )
    assert set(resumed) == set(range(PARTITIONS)), f"writes never resumed: {resumed}"
    # Every command waiting at the fault, or sent after it, got through within RESUME_S
    # (a partition's first acknowledgement can come later only because no client
    # happened to send it a command sooner).
    assert waited <= RESUME_S, (
        f"a command waited {waited:.1f} s after the fault; its answers: "
        f"{outcomes.answers_to_slowest(since=fault_at)}"
    )
    assert outcomes.broken == [], outcomes.broken[:5]
    if outcomes.lost:
        cluster.dump_stacks()  # into the registries' logs: what they were waiting on
    assert outcomes.lost == [], outcomes.lost[:5]
    assert waited <= RESUME_S, (
        f"a command waited {waited:.1f} s after the fault; its answers: "
        f"{outcomes.answers_to_slowest(since=fault_at)}"
    )
    assert cluster.projector.proc is not None and cluster.projector.proc.poll() is None, (
        "the projector exited"
    )
    assert check_log(cluster.kafka, cluster.topic, PARTITIONS, outcomes.acks) == []
    assert cluster.projection_differences() == []


def test_the_stack_runs_three_brokers_and_replicates_three_ways(cluster: Cluster) -> None:
    """`Stack(brokers=3)`, as `make faults` starts it (the losses are the tests below)."""
    assert broker_ids(cluster.kafka) == {1, 2, 3}
    for partition in wait_for_partitions(cluster.kafka, cluster.topic):
        assert sorted(partition["replica_nodes"]) == [1, 2, 3]


def test_losing_a_registrys_transaction_coordinator(cluster: Cluster, model_files: dict) -> None:
    _kill_a_broker_under_load(cluster, model_files, lambda coordinators, leaders: min(coordinators))


def test_losing_a_partition_leader(cluster: Cluster, model_files: dict) -> None:
    _kill_a_broker_under_load(
        cluster, model_files, lambda coordinators, leaders: min(leaders - coordinators or leaders)
    )


def _kill_a_broker_under_load(
    cluster: Cluster, model_files: dict, pick: Callable[[set[int], set[int]], int]
) -> None:
    """Kill the broker `pick` chooses from (transaction coordinators, partition leaders)."""
    with _load(cluster, model_files) as load:
        load.wait_until_steady(PARTITIONS)
        coordinators = {cluster.coordinator_of(t) for t in cluster.writers()}
        killed_at = cluster.kill_broker(pick(coordinators, set(cluster.leaders().values())))
        load.wait_for_acks(load.acked() + 60, timeout_s=120)
    try:
        _check_after(cluster, load.stop(), killed_at)
    finally:
        cluster.heal()


def test_losing_s3(cluster: Cluster, model_files: dict) -> None:
    with _load(cluster, model_files) as load:
        load.wait_until_steady(PARTITIONS)
        cluster.stack.s3.process.kill()
        killed_at = time.monotonic()
        time.sleep(5)
        cluster.stack.s3.start()
        cluster.stack.s3.wait_ready()
        back_at = time.monotonic()
        load.wait_for_acks(load.acked() + 40, timeout_s=120)
    outcomes = load.stop()
    refused = [
        f for f in outcomes.retried if f.code == "UNAVAILABLE" and "object storage" in f.message
    ]
    assert refused, "no publish met the outage: the test did not exercise it"
    _check_after(cluster, outcomes, back_at)
    assert killed_at < back_at
