"""TLS with a test CA: a server refuses clients that cannot verify it or that speak
plaintext; a server requiring client certificates (a node) takes the router's certificate
in place of a token and refuses other certificates without one; and the registry serves
its client over TLS (on the real Kafka and S3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from mint.client import RegistryClient
from mint.registry import Principal
from mint.rpc.auth import OnBehalf, TokenTable, on_behalf_of, token_digest
from mint.rpc.server import RpcServer
from mint.rpc.tls import ROUTER_PEER_NAME, TlsFiles
from services.registry.server import build_server
from tests.services.conftest import TOKENS, Running
from tests.services.rpc_echo import Echo, serve, who
from tests.tls_ca import Authority

ALICE = Principal("alice", frozenset({"acme"}))
ALICE_AUTH = (("authorization", "Bearer alice-token"),)
LOCAL = ("localhost",), ("127.0.0.1",)  # what a server here is dialled as


def tokens() -> TokenTable:
    return TokenTable([(token_digest("alice-token"), ALICE)])


def call(target: str, credentials: grpc.ChannelCredentials | None, metadata: Any) -> bytes:
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        return who(channel)(b"", metadata=metadata, timeout=5)


def refused(target: str, credentials: grpc.ChannelCredentials | None, metadata: Any) -> Any:
    with pytest.raises(grpc.RpcError) as err:
        call(target, credentials, metadata)
    return err.value.code()


@pytest.fixture
def tls_server(test_ca: Authority) -> Iterator[str]:
    server = serve(Echo(), tokens().authenticate, tls=test_ca.tls("server", *LOCAL))
    yield f"127.0.0.1:{server.port}"
    server.stop(0)


def test_a_tls_server_refuses_clients_without_its_ca_and_plaintext(
    tls_server: str, test_ca: Authority, rogue_ca: Authority
) -> None:
    trusting = TlsFiles(ca_file=test_ca.ca_file).channel_credentials()
    assert call(tls_server, trusting, ALICE_AUTH) == b"alice"
    others = TlsFiles(ca_file=rogue_ca.ca_file).channel_credentials()
    assert refused(tls_server, others, ALICE_AUTH) == grpc.StatusCode.UNAVAILABLE
    assert refused(tls_server, None, ALICE_AUTH) == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def mtls_node(test_ca: Authority) -> Iterator[RpcServer]:
    """A server authenticating as a node does: client certificates required."""
    tls = test_ca.tls("mint-node", *LOCAL, require_client_cert=True)
    server = serve(Echo(), OnBehalf(tokens(), frozenset({ROUTER_PEER_NAME})), tls=tls)
    yield server
    server.stop(0)


def test_a_node_takes_the_routers_certificate_for_a_token_and_no_other(
    mtls_node: RpcServer, test_ca: Authority, rogue_ca: Authority
) -> None:
    target = f"127.0.0.1:{mtls_node.port}"
    router = test_ca.tls(ROUTER_PEER_NAME).channel_credentials()
    acting = on_behalf_of(None, Principal("carol", frozenset({"acme"})))
    assert call(target, router, acting) == b"carol"  # no token: the certificate says who
    stranger = test_ca.tls("mallory").channel_credentials()
    assert refused(target, stranger, acting) == grpc.StatusCode.UNAUTHENTICATED
    assert call(target, stranger, ALICE_AUTH) == b"alice"  # a token still works
    anonymous = TlsFiles(ca_file=test_ca.ca_file).channel_credentials()  # no certificate
    assert refused(target, anonymous, ALICE_AUTH) == grpc.StatusCode.UNAVAILABLE
    forged = rogue_ca.tls(ROUTER_PEER_NAME)  # the right name, signed by another CA
    trusting_forged = TlsFiles(forged.cert_file, forged.key_file, test_ca.ca_file)
    assert refused(target, trusting_forged.channel_credentials(), acting) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_the_registry_serves_its_client_over_tls(
    running: Running, test_ca: Authority, model_files: dict
) -> None:
    server, port = build_server(
        running.registry,
        TokenTable((token_digest(t), p) for t, p in TOKENS.items()),
        tls=test_ca.tls("mint-registry", *LOCAL),
        drain_s=0,
    )
    target = f"127.0.0.1:{port}"
    try:
        client = RegistryClient(target, "admin-token", tls=TlsFiles(ca_file=test_ca.ca_file))
        base = client.register_base("tiny-tls", model_files["fingerprint"], model_files["shapes"])
        assert base.fingerprint == model_files["fingerprint"]
        client.close()
        plaintext = RegistryClient(target, "admin-token", retry_for_s=0)
        with pytest.raises(grpc.RpcError) as err:
            plaintext.get_adapter("acme/none")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        plaintext.close()
    finally:
        server.stop(0)
