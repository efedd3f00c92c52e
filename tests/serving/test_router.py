"""The router on the real Kafka and S3, with nodes that report but never load (no
controller runs): what it refuses, and the cold start that cannot finish in time; and
with a real node of a tokenizer of its own, whose prompt lengths the router leaves to it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from minio import Minio
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from deploy.local.stack import free_ports
from mint.backends.kafka import KafkaConnection, durable_producer
from mint.backends.kafka_residency import DesiredWriter, ResidencyTopics, TableFollower
from mint.backends.s3_objects import S3Objects
from mint.models.base import build_base
from mint.serving.catalog import Catalog
from mint.tokenizer import byte_tokenizer, tokenizer_fingerprint
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc, residency_pb2
from services.inference.app import NodeConfig, NodeProcess
from services.router.app import RouterConfig, RouterProcess
from tests.serving.world import (
    ALICE_AUTH,
    EVE_AUTH,
    SERVICE_TOKEN,
    World,
    base_config,
    new_world,
    serving_tokens,
)

pytestmark = pytest.mark.slow
PROMPT = "hello"
METRICS_PORT = free_ports(1)[0]
ALICE, EVE = ALICE_AUTH, EVE_AUTH


@pytest.fixture(scope="module")
def world(
    kafka: KafkaConnection, s3: Minio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = new_world(kafka, s3)
    root = tmp_path_factory.mktemp("router")
    w.publish("a", root / "a", seed=1)
    w.publish_foreign("foreign", root / "foreign")
    w.project()
    yield w
    w.log.close()


@pytest.fixture(scope="module")
def idle_node(world: World) -> Iterator[None]:
    """Reports for a node of the right base, holding nothing, every 0.3 s."""
    producer = durable_producer(world.kafka)
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
    router = RouterProcess(
        RouterConfig(
            "r1",
            world.kafka,
            s3_settings,
            serving_tokens(),
            SERVICE_TOKEN,
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


def demands(
    world: World, topics: ResidencyTopics | None = None
) -> list[residency_pb2.DemandReport]:
    follower = TableFollower(world.kafka, (topics or world.topics).demand)
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
    topics = fresh_topics(world, "empty")  # a fleet nobody reports to
    router = start_router(world, s3_settings, topics, silence_s=1.5, cold_start_s=2.0)
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
            producer = durable_producer(world.kafka)
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


def test_a_request_no_node_can_hold_is_refused_at_once(world: World, s3_settings: Any) -> None:
    """Nodes of both bases report, but a stack of adapters of both bases fits on none, and
    the only node of the foreign adapter's base is too small for it: no cold start can
    help, so the router says so instead of waiting for a placement that cannot come."""
    topics = fresh_topics(world, "bases")
    foreign = Catalog(S3Objects(world.s3, world.bucket)).revision("acme/foreign", 1)
    small = idle_report(world, "small")
    small.base_fingerprint, small.budget_bytes = foreign.base_fingerprint, 100
    producer = durable_producer(world.kafka)
    for report in (idle_report(world, "main"), small):
        _send(producer, topics.status, report)
    producer.close()
    # Reports stay live for a minute: no heartbeats needed.
    router = start_router(world, s3_settings, topics, silence_s=60, cold_start_s=10)
    cases = [
        ([select("a"), select("foreign")], "were trained on different bases"),
        ([select("foreign")], "fit on no node serving their base"),
    ]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            for adapters, words in cases:
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    stub.Generate(
                        pb.GenerateRequest(adapters=adapters, prompt=PROMPT),
                        metadata=ALICE,
                        timeout=20,
                    )
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert words in str(err.value.details())
                assert time.monotonic() - started < 3, "said at once, not after a cold start"
    finally:
        router.stop(grace_s=1)
    assert not [d for r in demands(world, topics) for d in r.demands if d.missing]


def pairs_tokenizer() -> PreTrainedTokenizerFast:
    """The byte tokenizer with one merge: "xx" is one token (in place of byte 0xFF, so the
    vocabulary keeps its size). "x" * 100 is 100 bytes but 50 tokens."""
    doc = json.loads(byte_tokenizer().backend_tokenizer.to_str())
    doc["model"]["vocab"]["xx"] = doc["model"]["vocab"].pop("ÿ")
    doc["model"]["merges"] = [["x", "x"]]
    tokenizer: PreTrainedTokenizerFast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(doc)),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    return tokenizer


def test_prompts_are_counted_with_the_nodes_tokenizer_and_calls_go_as_the_caller(
    world: World, s3_settings: Any, tmp_path: Path
) -> None:
    """A real node serving a base directory with a tokenizer of its own, behind the
    router: the router cannot count with that tokenizer, so the node does; and the node
    serves the router's calls (service token) for the caller they name."""
    folder = tmp_path / "base"
    build_base(base_config(), seed=0).save_pretrained(str(folder))
    pairs_tokenizer().save_pretrained(str(folder))
    topics = fresh_topics(world, "tok")
    node = NodeProcess(
        NodeConfig(
            name="pairs",
            kafka=world.kafka,
            s3=s3_settings,
            tokens=serving_tokens(),
            bucket=world.bucket,
            topics=topics,
            base_dir=str(folder),
            max_prompt_tokens=64,
            report_s=0.3,
        )
    )
    router = start_router(world, s3_settings, topics, cold_start_s=30)
    try:
        ref = Catalog(S3Objects(world.s3, world.bucket)).revision("acme/a", 1)
        writer = DesiredWriter(world.kafka, topics, f"{topics.prefix}-controller")
        writer.activate()
        writer.write([("pairs", ref, False)], [], term=1)  # no controller here
        writer.close()
        deadline = time.monotonic() + 60
        while not router.watch.holding([ref]):
            assert time.monotonic() < deadline, "the node never reported acme/a@1 loaded"
            time.sleep(0.1)
        with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            within = pb.GenerateRequest(
                adapters=[select("a", revision=1)],
                prompt="x" * 100,  # 50 of the node's tokens; its limit is 64
                sampling=pb.Sampling(max_new_tokens=4),
            )
            reply = stub.Generate(within, metadata=ALICE, timeout=30)
            assert reply.node == "pairs" and [a.revision for a in reply.adapters] == [1]
            over = pb.GenerateRequest(prompt="x" * 130)  # 65 tokens there
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(over, metadata=ALICE, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "65 tokens; this node accepts at most 64" in str(err.value.details())
            with pytest.raises(grpc.RpcError) as err:  # the caller's tenants go along
                stub.Generate(within, metadata=EVE, timeout=30)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        router.stop(grace_s=1)
        node.stop(grace_s=1)


def fresh_topics(world: World, name: str) -> ResidencyTopics:
    topics = ResidencyTopics(f"{name}-{world.topics.prefix}")
    topics.create(world.kafka)
    return topics


def start_router(
    world: World, s3_settings: Any, topics: ResidencyTopics, **options: Any
) -> RouterProcess:
    return RouterProcess(
        RouterConfig(
            f"r-{topics.prefix}",
            world.kafka,
            s3_settings,
            serving_tokens(),
            SERVICE_TOKEN,
            bucket=world.bucket,
            topics=topics,
            **options,
        )
    )


def idle_report(world: World, node: str) -> residency_pb2.NodeReport:
    """A report, stamped now, from a node of the world's base that holds nothing."""
    report = residency_pb2.NodeReport(
        node=node,
        address="127.0.0.1:9",
        base_fingerprint=world.fingerprint,
        budget_bytes=10**6,
        slots=8,
        max_prompt_tokens=64,
        tokenizer=tokenizer_fingerprint(byte_tokenizer()),  # the router's own
    )
    report.at.GetCurrentTime()
    return report


def _send(producer: Any, status_topic: str, report: residency_pb2.NodeReport) -> None:
    producer.send(status_topic, key=report.node.encode(), value=report.SerializeToString())
    producer.flush()
