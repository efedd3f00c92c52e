"""The client sends a command again, with the same request id, when its answer was
UNAVAILABLE or did not come before the deadline (a server that stands in for the
registry: what is checked is the client's behaviour, not the server's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from mint.client import RegistryClient
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
