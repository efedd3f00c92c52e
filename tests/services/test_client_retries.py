"""The client sends a command again, with the same request id, when its answer was
UNAVAILABLE, did not come before the deadline, or was RESOURCE_EXHAUSTED with a pushback
(a server that stands in for the registry: what is checked is the client's behaviour, not
the server's)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from mint.client import RegistryClient
from mint.client.retry import PUSHBACK_METADATA, Attempts, ReplicaChoice
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc


class FlakyRegistry(registry_pb2_grpc.RegistryServicer):
    """Answers the first call late, the second with UNAVAILABLE, the third properly."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.lock = threading.Lock()

    def SetChannelGate(
        self, request: pb.SetChannelGateRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        with self.lock:
            self.request_ids.append(request.request_id)
            attempt = len(self.request_ids)
        if attempt == 1:
            time.sleep(1.5)  # past the client's 1 s deadline
        if attempt == 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "partition moving; retry")
        return pb.CommandResult(first_version=3, last_version=3)


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyRegistry, str]]:
    servicer = FlakyRegistry()  # type: ignore[abstract]  # only SetChannelGate is called
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=0)


def test_a_command_is_retried_with_its_request_id_until_it_is_answered(
    flaky: tuple[FlakyRegistry, str],
) -> None:
    servicer, target = flaky
    client = RegistryClient(target, "token", timeout_s=1.0, retry_for_s=10)
    result = client.set_gate("acme/x", "stable", "suite", request_id="req-1")
    client.close()
    assert result.first_version == 3
    assert servicer.request_ids == ["req-1"] * 3


