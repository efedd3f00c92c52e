"""The router's channels to nodes do not grow with every node address ever seen: when it
dials a new address, it drops the channels to addresses no live node has (nodes restart
on new pod addresses), without cutting a call still running on one. Real gRPC servers
(the tiny echo service) stand for the nodes; a list of live nodes stands for the fleet
watch (its Kafka side is in test_fleet_watch.py)."""

from __future__ import annotations

import gc
import time
from concurrent import futures
from typing import Any, cast

import grpc

from mint.registry import Principal
from mint.rpc.auth import TokenTable, token_digest
from mint.serving.fleet import NodeState
from mint.tokenizer import byte_tokenizer
from services.router.metrics import RouterMetrics
from services.router.servicer import Router
from tests.services.rpc_echo import BLOCK, Echo, serve, who

ALICE = (("authorization", "Bearer alice-token"),)


class Fleet:
    """The live nodes, as the fleet watch would say."""

    def __init__(self) -> None:
        self.nodes: list[NodeState] = []

    def live(self) -> list[NodeState]:
        return list(self.nodes)


def node(name: str, port: int) -> NodeState:
    return NodeState(name, f"127.0.0.1:{port}", "base", 10**9, 8, frozenset(), time.monotonic())


def test_channels_to_gone_nodes_are_dropped_and_a_call_on_one_still_ends() -> None:
    tokens = TokenTable([(token_digest("alice-token"), Principal("alice", frozenset({"acme"})))])
    first_echo, second_echo = Echo(), Echo()
    first, second = serve(first_echo, tokens.authenticate), serve(second_echo, tokens.authenticate)
    dialled: dict[str, grpc.Channel] = {}

    def dial(address: str) -> grpc.Channel:
        dialled[address] = grpc.insecure_channel(address)
        return dialled[address]

    fleet = Fleet()
    router = Router(
        cast(Any, None),
        cast(Any, fleet),
        cast(Any, None),
        RouterMetrics(),
        byte_tokenizer(),
        None,
        dial=dial,
    )
    calls = futures.ThreadPoolExecutor(2)
    try:
        old, new = node("n1", first.port), node("n1", second.port)  # n1 restarted
        fleet.nodes = [old]

        def blocking(stub: Any, request: Any, options: dict[str, Any]) -> bytes:
            return who(dialled[old.address])(BLOCK, metadata=ALICE, timeout=20)

        def quick(stub: Any, request: Any, options: dict[str, Any]) -> bytes:
            return who(dialled[new.address])(b"", metadata=ALICE, timeout=5)

        alice = Principal("alice", frozenset({"acme"}))
        deadline = time.monotonic() + 30
        in_flight = calls.submit(router._call, old, cast(Any, None), alice, deadline, blocking)
        assert first_echo.started.acquire(timeout=5)
        fleet.nodes = [new]
        assert router._call(new, cast(Any, None), alice, deadline, quick) == b"alice"
        assert set(router._channels) == {new.address}, "the gone node's channel is dropped"
        del dialled[old.address]
        gc.collect()
        first_echo.release.set()
        assert in_flight.result(timeout=10) == b"alice", "the call on it still ended"
        assert router._in_flight == {}, "no count is kept for nodes with no call"
    finally:
        first_echo.release.set()
        calls.shutdown()
        first.stop(0)
        second.stop(0)
