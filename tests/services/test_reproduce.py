"""Output provenance and `mint-audit reproduce`, on the real Kafka and S3: a controller,
an inference node recording to a responses topic and a router, in-process. Replies
through the router and from the node name their provenance; after the adapters moved on
to newer revisions (published, promoted, and the old ones evicted from the node), the
audit replays greedy, seeded and unseeded sampled, stacked, streamed and scored
responses (which shared forward passes) alone on their old revisions and gets the same
outputs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from minio import Minio

from mint.audit.__main__ import main as audit
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_responses import ResponsesTopic, find_response
from mint.backends.s3 import S3Settings
from mint.backends.s3_objects import S3Objects
from mint.serving.catalog import Catalog
from mint.serving.provenance import response_time_ms
from mint.tokenizer import byte_tokenizer
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc
from mint.v1 import responses_pb2 as rpb
from services.controller.controller import Controller, ControllerConfig
from services.inference.app import NodeConfig, NodeProcess
from services.router.app import RouterConfig, RouterProcess
from tests.serving.world import (
    ALICE_AUTH,
    SERVICE_TOKEN,
    AuthenticatedStub,
    World,
    new_world,
    serving_tokens,
)

pytestmark = pytest.mark.slow
NODE = "repro-node"
PROMPT = "Adapters are state"


@dataclass
class Fleet:
    world: World
    node: NodeProcess
    router: RouterProcess
    responses: ResponsesTopic
    root: Path


@pytest.fixture(scope="module")
def fleet(
    kafka: KafkaConnection,
    s3: Minio,
    s3_settings: S3Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    w = new_world(kafka, s3)
    root = tmp_path_factory.mktemp("reproduce")
    w.publish("tone", root / "tone1", seed=1)
    w.publish("memo", root / "memo1", seed=2)
    w.project()
    responses = ResponsesTopic(f"{w.bucket}.responses")
    responses.create(kafka)
    # Revisions nobody asked for in 3 s leave the plan, so the old ones are evicted.
    config = ControllerConfig(kafka, w.topics, f"{w.bucket}-ctl", want_idle_s=3.0)
    stop = threading.Event()
    controller = threading.Thread(target=Controller(config).run, args=(stop,), daemon=True)
    controller.start()
    tokens = serving_tokens()
    node = NodeProcess(
        NodeConfig(
            NODE,
            kafka,
            s3_settings,
            tokens,
            bucket=w.bucket,
            topics=w.topics,
            report_s=0.3,
            batch_window_ms=200,  # concurrent requests start together
            responses=responses,
        )
    )
    router = RouterProcess(
        RouterConfig(
            "repro-router",
            kafka,
            s3_settings,
            tokens,
            SERVICE_TOKEN,
            bucket=w.bucket,
            topics=w.topics,
        )
    )
    try:
        deadline = time.monotonic() + 60
        while not router.watch.live():
            assert time.monotonic() < deadline, "the router never saw the node"
            time.sleep(0.1)
        yield Fleet(w, node, router, responses, root)
    finally:
        router.stop(grace_s=1)
        node.stop(grace_s=1)
        stop.set()
        controller.join(timeout=30)
        w.log.close()


def stub(address: str) -> Any:
    return AuthenticatedStub(
        inference_pb2_grpc.InferenceStub(grpc.insecure_channel(address)), ALICE_AUTH
    )


def generate_on_the_node(router: Any, node: Any, request: pb.GenerateRequest) -> Any:
    """A node serves only what is resident on it, and the controller evicts what nobody
    asked for in `want_idle_s` (3 s here, less than a busy machine may take between two
    calls): ask through the router, which has it placed, until the node has it."""
    deadline = time.monotonic() + 60
    while True:
        router.Generate(request, timeout=60)
        try:
            return node.Generate(request, timeout=60)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise


def latest(name: str, weight: float = 1.0) -> pb.AdapterSelector:
    return pb.AdapterSelector(adapter=f"acme/{name}", channel="latest", weight=weight)


def sampled(seed: int | None = None) -> pb.Sampling:
    sampling = pb.Sampling(max_new_tokens=10, temperature=1.2, top_p=0.95)
    if seed is not None:
        sampling.seed = seed
    return sampling


REQUESTS = {
    "greedy": pb.GenerateRequest(
        adapters=[latest("tone")], prompt=PROMPT, sampling=pb.Sampling(max_new_tokens=10)
    ),
    "seeded": pb.GenerateRequest(adapters=[latest("tone")], prompt=PROMPT, sampling=sampled(7)),
    "stacked greedy": pb.GenerateRequest(
        adapters=[latest("tone"), latest("memo", 0.5)],
        prompt=PROMPT,
        sampling=pb.Sampling(max_new_tokens=10),
    ),
    "stacked unseeded": pb.GenerateRequest(
        adapters=[latest("tone"), latest("memo", 0.5)], prompt=PROMPT, sampling=sampled()
    ),
}


def reproduce(fleet: Fleet, response_id: str, capsys: pytest.CaptureFixture[str]) -> dict:
    w = fleet.world
    code = audit(
        [
            "reproduce",
            response_id,
            "--json",
            "--kafka-bootstrap",
            w.kafka.bootstrap,
            "--responses-topic",
            fleet.responses.name,
            "--router",
            f"127.0.0.1:{fleet.router.port}",
            "--token",
            "alice-token",
            "--events-topic",
            w.log.topic,
            "--events-partitions",
            "2",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out
    return dict(json.loads(out.out))


def test_replies_name_their_provenance_and_the_audit_reproduces_them_on_old_revisions(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    w = fleet.world
    router, node = stub(f"127.0.0.1:{fleet.router.port}"), stub(fleet.node.address)
    router.Generate(REQUESTS["stacked greedy"], timeout=90)  # cold starts: placed, loaded
    with ThreadPoolExecutor(len(REQUESTS)) as pool:  # sharing forward passes, replayed alone
        calls = {name: pool.submit(router.Generate, r, timeout=60) for name, r in REQUESTS.items()}
        replies = {name: call.result() for name, call in calls.items()}
    assert max(r.batch_size for r in replies.values()) > 1
    streamed = list(router.GenerateStream(REQUESTS["seeded"], timeout=60))
    scored = router.Score(
        pb.ScoreRequest(adapters=[latest("tone")], prompt=PROMPT, continuation=" forever"),
        timeout=60,
    )
    exact = pb.AdapterSelector(adapter="acme/tone", revision=1)
    direct = generate_on_the_node(
        router, node, pb.GenerateRequest(adapters=[exact], prompt=PROMPT, sampling=sampled(7))
    )

    # What a reply names: base, exact revisions with their events' log positions, node,
    # engine, the seed used, under a response id of its own.
    catalog = Catalog(S3Objects(w.s3, w.bucket))
    tone1, memo1 = catalog.revision("acme/tone", 1), catalog.revision("acme/memo", 1)
    made = {n: r.provenance for n, r in replies.items()}
    made |= {"streamed": streamed[-1].provenance, "scored": scored.provenance}
    made["direct"] = direct.provenance
    assert not streamed[-1].tokens and not any(c.HasField("provenance") for c in streamed[:-1])
    for name, p in made.items():
        assert p.node == NODE and p.base_fingerprint == w.fingerprint, name
        assert "torch" in p.engine_version and "cpu" in p.engine_version, name
        assert p.adapters[0].revision == 1 and p.adapters[0].weights_sha256 == tone1.weights_sha256
        assert tone1.log_position is not None
        assert (p.adapters[0].log_partition, p.adapters[0].log_offset) == (
            tone1.log_position.partition,
            tone1.log_position.offset,
        ), name
    stacked = made["stacked unseeded"].adapters
    assert [(a.adapter, a.revision, a.weight) for a in stacked] == [
        ("acme/tone", 1, 1.0),
        ("acme/memo", 1, 0.5),
    ]
    assert stacked[1].weights_sha256 == memo1.weights_sha256
    assert len({p.response_id for p in made.values()}) == len(made)
    assert made["seeded"].seed == made["direct"].seed == 7
    assert direct.tokens == replies["seeded"].tokens, "a seed samples alike on any path"
    drawn = made["stacked unseeded"].seed
    assert drawn != 0, "a request without a seed gets one drawn at random"

    # The record names the request as the node ran it, the drawn seed included.
    unseeded = made["stacked unseeded"].response_id
    found = find_response(
        w.kafka, fleet.responses.name, unseeded, response_time_ms(unseeded), wait_s=10
    )
    assert found is not None
    record = rpb.ResponseRecord.FromString(found)
    assert record.sampling.seed == drawn and record.principal == "alice"
    assert (
        record.prompt == PROMPT
        and list(record.prompt_tokens) == byte_tokenizer()(PROMPT)["input_ids"]
    )
    assert list(record.output_tokens) == list(replies["stacked unseeded"].tokens)

    # The adapters move on: new revisions published and promoted, the old ones evicted.
    w.publish("tone", fleet.root / "tone2", seed=3)
    w.publish("memo", fleet.root / "memo2", seed=4)
    w.project()
    deadline = time.monotonic() + 30
    while (moved := router.Generate(REQUESTS["greedy"], timeout=60)).adapters[0].revision != 2:
        assert time.monotonic() < deadline, "latest never moved to revision 2"
        time.sleep(0.2)
    assert moved.tokens != replies["greedy"].tokens, "the new revision changes the output"
    w.wait_for_reports(lambda f: not f.holding([tone1]) and not f.holding([memo1]))

    for name, p in made.items():
        outcome = reproduce(fleet, p.response_id, capsys)
        assert outcome["same"], (name, outcome)
        assert outcome["original"] == outcome["replayed"], name
        assert outcome["replay_id"] != p.response_id
        assert not [d for d in outcome["differences"] if not d.startswith("node")], name
        assert outcome["log_problems"] == [], name  # the log holds the events it names
    assert reproduce(fleet, made["greedy"].response_id, capsys)["original"] == list(
        replies["greedy"].tokens
    )


def test_an_unknown_or_malformed_response_id_is_refused_with_what_to_do(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "--kafka-bootstrap",
        fleet.world.kafka.bootstrap,
        "--responses-topic",
        fleet.responses.name,
        "--token",
        "alice-token",
        "--wait-s",
        "0",
    ]
    assert audit(["reproduce", "not-an-id", *common]) == 2
    assert "is not a response id" in capsys.readouterr().err
    unknown = "0190f5c2-7a3b-7c4d-8e5f-0123456789ab"  # a UUIDv7 no node made here
    assert audit(["reproduce", unknown, *common]) == 2
    assert "no record of" in capsys.readouterr().err
