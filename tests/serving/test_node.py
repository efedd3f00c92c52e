"""One inference node against the real Kafka and S3: residency intents load adapters from
the projection, and what it serves equals PEFT on the same base and adapter files."""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from minio import Minio
from peft import PeftModel

from deploy.local.stack import free_ports
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import DesiredWriter
from mint.backends.s3_objects import S3Objects
from mint.models.base import build_base
from mint.serving.catalog import Catalog
from mint.serving.engine import key_of
from mint.serving.kernels import gathered_lora_kernel
from mint.serving.requests import RevisionRef
from mint.tokenizer import byte_tokenizer
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc
from services.inference.app import NodeConfig, NodeProcess
from tests.metrics import samples_of
from tests.serving.world import (
    ALICE_AUTH,
    EVE_AUTH,
    SERVICE_TOKEN,
    AuthenticatedStub,
    World,
    base_config,
    new_world,
    serving_tokens,
)

pytestmark = pytest.mark.slow
PROMPT = "Adapters are state"


@pytest.fixture(scope="module")
def world(
    kafka: KafkaConnection, s3: Minio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = new_world(kafka, s3)
    root = tmp_path_factory.mktemp("adapters")
    w.publish("a", root / "a1", seed=1)
    w.publish("b", root / "b1", seed=2)
    w.publish("a", root / "a2", seed=3)  # latest -> 2
    for i in range(3):
        w.publish(f"s{i}", root / f"s{i}", seed=10 + i)
    w.publish_foreign("foreign", root / "foreign")
    w.project()
    yield w
    w.log.close()


@pytest.fixture(scope="module")
def node(
    world: World, s3_settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    process = NodeProcess(
        NodeConfig(
            name="n1",
            kafka=world.kafka,
            s3=s3_settings,
            tokens=serving_tokens(),
            bucket=world.bucket,
            topics=world.topics,
            report_s=0.3,
            batch_window_ms=50,
            metrics_port=free_ports(1)[0],
            disk_cache_dir=str(tmp_path_factory.mktemp("disk-tier")),
        )
    )
    catalog = Catalog(S3Objects(world.s3, world.bucket))
    refs = [
        catalog.revision(f"acme/{n}", r)
        for n, r in [("a", 1), ("a", 2), ("b", 1), ("s0", 1), ("s1", 1), ("s2", 1)]
    ]
    writer = DesiredWriter(world.kafka, world.topics, f"{world.bucket}-controller")
    writer.activate()
    writer.write([("n1", ref, False) for ref in refs], [], term=1)
    writer.close()
    world.wait_for_reports(lambda f: len(f.holding(refs)) == 1)
    yield process
    process.stop(grace_s=1)


@pytest.fixture(scope="module")
def stub(node: NodeProcess) -> Iterator[Any]:
    """alice's direct calls (the router's calls are tested through the router)."""
    with grpc.insecure_channel(node.address) as channel:
        yield AuthenticatedStub(inference_pb2_grpc.InferenceStub(channel), ALICE_AUTH)


def reference(world: World, *names: tuple[str, int]) -> PeftModel:
    model = PeftModel.from_pretrained(
        build_base(base_config(), seed=0), world.folders[names[0]], adapter_name="r0"
    )
    for i, key in enumerate(names[1:], start=1):
        model.load_adapter(str(world.folders[key]), adapter_name=f"r{i}")
    model.eval()
    return model


def peft_greedy(model: Any, prompt: str, new: int) -> list[int]:
    ids = byte_tokenizer()(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return list(out[0, ids.shape[1] :].tolist())


def peft_logprobs(model: Any, prompt: str, continuation: str) -> torch.Tensor:
    tok = byte_tokenizer()
    p, c = tok(prompt)["input_ids"], tok(continuation)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p + c])).logits[0]
    logprobs = torch.log_softmax(logits[len(p) - 1 : -1], dim=-1)
    return logprobs.gather(1, torch.tensor(c)[:, None])[:, 0]


def select(
    name: str, revision: int | None = None, channel: str | None = None, weight: float | None = None
) -> pb.AdapterSelector:
    s = pb.AdapterSelector(adapter=f"acme/{name}")
    if revision is not None:
        s.revision = revision
    if channel is not None:
        s.channel = channel
    if weight is not None:
        s.weight = weight
    return s


