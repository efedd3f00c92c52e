"""For the logging and tracing tests: `mint.logs` configured into a string for a while
(then the process's logging as it was), and a tiny gRPC service on MinT's RPC layer whose
one method logs a line while serving."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import grpc

from mint import logs
from mint.registry import Principal
from mint.rpc.auth import TokenTable, token_digest
from mint.rpc.server import RpcServer, build_server
from mint.v1 import registry_pb2

ALICE = ("authorization", "Bearer alice-token")
SERVICE = "test.Logged"
CREATE = f"/{SERVICE}/Create"
said = logging.getLogger("mint.tests.logged")


@contextlib.contextmanager
def captured_logs(config: logs.LogConfig) -> Iterator[io.StringIO]:
    """What the process logs inside, as `config` writes it; afterwards its logging is put
    back as it was for the other tests."""
    root = logging.getLogger()
    names = [*logs.OWN_LOGGERS, *config.logger_levels]
    levels = {name: logging.getLogger(name).level for name in names}
    handlers, root_level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logs.configure(config, stream)
    try:
        yield stream
    finally:
        handler.flush()
        for added in root.handlers[:]:
            if added not in handlers:
                root.removeHandler(added)
                added.close()
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _create(request: registry_pb2.CreateAdapterRequest, context: grpc.ServicerContext) -> bytes:
    said.info("creating %s", request.ref.name)
    return b""


def serve_logged() -> RpcServer:
    """A started server of CREATE (a CreateAdapterRequest in, nothing out), for ALICE."""

    def add(server: grpc.Server) -> None:
        handler: grpc.RpcMethodHandler[registry_pb2.CreateAdapterRequest, bytes] = (
            grpc.unary_unary_rpc_method_handler(
                _create, request_deserializer=registry_pb2.CreateAdapterRequest.FromString
            )
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Create": handler}),)
        )

    tokens = TokenTable([(token_digest("alice-token"), Principal("alice", frozenset({"acme"})))])
    return build_server(SERVICE, add, "127.0.0.1:0", tokens.authenticate, 2, drain_s=0)


def create(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[registry_pb2.CreateAdapterRequest, bytes]:
    return channel.unary_unary(
        CREATE, request_serializer=registry_pb2.CreateAdapterRequest.SerializeToString
    )
