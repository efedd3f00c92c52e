"""The router's fleet watch on the real Kafka: a bad record on the status topic is skipped,
and while the watch cannot apply what it reads the router says NOT_SERVING, until it can."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaProducer

from mint.backends.kafka import KafkaConnection, durable_producer
from mint.backends.kafka_residency import ResidencyTopics
from mint.rpc.auth import TokenTable
from mint.v1 import residency_pb2 as pb
from services.router.app import SERVICE_NAME, RouterConfig, RouterProcess

SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


@pytest.fixture
def topics(kafka: KafkaConnection, unique: str) -> ResidencyTopics:
    topics = ResidencyTopics(unique)
    topics.create(kafka)
    return topics


@pytest.fixture
def router(
    kafka: KafkaConnection, s3_settings: Any, topics: ResidencyTopics
) -> Iterator[RouterProcess]:
    config = RouterConfig("r1", kafka, s3_settings, TokenTable([]), "service-token", topics=topics)
    process = RouterProcess(config)
    yield process
    process.stop(grace_s=0)


@pytest.fixture
def send(kafka: KafkaConnection, topics: ResidencyTopics) -> Iterator[Callable[[bytes], None]]:
    producer: KafkaProducer = durable_producer(kafka)
    yield lambda value: producer.send(topics.status, key=b"n", value=value).get(timeout=10)
    producer.close()


def report(node: str) -> bytes:
    message = pb.NodeReport(node=node, address="127.0.0.1:1", slots=4, budget_bytes=1)
    message.at.GetCurrentTime()
    return message.SerializeToString()


def health(router: RouterProcess) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing is partial
        return int(stub.Check(request, timeout=5).status)


def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def live(router: RouterProcess, node: str) -> bool:
    return any(n.name == node for n in router.watch.live())


def test_a_record_that_is_not_a_report_is_skipped(
    router: RouterProcess, send: Callable[[bytes], None]
) -> None:
    send(b"\xff\xff not a NodeReport")
    send(report("n1"))
    assert eventually(lambda: live(router, "n1")), "the watch stopped at the bad record"
    assert health(router) == SERVING


def test_while_the_watch_fails_the_router_is_not_serving_then_recovers(
    router: RouterProcess, send: Callable[[bytes], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert eventually(lambda: health(router) == SERVING)
    apply = router.watch.view.apply
    broken = True

    def failing(message: pb.NodeReport, now: float | None = None) -> None:
        if broken:
            raise RuntimeError("the view cannot take this report")
        apply(message, now)

    monkeypatch.setattr(router.watch.view, "apply", failing)
    send(report("n1"))
    assert eventually(lambda: health(router) == NOT_SERVING), "a failed watch left it SERVING"
    broken = False
    send(report("n2"))  # the watch retries: the next report gets through
    assert eventually(lambda: live(router, "n2")), "the watch never recovered"
    assert eventually(lambda: health(router) == SERVING)
