"""The router on the real Kafka and S3, with a node that reports but never loads (no
controller runs): what it refuses, and the cold start that cannot finish in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from minio import Minio

from deploy.local.stack import free_ports
from mint.backends.kafka import durable_producer
from mint.backends.kafka_residency import TableFollower
from mint.registry import Principal
from mint.rpc.auth import TokenTable, token_digest
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc, residency_pb2
from services.router.app import RouterConfig, RouterProcess
from tests.serving.world import World, new_world

pytestmark = pytest.mark.slow
PROMPT = "hello"
METRICS_PORT = free_ports(1)[0]
ALICE = (("authorization", "Bearer alice-token"),)
EVE = (("authorization", "Bearer eve-token"),)


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, s3: Minio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = new_world(kafka_bootstrap, s3)
    root = tmp_path_factory.mktemp("router")
    w.publish("a", root / "a", seed=1)
    w.publish_foreign("foreign", root / "foreign")
    w.project()
    yield w
    w.log.close()


@pytest.fixture(scope="module")
def idle_node(world: World) -> Iterator[None]:
    """Reports for a node of the right base, holding nothing, every 0.3 s."""
    producer = durable_producer(world.bootstrap)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.3):
            _send(producer, world.topics.status, idle_report(world, "idle"))

    thread = threading.Thread(target=beat)
    thread.start()
    yield
    stop.set()
    thread.join()
    producer.close()


@pytest.fixture(scope="module")
def stub(
    world: World, s3_settings: Any, idle_node: None
) -> Iterator[inference_pb2_grpc.InferenceStub]:
    tokens = TokenTable(
        [
            (token_digest("alice-token"), Principal("alice", frozenset({"acme"}))),
            (token_digest("eve-token"), Principal("eve", frozenset({"other"}))),
        ]
    )
    router = RouterProcess(
        RouterConfig(
            "r1",
            world.bootstrap,
            s3_settings,
            tokens,
            bucket=world.bucket,
            topics=world.topics,
            cold_start_s=2.0,
            metrics_port=METRICS_PORT,
        )
    )
    deadline = time.monotonic() + 30
    while not router.watch.live():
        assert time.monotonic() < deadline, "the router never saw the idle node"
        time.sleep(0.1)
    with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        yield inference_pb2_grpc.InferenceStub(channel)
    router.stop(grace_s=1)


def demands(world: World) -> list[residency_pb2.DemandReport]:
    follower = TableFollower(world.bootstrap, world.topics.demand)
    out: list[residency_pb2.DemandReport] = []
    try:
        while not follower.caught_up:
            out += [residency_pb2.DemandReport.FromString(v) for _, v in follower.poll(0.2) if v]
    finally:
        follower.close()
    return out


def select(name: str, **fields: Any) -> pb.AdapterSelector:
    return pb.AdapterSelector(adapter=f"acme/{name}", **fields)


BAD = [
    (
        "no token",
        pb.GenerateRequest(prompt=PROMPT),
        (),
        grpc.StatusCode.UNAUTHENTICATED,
        "authorization",
    ),
    (
        "other tenant",
        pb.GenerateRequest(adapters=[select("a")], prompt=PROMPT),
        EVE,
        grpc.StatusCode.PERMISSION_DENIED,
        "tenant 'acme'",
    ),
    (
        "unknown adapter",
        pb.GenerateRequest(adapters=[select("nobody")], prompt=PROMPT),
        ALICE,
        grpc.StatusCode.NOT_FOUND,
        "not found",
    ),
    (
        "unknown channel",
        pb.GenerateRequest(adapters=[select("a", channel="stable")], prompt=PROMPT),
        ALICE,
        grpc.StatusCode.NOT_FOUND,
        "no channel 'stable'",
    ),
    (
        "other base",
        pb.GenerateRequest(adapters=[select("foreign")], prompt=PROMPT),
        ALICE,
        grpc.StatusCode.FAILED_PRECONDITION,
        "which no node here serves",
    ),
    (
        "long prompt",
        pb.GenerateRequest(adapters=[select("a")], prompt="x" * 65),
        ALICE,
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 64",
    ),
    (
        "sampling",
        pb.GenerateRequest(adapters=[select("a")], prompt=PROMPT, sampling=pb.Sampling(top_p=2)),
        ALICE,
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_p",
    ),
    (
        "too many stacked",
        pb.GenerateRequest(adapters=[select(f"x{i}") for i in range(5)], prompt=PROMPT),
        ALICE,
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 4",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_before_any_placement(world: World, stub: Any, case: tuple) -> None:
    _, request, auth, code, words = case
    before = len(demands(world))
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(request, metadata=auth, timeout=10)
    assert err.value.code() == code
    assert words in str(err.value.details())
    time.sleep(1.2)  # one demand-report interval
    assert len(demands(world)) == before, "a refused request asked for no placement"


def test_a_cold_start_that_cannot_finish_in_time_says_so(world: World, stub: Any) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(
            pb.GenerateRequest(adapters=[select("a")], prompt=PROMPT), metadata=ALICE, timeout=3
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "cold start: acme/a@1 did not become resident" in str(err.value.details())
    assert time.monotonic() - started < 3.5
    missing = [d for r in demands(world) for d in r.demands if d.missing]
    assert [d.revisions[0].adapter for d in missing][-1:] == ["acme/a"], "placement was asked for"


def test_metrics_count_misses_cold_starts_and_statuses(stub: Any) -> None:
    import urllib.request

    with pytest.raises(grpc.RpcError):
        stub.Generate(
            pb.GenerateRequest(adapters=[select("a")], prompt=PROMPT), metadata=ALICE, timeout=1
        )
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert "mint_router_live_nodes 1.0" in text
    misses = next(line for line in text.splitlines() if line.startswith("mint_router_misses_total"))
    assert float(misses.split()[-1]) >= 1
    assert "mint_router_cold_start_seconds_count" in text
    assert 'mint_router_requests_total{code="DeadlineExceeded",method="Generate"}' in text


def test_with_no_node_reporting_the_router_waits_then_says_so(
    world: World, s3_settings: Any
) -> None:
    from mint.backends.kafka_residency import ResidencyTopics

    topics = ResidencyTopics(f"empty-{world.topics.prefix}")  # a fleet nobody reports to
    topics.create(world.bootstrap)
    tokens = TokenTable([(token_digest("alice-token"), Principal("alice", frozenset({"acme"})))])
    router = RouterProcess(
        RouterConfig(
            "r-empty",
            world.bootstrap,
            s3_settings,
            tokens,
            bucket=world.bucket,
            topics=topics,
            silence_s=1.5,
            cold_start_s=2.0,
        )
    )
    request = pb.GenerateRequest(adapters=[select("a")], prompt=PROMPT)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(request, metadata=ALICE, timeout=10)
            waited = time.monotonic() - started
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no inference node is reporting" in str(err.value.details())
            assert 1.4 < waited < 5, "it waits about one silence period for nodes to appear"

            # A node that starts reporting while a request waits is used: the request gets
            # as far as the cold start (this node never loads anything).
            producer = durable_producer(world.bootstrap)
            late = threading.Timer(
                0.5, lambda: _send(producer, topics.status, idle_report(world, "late"))
            )
            late.start()
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(request, metadata=ALICE, timeout=10)
            late.join()
            producer.close()
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "cold start" in str(err.value.details())
    finally:
        router.stop(grace_s=1)


def idle_report(world: World, node: str) -> residency_pb2.NodeReport:
    """A report, stamped now, from a node of the world's base that holds nothing."""
    report = residency_pb2.NodeReport(
        node=node,
        address="127.0.0.1:9",
        base_fingerprint=world.fingerprint,
        budget_bytes=10**6,
        slots=8,
        max_prompt_tokens=64,
    )
    report.at.GetCurrentTime()
    return report


def _send(producer: Any, status_topic: str, report: residency_pb2.NodeReport) -> None:
    producer.send(status_topic, key=report.node.encode(), value=report.SerializeToString())
    producer.flush()