def test_retries_stop_after_retry_for_s(flaky: tuple[FlakyRegistry, str]) -> None:
    _, target = flaky
    client = RegistryClient(target, "token", timeout_s=1.0, retry_for_s=0)
    with pytest.raises(grpc.RpcError) as raised:
        client.set_gate("acme/x", "stable", "suite", request_id="req-1")
    client.close()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class OneReplica(registry_pb2_grpc.RegistryServicer):
    """A replica that owns some adapters and sends the rest on, as the registry does."""

    def __init__(self, owns: set[str]) -> None:
        self.owns = owns
        self.calls: list[str] = []

    def SetChannelGate(
        self, request: pb.SetChannelGateRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        ref = f"{request.ref.tenant}/{request.ref.name}"
        self.calls.append(ref)
        if ref not in self.owns:
            context.abort(grpc.StatusCode.UNAVAILABLE, "does not own partition; retry elsewhere")
        return pb.CommandResult(first_version=1, last_version=1)


@pytest.fixture
def three_replicas() -> Iterator[tuple[list[OneReplica], str]]:
    replicas = [OneReplica({f"acme/{n}"}) for n in "abc"]  # type: ignore[abstract]
    servers, addresses = [], []
    for replica in replicas:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        registry_pb2_grpc.add_RegistryServicer_to_server(replica, server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        servers.append(server)
    yield replicas, ",".join(addresses)
    for server in servers:
        server.stop(grace=0)


def test_a_retried_command_walks_the_replicas_to_the_owner_and_stays_there(
    three_replicas: tuple[list[OneReplica], str],
) -> None:
    replicas, target = three_replicas
    client = RegistryClient(target, "token", timeout_s=2.0, retry_for_s=10)
    for ref in ("acme/a", "acme/b", "acme/c"):
        for _ in range(3):
            assert client.set_gate(ref, "stable", "suite").first_version == 1
    client.close()
    for replica in replicas:
        (owned,) = replica.owns
        assert replica.calls.count(owned) == 3  # every command reached the owner
    wrong_turns = sum(len(r.calls) for r in replicas) - 9
    assert wrong_turns <= 3 * 2  # at most one pass over the others per adapter, then sticky


def test_without_retries_the_next_command_goes_to_the_next_replica(
    three_replicas: tuple[list[OneReplica], str],
) -> None:
    """A caller that retries by itself (retry_for_s=0) still walks the replicas."""
    replicas, target = three_replicas
    client = RegistryClient(target, "token", timeout_s=2.0, retry_for_s=0)
    answers: list[object] = []
    for _ in range(3):
        try:
            answers.append(client.set_gate("acme/b", "stable", "suite").first_version)
        except grpc.RpcError as exc:
            answers.append(exc.code())
    client.close()
    assert 1 in answers  # the owner was met within one pass over three replicas
    assert replicas[1].calls  # and it was replica 1


class _Refusal(grpc.RpcError):
    """A retryable answer naming (or not) the replica that owns the adapter."""

    def __init__(self, owner: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.owner, self.status = owner, code

    def code(self) -> grpc.StatusCode:
        return self.status

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return (("mint-owner", self.owner),) if self.owner else ()


def test_a_refusal_naming_the_owner_sends_the_next_try_there() -> None:
    choice = ReplicaChoice(["a:1", "b:2", "c:3"])
    choice._chosen["acme/x"] = 0
    assert choice.move_on("acme/x", 0, _Refusal("c:3"))  # straight to c, not on to b
    assert choice.choose("acme/x") == 2
    assert not choice.move_on("acme/x", 2, _Refusal("elsewhere:9"))  # unknown: the next one
    assert choice.choose("acme/x") == 0
    assert not choice.move_on("acme/x", 0, _Refusal(""))
    assert choice.choose("acme/x") == 1


def test_a_call_goes_to_a_named_owner_at_once_but_only_once() -> None:
    attempts = Attempts(ReplicaChoice(["a:1", "b:2"]), "acme/x", retry_for_s=10)
    first = attempts.replica()
    other = ["a:1", "b:2"][1 - first]
    assert attempts.pause_after(first, _Refusal(other)) == 0.0  # straight there
    assert attempts.replica() == 1 - first
    pause = attempts.pause_after(1 - first, _Refusal(["a:1", "b:2"][first]))
    assert pause is not None and pause > 0  # named again: a ping-pong waits its turn
    assert attempts.pause_after(first, _Refusal("", grpc.StatusCode.NOT_FOUND)) is None


class Busy(registry_pb2_grpc.RegistryServicer):
    """Refuses the first two calls for now (RESOURCE_EXHAUSTED, with or without a
    pushback), then answers."""

    def __init__(self, pushback_ms: str | None) -> None:
        self.pushback_ms = pushback_ms
        self.calls: list[float] = []

    def SetChannelGate(
        self, request: pb.SetChannelGateRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        self.calls.append(time.monotonic())
        if len(self.calls) <= 2:
            if self.pushback_ms is not None:
                context.set_trailing_metadata(((PUSHBACK_METADATA, self.pushback_ms),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "uploads in flight: retry later")
        return pb.CommandResult(first_version=1, last_version=1)


def _serve(servicer: registry_pb2_grpc.RegistryServicer) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_a_refusal_for_now_is_retried_after_its_pushback() -> None:
    busy = Busy(pushback_ms="300")  # type: ignore[abstract]  # only SetChannelGate is called
    server, target = _serve(busy)
    client = RegistryClient(target, "token", timeout_s=2.0, retry_for_s=10)
    try:
        assert client.set_gate("acme/x", "stable", "suite").first_version == 1
    finally:
        client.close()
        server.stop(grace=0)
    waits = [b - a for a, b in itertools.pairwise(busy.calls)]
    assert len(waits) == 2 and min(waits) >= 0.3, waits


def test_a_limit_without_pushback_is_not_retried() -> None:
    busy = Busy(pushback_ms=None)  # type: ignore[abstract]
    server, target = _serve(busy)
    client = RegistryClient(target, "token", timeout_s=2.0, retry_for_s=10)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            client.set_gate("acme/x", "stable", "suite")
    finally:
        client.close()
        server.stop(grace=0)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(busy.calls) == 1


def test_a_pushback_past_retry_for_s_is_not_waited_out() -> None:
    busy = Busy(pushback_ms="5000")  # type: ignore[abstract]
    server, target = _serve(busy)
    client = RegistryClient(target, "token", timeout_s=2.0, retry_for_s=1)
    started = time.monotonic()
    try:
        with pytest.raises(grpc.RpcError) as raised:
            client.set_gate("acme/x", "stable", "suite")
    finally:
        client.close()
        server.stop(grace=0)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (len(busy.calls), time.monotonic() - started < 1) == (1, True)