def test_the_node_computes_deltas_through_the_kernel_hook(node: NodeProcess) -> None:
    """--lora-kernel auto: the fused kernel where it applies (CUDA), which on the CPU
    runs the torch path the other tests compare with PEFT."""
    layers = node.engine.model.layers.values()
    assert layers and all(layer.gathered is gathered_lora_kernel for layer in layers)


def test_single_adapter_by_channel_and_by_revision_equal_peft(world: World, stub: Any) -> None:
    sampling = pb.Sampling(max_new_tokens=12)
    latest = stub.Generate(
        pb.GenerateRequest(
            adapters=[select("a", channel="latest")], prompt=PROMPT, sampling=sampling
        )
    )
    pinned = stub.Generate(
        pb.GenerateRequest(adapters=[select("a", revision=1)], prompt=PROMPT, sampling=sampling)
    )
    assert [a.revision for a in latest.adapters] == [2]
    assert [a.revision for a in pinned.adapters] == [1]
    assert list(latest.tokens) == peft_greedy(reference(world, ("a", 2)), PROMPT, 12)
    assert list(pinned.tokens) == peft_greedy(reference(world, ("a", 1)), PROMPT, 12)
    assert latest.tokens != pinned.tokens


def test_score_equals_peft_for_single_and_stacked_adapters(world: World, stub: Any) -> None:
    single = stub.Score(
        pb.ScoreRequest(adapters=[select("b", revision=1)], prompt=PROMPT, continuation=" forever")
    )
    expected = peft_logprobs(reference(world, ("b", 1)), PROMPT, " forever")
    assert torch.allclose(torch.tensor(list(single.token_logprobs)), expected, atol=1e-4)
    stacked = stub.Score(
        pb.ScoreRequest(
            adapters=[select("a", revision=1, weight=0.7), select("b", revision=1, weight=0.5)],
            prompt=PROMPT,
            continuation=" forever",
        )
    )
    model = reference(world, ("a", 1), ("b", 1))
    model.add_weighted_adapter(["r0", "r1"], [0.7, 0.5], "mix", combination_type="cat")
    model.set_adapter("mix")
    expected = peft_logprobs(model, PROMPT, " forever")
    assert torch.allclose(torch.tensor(list(stacked.token_logprobs)), expected, atol=1e-4)
    assert not torch.allclose(
        torch.tensor(list(stacked.token_logprobs)),
        torch.tensor(list(single.token_logprobs)),
        atol=1e-3,
    )


