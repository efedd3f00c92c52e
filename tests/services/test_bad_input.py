"""Every refusal: its own status code, a message that says what is wrong, and no event
appended and no object stored (checked against the real Kafka topic and S3 bucket)."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
import safetensors.torch
import torch

from mint.registry import Upload
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc
from tests.services.conftest import UPLOAD_LIMIT, Running

TONE = "tone"


@dataclass(frozen=True)
class Case:
    call: Callable[[registry_pb2_grpc.RegistryStub, dict], object]
    code: grpc.StatusCode
    message: str  # a fragment the message must contain


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


ALICE = auth("alice-token")


def publish(
    weights: bytes,
    config: bytes | None = None,
    *,
    ref: pb.AdapterRef | None = None,
    declared_sha: str | None = None,
    declared_size: int | None = None,
    metadata: tuple = ALICE,
    expected: int | None = None,
    request_id: str | None = None,
) -> Callable[[registry_pb2_grpc.RegistryStub, dict], object]:
    def call(stub: registry_pb2_grpc.RegistryStub, env: dict) -> object:
        header = pb.PublishRevisionHeader(
            ref=ref or pb.AdapterRef(tenant="acme", name=TONE),
            request_id=uuid.uuid4().hex if request_id is None else request_id,
            adapter_config=env["upload"].config if config is None else config,
            weights_sha256=hashlib.sha256(weights).hexdigest()
            if declared_sha is None
            else declared_sha,
            weights_size=len(weights) if declared_size is None else declared_size,
        )
        if expected is not None:
            header.expected_version = expected

        def parts() -> Iterator[pb.PublishRevisionRequest]:
            yield pb.PublishRevisionRequest(header=header)
            yield pb.PublishRevisionRequest(weights_chunk=weights)

        return stub.PublishRevision(parts(), metadata=metadata, timeout=30)

    return call


def tensors(env: dict) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(env["upload"].weights)


def modified(env: dict, change: Callable[[dict[str, torch.Tensor]], None]) -> bytes:
    t = dict(tensors(env))
    change(t)
    return safetensors.torch.save(t)


def lazily(make: Callable[[dict], Callable[[registry_pb2_grpc.RegistryStub, dict], object]]):
    """Build the call once the shared upload fixture is known."""
    return lambda stub, env: make(env)(stub, env)


def _nan(t: dict[str, torch.Tensor]) -> None:
    key = next(iter(t))
    t[key] = t[key].clone()
    t[key][0, 0] = float("inf")


def _reshape(t: dict[str, torch.Tensor]) -> None:
    key = next(iter(t))
    t[key] = torch.zeros(t[key].shape[0] + 1, t[key].shape[1])


def _f64(t: dict[str, torch.Tensor]) -> None:
    for k in list(t):
        t[k] = t[k].double()


def _config(env: dict, **changes: object) -> bytes:
    doc = json.loads(env["upload"].config)
    doc.update(changes)
    return json.dumps(doc).encode()


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES: dict[str, Case] = {
    "truncated safetensors": Case(
        lazily(lambda e: publish(e["upload"].weights[:-50])), INVALID, "truncated"
    ),
    "oversized header": Case(
        publish(struct.pack("<Q", 1 << 40) + b"{}"), INVALID, "header declares"
    ),
    "pickle renamed .safetensors": Case(
        publish(pickle.dumps({"lora_A": [[0.1]]})), INVALID, "pickle"
    ),
    "wrong shapes": Case(lazily(lambda e: publish(modified(e, _reshape))), INVALID, "do not fit"),
    "wrong dtype": Case(lazily(lambda e: publish(modified(e, _f64))), INVALID, "dtype 'F64'"),
    "NaN or Inf": Case(lazily(lambda e: publish(modified(e, _nan))), INVALID, "NaN or Inf"),
    "unknown PEFT type": Case(
        lazily(lambda e: publish(e["upload"].weights, _config(e, peft_type="IA3"))),
        INVALID,
        "unsupported peft_type",
    ),
    "missing config": Case(
        lazily(lambda e: publish(e["upload"].weights, b"")),
        INVALID,
        "adapter_config.json is missing",
    ),
    "mismatched sha256": Case(
        lazily(lambda e: publish(e["upload"].weights, declared_sha="0" * 64)), INVALID, "sha256"
    ),
    "../ in the name": Case(
        lazily(
            lambda e: publish(
                e["upload"].weights, ref=pb.AdapterRef(tenant="acme", name="../../blobs")
            )
        ),
        INVALID,
        "invalid adapter name",
    ),
    "slash in the tenant": Case(
        lazily(
            lambda e: publish(e["upload"].weights, ref=pb.AdapterRef(tenant="acme/..", name="x"))
        ),
        INVALID,
        "invalid tenant",
    ),
    "oversize upload": Case(
        publish(b"\0" * (UPLOAD_LIMIT + 1)), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"
    ),
    "incomplete upload": Case(
        lazily(lambda e: publish(e["upload"].weights, declared_size=len(e["upload"].weights) + 10)),
        INVALID,
        "incomplete",
    ),
    "wrong tenant": Case(
        lazily(
            lambda e: publish(e["upload"].weights, ref=pb.AdapterRef(tenant="other", name=TONE))
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "may not act in tenant 'other'",
    ),
    "missing token": Case(
        lazily(lambda e: publish(e["upload"].weights, metadata=())),
        grpc.StatusCode.UNAUTHENTICATED,
        "Bearer",
    ),
    "bad token": Case(
        lazily(lambda e: publish(e["upload"].weights, metadata=auth("guess"))),
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown or revoked token",
    ),
    "stale expected version": Case(
        lazily(lambda e: publish(e["upload"].weights, expected=0)),
        grpc.StatusCode.ABORTED,
        "re-read",
    ),
    "missing request id": Case(
        lazily(lambda e: publish(e["upload"].weights, request_id="")),
        INVALID,
        "request_id is required",
    ),
    "unknown adapter": Case(
        lazily(
            lambda e: publish(e["upload"].weights, ref=pb.AdapterRef(tenant="acme", name="nope"))
        ),
        grpc.StatusCode.NOT_FOUND,
        "does not exist",
    ),
    "gate not passed": Case(
        lambda stub, env: stub.MoveChannel(
            pb.MoveChannelRequest(
                ref=pb.AdapterRef(tenant="acme", name=TONE),
                channel="stable",
                revision=1,
                request_id=uuid.uuid4().hex,
            ),
            metadata=ALICE,
            timeout=30,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "requires a passing 'safety' evaluation",
    ),
    "non-admin registers a base": Case(
        lambda stub, env: stub.RegisterBaseModel(
            pb.RegisterBaseModelRequest(
                base=pb.BaseModel(name="x", fingerprint="a" * 64), request_id="r"
            ),
            metadata=ALICE,
            timeout=30,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "may not register base models",
    ),
    "examples that are not JSON": Case(
        lambda stub, env: stub.RequestUpdate(
            pb.RequestUpdateRequest(
                ref=pb.AdapterRef(tenant="acme", name=TONE),
                request_id=uuid.uuid4().hex,
                examples=b"prompt: hi",
            ),
            metadata=ALICE,
            timeout=30,
        ),
        INVALID,
        "not UTF-8 JSON",
    ),
    "an update to latest": Case(
        lambda stub, env: stub.RequestUpdate(
            pb.RequestUpdateRequest(
                ref=pb.AdapterRef(tenant="acme", name=TONE),
                request_id=uuid.uuid4().hex,
                examples=b'{"examples": [{"prompt": "a", "completion": "b"}]}',
                channel="latest",
            ),
            metadata=ALICE,
            timeout=30,
        ),
        INVALID,
        "follows every revision",
    ),
    "a user finishes an update": Case(
        lambda stub, env: stub.FinishUpdate(
            pb.FinishUpdateRequest(
                ref=pb.AdapterRef(tenant="acme", name=TONE),
                request_id=uuid.uuid4().hex,
                update_id="u",
                outcome="held",
            ),
            metadata=ALICE,
            timeout=30,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "service token",
    ),
    "a watch from past Kafka's offsets": Case(
        lambda stub, env: next(
            stub.WatchEvents(
                pb.WatchEventsRequest(tenant="acme", from_offsets={0: 2**63}),
                metadata=ALICE,
                timeout=30,
            )
        ),
        INVALID,
        "from_offsets names partition 0",
    ),
    "a watch of a partition the log lacks": Case(
        lambda stub, env: next(
            stub.WatchEvents(
                pb.WatchEventsRequest(tenant="acme", from_offsets={999: 0}),
                metadata=ALICE,
                timeout=30,
            )
        ),
        INVALID,
        "from_offsets names partition 999",
    ),
    "a list without a tenant": Case(
        lambda stub, env: stub.ListAdapters(pb.ListAdaptersRequest(), metadata=ALICE, timeout=30),
        INVALID,
        "invalid tenant ''",
    ),
    "a revision numbered 0": Case(
        lambda stub, env: stub.GetRevision(
            pb.GetRevisionRequest(ref=pb.AdapterRef(tenant="acme", name=TONE)),
            metadata=ALICE,
            timeout=30,
        ),
        INVALID,
        "numbered from 1",
    ),
    "a gate on latest": Case(
        lambda stub, env: stub.SetChannelGate(
            pb.SetChannelGateRequest(
                ref=pb.AdapterRef(tenant="acme", name=TONE),
                channel="latest",
                required_suite="safety",
                request_id=uuid.uuid4().hex,
            ),
            metadata=ALICE,
            timeout=30,
        ),
        INVALID,
        "moves to every revision published",
    ),
    "a label key outside the alphabet": Case(
        lambda stub, env: stub.CreateAdapter(
            pb.CreateAdapterRequest(
                ref=pb.AdapterRef(tenant="acme", name="labelled"),
                base_fingerprint=env["fingerprint"],
                labels={"a=b": "x"},
                request_id=uuid.uuid4().hex,
            ),
            metadata=ALICE,
            timeout=30,
        ),
        INVALID,
        "invalid label key 'a=b'",
    ),
    "a base fingerprint that is not one": Case(
        lambda stub, env: stub.CreateAdapter(
            pb.CreateAdapterRequest(
                ref=pb.AdapterRef(tenant="acme", name="unbased"),
                base_fingerprint="",
                request_id=uuid.uuid4().hex,
            ),
            metadata=ALICE,
            timeout=30,
        ),
        INVALID,
        "64 lower-case hex digits",
    ),
    "a request id too long to index": Case(
        lazily(lambda e: publish(e["upload"].weights, request_id="r" * 257)),
        INVALID,
        "request_id is 257 characters",
    ),
    "no sha256 declared": Case(
        lazily(lambda e: publish(e["upload"].weights, declared_sha="")),
        INVALID,
        "weights_sha256 is required",
    ),
    "bad page token": Case(
        lambda stub, env: stub.ListAdapters(
            pb.ListAdaptersRequest(tenant="acme", page_token="!!"), metadata=ALICE, timeout=30
        ),
        INVALID,
        "page_token",
    ),
}


@pytest.fixture(scope="module")
def env(running: Running, model_files: dict) -> dict:
    """A tone adapter with one revision and a gate on `stable`, ready to be attacked."""
    admin, alice = running.client("admin-token"), running.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    alice.create_adapter(f"acme/{TONE}", model_files["fingerprint"])
    upload: Upload = model_files["upload"]
    alice.publish_revision(f"acme/{TONE}", (upload.config, upload.weights))
    alice.set_gate(f"acme/{TONE}", "stable", "safety")
    return {"upload": upload, "fingerprint": model_files["fingerprint"]}


def test_there_are_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_refusal(name: str, running: Running, channel: grpc.Channel, env: dict) -> None:
    case = CASES[name]
    stub = registry_pb2_grpc.RegistryStub(channel)
    before = running.snapshot()
    with pytest.raises(grpc.RpcError) as refused:
        case.call(stub, env)
    error = refused.value
    assert error.code() == case.code, error.details()
    assert case.message in (error.details() or ""), error.details()
    assert running.snapshot() == before, "a refused command changed the log or the bucket"
