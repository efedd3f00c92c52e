"""Gates you can trust, over gRPC against the real Kafka and S3: an evaluation its own
promoter records passes neither a four-eyes nor a platform gate; only the platform's
principal records platform evaluations; a platform gate's examples are a blob."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import pytest

from mint.blobs.port import blob_key
from mint.client import RegistryClient
from mint.registry import Upload
from tests.services.conftest import Running

EXAMPLES = b'{"prompt": "hello", "continuation": " world"}\n'


def adapter_with_a_revision(running: Running, model_files: dict) -> tuple[str, RegistryClient]:
    admin, alice = running.client("admin-token"), running.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    ref = f"acme/gated-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(ref, model_files["fingerprint"])
    upload: Upload = model_files["upload"]
    alice.publish_revision(ref, (upload.config, upload.weights))
    return ref, alice


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_a_self_recorded_evaluation_cannot_pass_a_four_eyes_gate(
    running: Running, model_files: dict
) -> None:
    ref, alice = adapter_with_a_revision(running, model_files)
    alice.set_gate(ref, "stable", "safety", requirement="four_eyes")
    alice.record_evaluation(ref, 1, "safety", {"score": 0.0}, passed=True)
    error = refused(lambda: alice.move_channel(ref, "stable", 1))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "channel 'stable'" in str(error.details()) and "gate four_eyes" in str(error.details())
    assert "other than 'alice'" in str(error.details())
    running.client("carol-token").record_evaluation(ref, 1, "safety", {"score": 1.0}, True)
    assert alice.move_channel(ref, "stable", 1).adapter.channels["stable"] == 1


def test_a_self_recorded_evaluation_cannot_pass_a_platform_gate(
    running: Running, model_files: dict
) -> None:
    ref, alice = adapter_with_a_revision(running, model_files)
    gated = alice.set_gate(
        ref, "stable", "safety", requirement="platform", threshold=-3.0, examples=EXAMPLES
    )
    rule = gated.adapter.gate_rules["stable"]
    digest = hashlib.sha256(EXAMPLES).hexdigest()
    assert (rule.requirement, rule.threshold, rule.examples_sha256) == ("platform", -3.0, digest)
    stored = running.s3.stat_object(running.bucket, blob_key(gated.adapter.adapter_id, digest))
    assert stored.size is not None and stored.size > len(EXAMPLES)  # sealed
    # What the issue saw: the promoter records its own passing verdict, score 0.0.
    alice.record_evaluation(ref, 1, "safety", {"score": 0.0}, True, dataset_fingerprint=digest)
    error = refused(lambda: alice.move_channel(ref, "stable", 1))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = str(error.details())
    assert "channel 'stable'" in details and "gate platform" in details
    assert "recorded by the platform's evaluator" in details and "recorded by alice" in details
    evaluator = running.client("evaluator-token")
    recorded = evaluator.record_evaluation(
        ref,
        1,
        "safety",
        {"mean_token_logprob": -1.0, "threshold": -3.0},
        True,
        dataset_fingerprint=digest,
    )
    assert recorded.adapter.revisions[0].evaluations[-1].platform
    assert alice.move_channel(ref, "stable", 1).adapter.channels["stable"] == 1


def test_bad_examples_are_refused_leaving_nothing(running: Running, model_files: dict) -> None:
    ref, alice = adapter_with_a_revision(running, model_files)
    before = running.snapshot()
    for examples, code, words in [
        (b"not json", grpc.StatusCode.INVALID_ARGUMENT, "line 1 is not JSON"),
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "needs its suite's examples"),
    ]:
        error = refused(
            lambda e=examples: alice.set_gate(
                ref, "stable", "safety", requirement="platform", threshold=-1.0, examples=e
            )
        )
        assert error.code() == code and words in str(error.details())
    error = refused(lambda: alice.set_gate(ref, "stable", "safety", requirement="nobody"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "four_eyes" in str(error.details())
    assert running.snapshot() == before