def _sampling(i: int, sampled: bool) -> pb.Sampling:
    if sampled and i % 2 == 0:  # sampled and greedy requests mixed, each with its own seed
        return pb.Sampling(max_new_tokens=8, temperature=0.7 + 0.2 * i, top_p=0.9, seed=100 + i)
    return pb.Sampling(max_new_tokens=8)


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_concurrent_requests_share_a_batch_and_each_equals_its_solo_output(
    stub: Any, sampled: bool
) -> None:
    requests = [
        pb.GenerateRequest(
            adapters=[select(n, revision=1)] if n else [],
            prompt=f"{PROMPT} #{i}",
            sampling=_sampling(i, sampled),
        )
        for i, n in enumerate(["s0", "s1", "s2", "b", None])
    ]
    solo = [stub.Generate(r) for r in requests]
    together: list[Any] = [None] * len(requests)

    def call(i: int) -> None:
        together[i] = stub.Generate(requests[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(r.batch_size for r in together) > 1, "they should share forward passes"
    for alone, mixed in zip(solo, together, strict=True):
        assert list(alone.tokens) == list(mixed.tokens)
    assert len({tuple(r.tokens) for r in solo}) > 1


def test_stream_yields_the_unary_tokens_one_by_one_and_its_text(stub: Any) -> None:
    request = pb.GenerateRequest(
        adapters=[select("a", revision=2)], prompt=PROMPT, sampling=pb.Sampling(max_new_tokens=6)
    )
    *chunks, last = list(stub.GenerateStream(request))
    unary = stub.Generate(request)
    assert [len(c.tokens) for c in chunks] == [1] * 6 and chunks[0].adapters[0].revision == 2
    assert [t for c in chunks for t in c.tokens] == list(unary.tokens)
    assert "".join(c.text for c in [*chunks, last]) == unary.text  # each character whole, once
    assert not last.tokens and last.provenance.adapters[0].revision == 2  # once complete


def _steps(node: NodeProcess) -> float:
    """Scheduler steps so far (each observes the running batch's size once)."""
    return sum(
        s.value
        for m in node.metrics.batch_size.collect()
        for s in m.samples
        if s.name.endswith("_count")
    )


def _wait_released(node: NodeProcess, ref: RevisionRef, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while node.engine.table.in_use(key_of(ref)):
        assert time.monotonic() < deadline, "the slot lease was not released in time"
        time.sleep(0.01)


def test_a_stream_yields_each_token_while_the_rest_decode(
    world: World, node: NodeProcess, stub: Any
) -> None:
    ref = Catalog(S3Objects(world.s3, world.bucket)).revision("acme/s1", 1)
    request = pb.GenerateRequest(
        adapters=[select("s1", revision=1)], prompt=PROMPT, sampling=pb.Sampling(max_new_tokens=64)
    )
    stream = stub.GenerateStream(request)
    first = next(stream)
    assert node.engine.table.in_use(key_of(ref)), "the first token came only at the end"
    rest = [t for chunk in stream for t in chunk.tokens]
    assert len(first.tokens) == 1 and len(rest) == 63
    _wait_released(node, ref, within_s=5)


@pytest.mark.parametrize("kind", ["stream", "unary"])
def test_a_cancelled_call_stops_its_generation_and_frees_its_slot(
    world: World, node: NodeProcess, kind: str
) -> None:
    ref = Catalog(S3Objects(world.s3, world.bucket)).revision("acme/s0", 1)
    request = pb.GenerateRequest(
        adapters=[select("s0", revision=1)],
        prompt=PROMPT,
        sampling=pb.Sampling(max_new_tokens=512),
    )
    steps_before = _steps(node)
    with grpc.insecure_channel(node.address) as channel:
        raw = inference_pb2_grpc.InferenceStub(channel)
        call: Any  # a stream or a future: either can be cancelled
        if kind == "stream":
            call = raw.GenerateStream(request, metadata=ALICE_AUTH)
            assert len(next(call).tokens) == 1
        else:
            call = raw.Generate.future(request, metadata=ALICE_AUTH)
            deadline = time.monotonic() + 30
            while not node.engine.table.in_use(key_of(ref)):  # running
                assert time.monotonic() < deadline
                time.sleep(0.005)
        call.cancel()
        _wait_released(node, ref, within_s=5)
    assert _steps(node) - steps_before < 256, "the cancelled generation ran on"
    assert node.engine.evict(ref), "an unleased revision can be evicted"
    # Still desired, so the reconciler loads it back for the tests that follow.
    assert node.engine.wait_resident(ref, timeout_s=60)


BAD = [
    (
        "unknown adapter",
        pb.GenerateRequest(adapters=[select("nobody")], prompt=PROMPT),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    ),
    (
        "unknown revision",
        pb.GenerateRequest(adapters=[select("a", revision=9)], prompt=PROMPT),
        grpc.StatusCode.NOT_FOUND,
        "no revision 9",
    ),
    (
        "other base",
        pb.GenerateRequest(adapters=[select("foreign")], prompt=PROMPT),
        grpc.StatusCode.FAILED_PRECONDITION,
        "base",
    ),
    (
        "long prompt",
        pb.GenerateRequest(prompt="x" * 5000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 1024",
    ),
    ("empty prompt", pb.GenerateRequest(prompt=""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    (
        "temperature",
        pb.GenerateRequest(prompt=PROMPT, sampling=pb.Sampling(temperature=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature",
    ),
    (
        "top_p",
        pb.GenerateRequest(prompt=PROMPT, sampling=pb.Sampling(top_p=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_p",
    ),
    (
        "max tokens",
        pb.GenerateRequest(prompt=PROMPT, sampling=pb.Sampling(max_new_tokens=100000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_new_tokens",
    ),
    (
        "too many stacked",
        pb.GenerateRequest(
            adapters=[select(n, revision=1) for n in ["a", "b", "s0", "s1", "s2"]], prompt=PROMPT
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 4",
    ),
    (
        "bad weight",
        pb.GenerateRequest(adapters=[select("a", revision=1, weight=float("nan"))], prompt=PROMPT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "weight",
    ),
    (
        "bad name",
        pb.GenerateRequest(adapters=[pb.AdapterSelector(adapter="../etc")], prompt=PROMPT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid tenant",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_a_clear_status_and_loads_nothing(
    node: NodeProcess, stub: Any, case: tuple
) -> None:
    _, request, code, words = case
    before = node.engine.resident()
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(request)
    assert err.value.code() == code
    assert words in str(err.value.details())
    assert node.engine.resident() == before


def as_service(caller: str, tenants: str) -> tuple[tuple[str, str], ...]:
    """What the router sends: its service token and the caller it acts for."""
    return (
        ("authorization", f"Bearer {SERVICE_TOKEN}"),
        ("x-mint-caller", caller),
        ("x-mint-caller-tenants", tenants),
    )


REFUSED = [
    ("no token", [], (), grpc.StatusCode.UNAUTHENTICATED, "missing `authorization"),
    (
        "bad token",
        [],
        (("authorization", "Bearer guessed"),),
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown or revoked token",
    ),
    (
        "another tenant's adapter",
        [select("a", revision=1)],
        EVE_AUTH,
        grpc.StatusCode.PERMISSION_DENIED,
        "principal 'eve' may not act in tenant 'acme'; use a token",
    ),
    (
        "a user token naming another caller",
        [select("a", revision=1)],
        EVE_AUTH + as_service("alice", "acme")[1:],
        grpc.StatusCode.PERMISSION_DENIED,
        "principal 'eve' may not act in tenant 'acme'",
    ),
    (
        "the service token for nobody",
        [],
        as_service("alice", "acme")[:1],
        grpc.StatusCode.UNAUTHENTICATED,
        "must name the caller it acts for",
    ),
    (
        "the service token for a caller of another tenant",
        [select("a", revision=1)],
        as_service("eve", "other"),
        grpc.StatusCode.PERMISSION_DENIED,
        "principal 'eve' may not act in tenant 'acme'",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_every_call_is_authenticated_and_tenant_checked(node: NodeProcess, case: tuple) -> None:
    _, adapters, metadata, code, words = case
    with grpc.insecure_channel(node.address) as channel:
        raw = inference_pb2_grpc.InferenceStub(channel)
        calls = {
            "Generate": lambda: raw.Generate(
                pb.GenerateRequest(adapters=adapters, prompt=PROMPT), metadata=metadata
            ),
            "GenerateStream": lambda: list(
                raw.GenerateStream(
                    pb.GenerateRequest(adapters=adapters, prompt=PROMPT), metadata=metadata
                )
            ),
            "Score": lambda: raw.Score(
                pb.ScoreRequest(adapters=adapters, prompt=PROMPT, continuation=" x"),
                metadata=metadata,
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert (err.value.code(), method) == (code, method)
            assert words in str(err.value.details())


def test_the_service_token_acts_for_the_caller_it_names_and_health_is_open(
    node: NodeProcess,
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = pb.GenerateRequest(adapters=[select("a", revision=1)], prompt=PROMPT)
    with grpc.insecure_channel(node.address) as channel:
        reply = inference_pb2_grpc.InferenceStub(channel).Generate(
            request, metadata=as_service("alice", "acme")
        )
        assert [a.adapter for a in reply.adapters] == ["acme/a"]
        health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing is partial
        answer = health.Check(health_pb2.HealthCheckRequest())  # no token
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_tombstone_evicts_and_a_request_then_finds_it_not_resident(
    world: World, node: NodeProcess, stub: Any
) -> None:
    catalog = Catalog(S3Objects(world.s3, world.bucket))
    gone = catalog.revision("acme/s2", 1)
    writer = DesiredWriter(world.kafka, world.topics, f"{world.bucket}-controller")
    writer.activate()
    writer.write([], [("n1", gone)], term=1)
    writer.close()
    world.wait_for_reports(lambda f: bool(f.live()) and not f.holding([gone]))
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(adapters=[select("s2", revision=1)], prompt=PROMPT))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "not resident" in str(
        err.value.details()
    )
    # Desired again: this time it comes from the node's disk tier, not from S3.
    from_disk = node.metrics.loads.labels("loaded_from_disk")
    before = from_disk._value.get()
    writer = DesiredWriter(world.kafka, world.topics, f"{world.bucket}-controller")
    writer.activate()
    writer.write([("n1", gone, False)], [], term=1)
    writer.close()
    world.wait_for_reports(lambda f: bool(f.holding([gone])))
    assert from_disk._value.get() == before + 1


def test_metrics_show_residency_loads_batches_and_latency(node: NodeProcess, stub: Any) -> None:
    stub.Generate(pb.GenerateRequest(adapters=[select("b", revision=1)], prompt=PROMPT))
    with pytest.raises(grpc.RpcError):
        stub.Generate(pb.GenerateRequest(adapters=[select("nobody")], prompt=PROMPT))
    port = node.config.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    resident = len(node.engine.resident())
    assert f'mint_node_resident_adapters{{tier="host"}} {resident}.0' in text
    assert 'mint_node_loads_total{outcome="loaded"}' in text
    samples = samples_of(text)
    loads = sum(
        s.value
        for s in samples
        if s.name == "mint_node_loads_total" and s.labels["outcome"] != "failed"
    )
    takes = sum(s.value for s in samples if s.name == "mint_node_host_reserve_takes_total")
    assert takes >= loads > 0  # a CPU node copies every load into its host reserve
    assert "mint_node_load_seconds_count" in text
    assert "mint_node_batch_size_count" in text
    assert 'mint_node_request_seconds_count{method="Generate"}' in text
    assert 'mint_node_requests_total{code="NotFound",method="Generate"}' in text


def test_a_local_transformers_directory_serves_as_the_base(
    world: World, s3_settings: Any, tmp_path: Path
) -> None:
    """Saved with save_pretrained (safetensors) beside its tokenizer: same fingerprint as
    the base built in code, so the same adapters load and serve."""
    folder = tmp_path / "base"
    build_base(base_config(), seed=0).save_pretrained(str(folder))
    byte_tokenizer().save_pretrained(str(folder))
    process = NodeProcess(
        NodeConfig(
            name="from-dir",
            kafka=world.kafka,
            s3=s3_settings,
            tokens=serving_tokens(),
            bucket=world.bucket,
            topics=world.topics,
            base_dir=str(folder),
            report_s=0.3,
        )
    )
    try:
        assert process.engine.base_fingerprint == world.fingerprint
        catalog = Catalog(S3Objects(world.s3, world.bucket))
        # An intent without the base and config: the node reads them from the manifest.
        ref = dataclasses.replace(
            catalog.revision("acme/a", 1), base_fingerprint="", config_json=""
        )
        writer = DesiredWriter(world.kafka, world.topics, f"{world.bucket}-controller")
        writer.activate()
        writer.write([("from-dir", ref, False)], [], term=1)
        writer.close()
        assert process.engine.wait_resident(ref, timeout_s=60)
        with grpc.insecure_channel(process.address) as channel:
            reply = inference_pb2_grpc.InferenceStub(channel).Generate(
                pb.GenerateRequest(
                    adapters=[select("a", revision=1)],
                    prompt=PROMPT,
                    sampling=pb.Sampling(max_new_tokens=12),
                ),
                metadata=ALICE_AUTH,
            )
        assert list(reply.tokens) == peft_greedy(reference(world, ("a", 1)), PROMPT, 12)
    finally:
        process.stop(grace_s=1)


def test_intents_that_cannot_be_loaded_are_reported_failed_and_load_nothing(
    world: World, node: NodeProcess
) -> None:
    catalog = Catalog(S3Objects(world.s3, world.bucket))
    # Bytes that do not hash to what the intent says (and a base it lies about).
    forged = dataclasses.replace(
        catalog.revision("acme/foreign", 1),
        adapter_id="f" * 32,  # each case its own residency key
        base_fingerprint=world.fingerprint,
        weights_sha256="0" * 64,
    )
    # No such files (and bytes no tier holds: the disk tier is content-addressed).
    missing = dataclasses.replace(
        catalog.revision("acme/b", 1), revision=7, weights_sha256="1" * 64
    )
    # Without base and config the node reads the manifest, which names another adapter.
    misnamed = dataclasses.replace(
        catalog.revision("acme/s1", 1), adapter_id="0" * 32, base_fingerprint="", config_json=""
    )
    # The manifest says another base.
    foreign = dataclasses.replace(
        catalog.revision("acme/foreign", 1), base_fingerprint="", config_json=""
    )
    bad = [forged, missing, misnamed, foreign]
    writer = DesiredWriter(world.kafka, world.topics, f"{world.bucket}-controller")
    writer.activate()
    writer.write([("n1", ref, False) for ref in bad], [], term=1)
    writer.close()
    fleet = world.wait_for_reports(lambda f: all(f.failure(ref) for ref in bad))
    assert "not the recorded 0000" in str(fleet.failure(forged))
    assert "not in the projection" in str(fleet.failure(missing))
    assert "not the revision the intent names" in str(fleet.failure(misnamed))
    assert "was trained on base" in str(fleet.failure(foreign))
    assert not any(node.engine.is_resident(ref) for ref in bad)
