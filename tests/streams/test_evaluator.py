"""The platform's evaluator against the real Kafka and S3: it scores each revision of an
adapter whose gates require a platform evaluation on the suite's stored examples, the
verdict passes or fails the gate by its threshold, and it is recorded once per revision
and gate however often the log is read."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from minio import Minio
from peft import PeftModel
from prometheus_client import generate_latest

from deploy.local.stack import free_ports
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.client import RegistryClient
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Registry
from mint.rpc.auth import TokenTable, token_digest
from mint.serving.device import resolve
from mint.tokenizer import VOCAB_SIZE, byte_tokenizer
from mint.v1 import registry_pb2 as pb
from services.registry.server import build_server
from streams.evaluator.jobs import Job, owed
from streams.evaluator.scorer import SuiteScorer
from streams.evaluator.worker import Evaluator
from tests.keys import TEST_KEK
from tests.services.conftest import TOKENS

EXAMPLES = [("The cat", " sat on the mat."), ("Hello", ", world!")]
SUITE = "".join(f'{{"prompt": "{p}", "continuation": "{c}"}}\n' for p, c in EXAMPLES).encode()
LENIENT, STRICT = -50.0, -0.5  # a random tiny LoRA scores about -5.5 per token


@dataclass
class Stack:
    target: str
    kafka: KafkaConnection
    topic: str
    blobs: S3BlobStore
    lora_dir: Path

    def client(self, token: str) -> RegistryClient:
        return RegistryClient(self.target, token, retry_for_s=10)

    def evaluator(self, scorer: SuiteScorer, group: str) -> Evaluator:
        return Evaluator(
            self.kafka, self.topic, self.client("evaluator-token"), self.blobs, scorer, group
        )


@pytest.fixture(scope="module")
def stack(
    kafka: KafkaConnection, s3: Minio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    topic, bucket = f"eval-{uuid.uuid4().hex[:10]}", f"eval-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    blobs = S3BlobStore(s3, bucket, TEST_KEK)
    server, port = build_server(
        Registry(log, blobs), TokenTable((token_digest(t), p) for t, p in TOKENS.items())
    )
    lora_dir = tmp_path_factory.mktemp("lora")
    attach_lora(byte_llama(), rank=4, seed=1).save_pretrained(str(lora_dir))
    yield Stack(f"127.0.0.1:{port}", kafka, topic, blobs, lora_dir)
    server.stop(grace=1).wait()
    log.close()


@pytest.fixture(scope="module")
def scorer() -> SuiteScorer:
    """On the CPU in float32 wherever the tests run: compared with PEFT's float32 below."""
    return SuiteScorer(home=resolve("cpu", "float32"))


def byte_llama() -> Any:
    return build_base(tiny_llama_config(vocab=VOCAB_SIZE), seed=0)


def peft_mean_logprob(lora_dir: Path) -> float:
    """The reference: PEFT's log-probs of each continuation token after its prompt."""
    model = PeftModel.from_pretrained(byte_llama(), str(lora_dir)).eval()
    tokenizer, picked = byte_tokenizer(), []
    for prompt, continuation in EXAMPLES:
        p, c = tokenizer(prompt)["input_ids"], tokenizer(continuation)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0]
        logprobs = torch.log_softmax(logits[len(p) - 1 : -1].float(), dim=-1)
        picked += logprobs.gather(1, torch.tensor(c)[:, None])[:, 0].tolist()
    return float(sum(picked) / len(picked))


