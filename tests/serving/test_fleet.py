"""The whole serving path as separate processes on the real Kafka and S3: a router, a
controller and three inference nodes; 50 adapters with room for about 20 per node;
steady traffic through the router; one node SIGKILLed in the middle."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from minio import Minio

from deploy.local.registry import write_tokens
from deploy.local.services import ServiceProcess, stop_all
from mint.backends.kafka import KafkaConnection
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc
from tests.serving.world import World, new_world

pytestmark = pytest.mark.slow
ADAPTERS = 50
TOKEN = "fleet-test-token"
SERVICE_TOKEN = "fleet-router-token"  # what the router calls the nodes with
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@dataclass
class Call:
    started: float
    ended: float
    adapter: int
    code: grpc.StatusCode
    node: str = ""


@pytest.fixture(scope="module")
def world(
    kafka: KafkaConnection, s3: Minio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = new_world(kafka, s3)
    root = tmp_path_factory.mktemp("fleet")
    for i in range(ADAPTERS):
        w.publish(f"u{i}", root / f"u{i}", seed=1000 + i)
    w.project()
    yield w
    w.log.close()


@pytest.fixture(scope="module")
def fleet(
    world: World, endpoints: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    logs = tmp_path_factory.mktemp("fleet-logs")
    adapter_bytes = world.folders[("u0", 1)].joinpath("adapter_model.safetensors").stat().st_size
    # The controller fills a node to 80% of its budget: 25 adapters of budget -> ~20 placed.
    budget_mib = 25 * adapter_bytes / 2**20
    # Metrics off: the default ports would collide between the processes.
    common = ["--residency-topics-prefix", world.topics.prefix, "--metrics-port", "0"]
    tokens = write_tokens(
        logs / "tokens.json",
        {
            TOKEN: {"principal": "alice", "tenants": ["acme"]},
            SERVICE_TOKEN: {"principal": "router", "service": True},
        },
    )
    secrets = logs / "secrets"  # as Kubernetes mounts a Secret: one file per variable
    secrets.mkdir()
    (secrets / "MINT_SERVICE_TOKEN").write_text(f"{SERVICE_TOKEN}\n")
    procs = {
        "controller": ServiceProcess(
            "services.controller",
            ["--group", f"{world.bucket}-ctl", *common],
            logs / "controller.log",
            endpoints,
        ),
        **{
            f"n{i}": ServiceProcess(
                "services.inference",
                [
                    "--name",
                    f"n{i}",
                    "--port",
                    "0",
                    "--projection-bucket",
                    world.bucket,
                    "--tokens-file",
                    str(tokens),
                    "--budget-mib",
                    f"{budget_mib:.6f}",
                    *common,
                ],
                logs / f"n{i}.log",
                endpoints,
            )
            for i in range(1, 4)
        },
        "router": ServiceProcess(
            "services.router",
            [
                "--port",
                "0",
                "--projection-bucket",
                world.bucket,
                "--tokens-file",
                str(tokens),
                "--secrets-dir",
                str(secrets),
                *common,
            ],
            logs / "router.log",
            endpoints,
        ),
    }
    try:
        for p in procs.values():
            p.start()
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        stop_all(procs.values())


def generate(stub: inference_pb2_grpc.InferenceStub, i: int, timeout: float = 30.0) -> Call:
    started = time.monotonic()
    request = pb.GenerateRequest(
        adapters=[pb.AdapterSelector(adapter=f"acme/u{i}", channel="latest")],
        prompt=f"request for u{i}",
        sampling=pb.Sampling(max_new_tokens=4),
    )
    try:
        response = stub.Generate(request, timeout=timeout, metadata=AUTH)
        return Call(started, time.monotonic(), i, grpc.StatusCode.OK, response.node)
    except grpc.RpcError as exc:
        return Call(started, time.monotonic(), i, exc.code(), str(exc.details()))


def test_killing_a_node_replaces_its_adapters_and_requests_keep_succeeding(
    world: World, fleet: dict[str, ServiceProcess]
) -> None:
    channel = grpc.insecure_channel(fleet["router"].address)
    stub = inference_pb2_grpc.InferenceStub(channel)
    world.wait_for_reports(lambda f: len(f.live()) == 3)
    # Warm up: every adapter once (each a cold start), all nodes take a share.
    warm = [generate(stub, i, timeout=60) for i in range(ADAPTERS)]
    assert all(c.code == grpc.StatusCode.OK for c in warm), [
        c for c in warm if c.code != grpc.StatusCode.OK
    ]
    placed = world.wait_for_reports(lambda f: sum(len(n.resident) for n in f.live()) >= ADAPTERS)
    per_node = {n.name: len(n.resident) for n in placed.live()}
    assert len(per_node) == 3 and max(per_node.values()) <= 25, per_node

    calls: list[Call] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            calls.append(generate(stub, rng.randrange(ADAPTERS)))

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(5)
    victim = max(per_node, key=lambda n: per_node[n])
    on_victim = {c.adapter for c in warm if c.node == victim}
    killed_at = time.monotonic()
    fleet[victim].kill()
    time.sleep(20)
    stop.set()
    for t in threads:
        t.join()

    after = [c for c in calls if c.started > killed_at]
    ok = [c for c in calls if c.code == grpc.StatusCode.OK]
    rate = len(ok) / len(calls)
    ends = sorted(c.ended for c in ok)
    longest_gap = max(b - a for a, b in itertools.pairwise(ends))
    longest_call = max(c.ended - c.started for c in calls)
    print(
        f"\nfleet: {len(calls)} requests, success {rate:.2%}, "
        f"{len(after)} after the kill of {victim}; longest stall between successes "
        f"{longest_gap:.2f} s, longest request {longest_call:.2f} s"
    )
    assert rate >= 0.99, [c for c in calls if c.code != grpc.StatusCode.OK][:5]
    served_elsewhere = {
        c.adapter for c in after if c.code == grpc.StatusCode.OK and c.adapter in on_victim
    }
    assert served_elsewhere, "the killed node's adapters were requested and served again"
    assert all(c.node != victim for c in after if c.started > killed_at + 5)
    assert longest_gap < 15
