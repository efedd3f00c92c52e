"""What every MinT gRPC server shares, on a tiny service (no Kafka or S3): a stop that
says NOT_SERVING before it drains, health that never waits behind busy workers, and
tokens that reload from their file while the server runs."""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckResponse

from mint.registry import Principal
from mint.rpc.auth import TokenTable, token_digest
from tests.services.rpc_echo import BLOCK, SERVICE, Echo, health_status, serve, who

ALICE = (("authorization", "Bearer alice-token"),)
NOT_SERVING = HealthCheckResponse.NOT_SERVING


def alice_only() -> TokenTable:
    return TokenTable([(token_digest("alice-token"), Principal("alice", frozenset({"acme"})))])


def test_stop_says_not_serving_first_and_lets_the_call_in_flight_finish() -> None:
    echo = Echo()
    server = serve(echo, alice_only().authenticate, drain_s=2.0)
    calls = futures.ThreadPoolExecutor(2)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        in_flight = calls.submit(who(channel), BLOCK, metadata=ALICE, timeout=20)
        assert echo.started.acquire(timeout=5)
        assert health_status(server.health_port) == HealthCheckResponse.SERVING
        stopping = threading.Thread(target=server.stop, args=(10,))
        stopping.start()
        deadline = time.monotonic() + 1
        while health_status(server.health_port) != NOT_SERVING:
            assert time.monotonic() < deadline, "no NOT_SERVING within 1 s of stop()"
        assert health_status(server.health_port, SERVICE) == NOT_SERVING
        assert health_status(server.port, SERVICE) == NOT_SERVING  # the service port too
        # While load balancers notice, calls are still taken...
        assert who(channel)(b"", metadata=ALICE, timeout=5) == b"alice"
        echo.release.set()
        assert in_flight.result(timeout=10) == b"alice"  # ...and the one in flight ends
        stopping.join(timeout=15)
        assert not stopping.is_alive()
        with pytest.raises(grpc.RpcError) as refused:
            who(channel)(b"", metadata=ALICE, timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    calls.shutdown()


def test_health_answers_at_once_while_every_worker_is_busy() -> None:
    echo = Echo()
    server = serve(echo, alice_only().authenticate, workers=2)
    calls = futures.ThreadPoolExecutor(3)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            busy = [calls.submit(who(channel), BLOCK, metadata=ALICE, timeout=20) for _ in "ab"]
            for _ in busy:
                assert echo.started.acquire(timeout=5)
            started = time.monotonic()
            assert health_status(server.health_port, timeout=1) == HealthCheckResponse.SERVING
            assert time.monotonic() - started < 1.0
            # The service's own port queues health behind the workers: what probes avoid.
            with pytest.raises(grpc.RpcError) as queued:
                health_status(server.port, timeout=1)
            assert queued.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            echo.release.set()
            assert [b.result(timeout=10) for b in busy] == [b"alice", b"alice"]
    finally:
        echo.release.set()
        server.stop(0)
        calls.shutdown()


def test_a_token_removed_from_the_file_is_refused_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    alice = {"sha256": token_digest("alice-token"), "principal": "alice", "tenants": ["acme"]}
    bob = {"sha256": token_digest("bob-token"), "principal": "bob", "tenants": ["acme"]}
    path.write_text(json.dumps({"tokens": [alice, bob]}))
    tokens = TokenTable.from_file(path, reload_s=0.3)
    server = serve(Echo(), tokens.authenticate)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert who(channel)(b"", metadata=ALICE, timeout=5) == b"alice"
            path.write_text(json.dumps({"tokens": [bob]}))  # alice's token revoked
            revoked_at = time.monotonic()
            while True:
                try:
                    who(channel)(b"", metadata=ALICE, timeout=5)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    break
                assert time.monotonic() - revoked_at < 1.0, "still accepted after 1 s"
                time.sleep(0.05)
            bob_call = who(channel)(b"", metadata=(("authorization", "Bearer bob-token"),))
            assert bob_call == b"bob"
    finally:
        server.stop(0)