def rounds_until(evaluator: Evaluator, done: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the evaluator did not record its verdicts"
        evaluator.round()


def platform_verdicts(alice: RegistryClient, ref: str) -> dict[tuple[int, str], tuple[bool, float]]:
    adapter = alice.get_adapter(ref)
    return {
        (r.number, e.suite): (e.passed, e.metrics["mean_token_logprob"])
        for r in adapter.revisions
        for e in r.evaluations
        if e.platform
    }


def test_platform_verdicts_pass_or_fail_on_the_stored_suite_once_per_revision(
    stack: Stack, scorer: SuiteScorer
) -> None:
    admin, alice = stack.client("admin-token"), stack.client("alice-token")
    base = byte_llama()
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    admin.register_base("byte-llama", fingerprint(base), shapes)
    ref = f"acme/judged-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(ref, fingerprint(base))
    upload = (
        (stack.lora_dir / ADAPTER_CONFIG).read_bytes(),
        (stack.lora_dir / ADAPTER_WEIGHTS).read_bytes(),
    )
    alice.publish_revision(ref, upload)  # before the gates: judged when they are set
    for channel, suite, threshold in [("stable", "quality", LENIENT), ("prod", "strict", STRICT)]:
        alice.set_gate(
            ref, channel, suite, requirement="platform", threshold=threshold, examples=SUITE
        )
    alice.publish_revision(ref, upload)  # after them: judged as it is published
    evaluator = stack.evaluator(scorer, f"g-{uuid.uuid4().hex[:8]}")
    try:
        rounds_until(evaluator, lambda: len(platform_verdicts(alice, ref)) == 4)
    finally:
        evaluator.close()
    shown = generate_latest(evaluator.metrics.registry).decode()
    assert 'mint_evaluator_verdicts_total{verdict="passed"} 2.0' in shown
    assert 'mint_evaluator_verdicts_total{verdict="failed"} 2.0' in shown

    verdicts = platform_verdicts(alice, ref)
    expected = peft_mean_logprob(stack.lora_dir)
    for revision in (1, 2):
        assert verdicts[revision, "quality"][0] and not verdicts[revision, "strict"][0]
        assert verdicts[revision, "quality"][1] == pytest.approx(expected, abs=1e-4)
    assert alice.move_channel(ref, "stable", 2).adapter.channels["stable"] == 2
    with pytest.raises(grpc.RpcError) as refused:
        alice.move_channel(ref, "prod", 2)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "a failing one" in str(refused.value.details())

    # Read again from the start by another group: every verdict is in the log already.
    events = len(alice.history(ref))
    again = stack.evaluator(scorer, f"g-{uuid.uuid4().hex[:8]}")
    try:
        assert owed(alice.get_adapter(ref), [1, 2]) == []
        read = 0
        while read < events:
            read += again.round()
        # A job judged again all the same (a crash before the commit) records nothing new.
        adapter = alice.get_adapter(ref)
        again._judge(job_for(adapter, "prod", 2), adapter.base_fingerprint, adapter.revisions[1])
    finally:
        again.close()
    assert len(alice.history(ref)) == events


def job_for(adapter: pb.Adapter, channel: str, revision: int) -> Job:
    rule = adapter.gate_rules[channel]
    ref = f"{adapter.ref.tenant}/{adapter.ref.name}"
    return Job(ref, adapter.adapter_id, revision, rule.suite, rule.examples_sha256, rule.threshold)


def test_a_revision_on_another_base_is_skipped_and_counted(
    stack: Stack, scorer: SuiteScorer, model_files: dict
) -> None:
    admin, alice = stack.client("admin-token"), stack.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    ref = f"acme/elsewhere-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(ref, model_files["fingerprint"])  # not the evaluator's base
    alice.set_gate(
        ref, "stable", "quality", requirement="platform", threshold=-50.0, examples=SUITE
    )
    upload = model_files["upload"]
    alice.publish_revision(ref, (upload.config, upload.weights))
    evaluator = stack.evaluator(scorer, f"g-{uuid.uuid4().hex[:8]}")
    metrics = evaluator.metrics.registry
    try:
        rounds_until(
            evaluator,
            lambda: bool(
                metrics.get_sample_value("mint_evaluator_skipped_total", {"reason": "base"})
            ),
        )
    finally:
        evaluator.close()
    assert platform_verdicts(alice, ref) == {} and evaluator.metrics.problem() is None


def test_an_unreachable_registry_degrades_it_and_commits_nothing(
    stack: Stack, scorer: SuiteScorer, model_files: dict
) -> None:
    """With the registry gone, each round fails on a published revision, the evaluator
    says degraded (its /healthz answers 503) and reads again from the last commit, so no
    event is passed over."""
    admin, alice = stack.client("admin-token"), stack.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    ref = f"acme/unjudged-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(ref, model_files["fingerprint"])
    alice.publish_revision(ref, (model_files["upload"].config, model_files["upload"].weights))
    nowhere = RegistryClient(f"127.0.0.1:{free_ports(1)[0]}", "evaluator-token", 1, 0.5)
    group = f"g-{uuid.uuid4().hex[:8]}"
    evaluator = Evaluator(stack.kafka, stack.topic, nowhere, stack.blobs, scorer, group)
    stop = threading.Event()
    running = threading.Thread(target=evaluator.run, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 60
        while evaluator.metrics.problem() is None and time.monotonic() < deadline:
            stop.wait(0.05)
        problem = evaluator.metrics.problem()
    finally:
        stop.set()
        running.join(timeout=60)
    try:
        assert problem is not None and problem.startswith("degraded: _InactiveRpcError"), problem
        partitions = evaluator.consumer.assignment()
        assert partitions and all(evaluator.consumer.committed(tp) is None for tp in partitions)
    finally:
        evaluator.close()


def test_an_erased_adapter_is_not_judged(
    stack: Stack, scorer: SuiteScorer, model_files: dict
) -> None:
    """Erased after its revision and platform gate were logged: the evaluator, reading
    those events, finds the adapter erased and records nothing (nothing may follow the
    tombstone; its weights and the gate's examples open no more)."""
    admin, alice = stack.client("admin-token"), stack.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    ref = f"acme/erased-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(ref, model_files["fingerprint"])
    upload = model_files["upload"]
    alice.publish_revision(ref, (upload.config, upload.weights))
    alice.set_gate(
        ref, "stable", "quality", requirement="platform", threshold=-50.0, examples=SUITE
    )
    adapter = alice.get_adapter(ref)
    alice.erase_adapter(ref)
    events = len(alice.history(ref))
    evaluator = stack.evaluator(scorer, f"g-{uuid.uuid4().hex[:8]}")
    try:
        evaluator.evaluate(ref, 1)  # what the revision's and the gate's events ask
        # A job taken just before the erasure: its examples open no more, skipped.
        evaluator._judge(
            job_for(adapter, "stable", 1), adapter.base_fingerprint, adapter.revisions[0]
        )
    finally:
        evaluator.close()
    assert len(alice.history(ref)) == events and platform_verdicts(alice, ref) == {}
    metrics = evaluator.metrics.registry
    assert metrics.get_sample_value("mint_evaluator_skipped_total", {"reason": "erased"}) == 1
