"""The router and a node over TLS with a test CA, on the real Kafka and S3: callers reach
the router over TLS, the router reaches the node over mutual TLS with no service token
(its certificate is its credential; the node's certificate names `mint-node`, not the
address it is dialled at), nobody else reaches the node without a certificate and a
token, and both say NOT_SERVING on their health ports as soon as they start stopping."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckResponse
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import DesiredWriter
from mint.backends.s3_objects import S3Objects
from mint.rpc.auth import on_behalf_of
from mint.rpc.server import RpcServer
from mint.rpc.tls import NODE_SERVER_NAME, ROUTER_PEER_NAME, TlsFiles
from mint.serving.catalog import Catalog
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc
from services.inference.app import NodeConfig, NodeProcess
from services.router.app import RouterConfig, RouterProcess
from tests.services.rpc_echo import health_status
from tests.serving.test_router import fresh_topics, select
from tests.serving.world import ALICE, ALICE_AUTH, World, new_world, serving_tokens
from tests.tls_ca import Authority

pytestmark = pytest.mark.slow
LOCAL = ("localhost",), ("127.0.0.1",)
REQUEST = pb.GenerateRequest(
    adapters=[select("a", revision=1)], prompt="hi", sampling=pb.Sampling(max_new_tokens=2)
)


@pytest.fixture(scope="module")
def world(
    kafka: KafkaConnection, s3: Minio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = new_world(kafka, s3)
    w.publish("a", tmp_path_factory.mktemp("tls") / "a", seed=1)
    w.project()
    yield w
    w.log.close()


def generate(
    target: str, credentials: grpc.ChannelCredentials, metadata: Any
) -> pb.GenerateResponse:
    with grpc.secure_channel(target, credentials) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        return stub.Generate(REQUEST, metadata=metadata, timeout=30)


def refused(target: str, credentials: grpc.ChannelCredentials, metadata: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        generate(target, credentials, metadata)
    return err.value.code()


def says_not_serving_while_stopping(rpc: RpcServer, stop: threading.Thread) -> bool:
    stop.start()
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        if health_status(rpc.health_port) == HealthCheckResponse.NOT_SERVING:
            return True
    return False


def test_the_router_reaches_nodes_over_mutual_tls_by_its_certificate(
    world: World, s3_settings: Any, test_ca: Authority, rogue_ca: Authority, tmp_path: Path
) -> None:
    topics = fresh_topics(world, "tls")
    node = NodeProcess(
        NodeConfig(
            name="tls-node",
            kafka=world.kafka,
            s3=s3_settings,
            tokens=serving_tokens(),
            bucket=world.bucket,
            topics=topics,
            report_s=0.3,
            # Names no address: the router checks the name every node's certificate has.
            tls=test_ca.tls(NODE_SERVER_NAME, require_client_cert=True),
            drain_s=1.0,
        )
    )
    router = RouterProcess(
        RouterConfig(
            "r-tls",
            world.kafka,
            s3_settings,
            serving_tokens(),
            "",  # no service token: the certificate is the router's only credential
            bucket=world.bucket,
            topics=topics,
            cold_start_s=30,
            tls=test_ca.tls(ROUTER_PEER_NAME, *LOCAL),
            drain_s=1.0,
        )
    )
    stopped = False
    try:
        ref = Catalog(S3Objects(world.s3, world.bucket)).revision("acme/a", 1)
        writer = DesiredWriter(world.kafka, topics, f"{topics.prefix}-controller")
        writer.activate()
        writer.write([("tls-node", ref, False)], [], term=1)  # no controller here
        writer.close()
        deadline = time.monotonic() + 60
        while not router.watch.holding([ref]):
            assert time.monotonic() < deadline, "the node never reported acme/a@1 loaded"
            time.sleep(0.1)

        trusting = TlsFiles(ca_file=test_ca.ca_file).channel_credentials()
        router_at = f"127.0.0.1:{router.port}"
        assert generate(router_at, trusting, ALICE_AUTH).node == "tls-node"
        untrusting = TlsFiles(ca_file=rogue_ca.ca_file).channel_credentials()
        assert refused(router_at, untrusting, ALICE_AUTH) == grpc.StatusCode.UNAVAILABLE

        # The node itself: no client certificate, or one of another name without a token.
        node_name = [("grpc.ssl_target_name_override", NODE_SERVER_NAME)]
        acting = tuple(on_behalf_of(None, ALICE))
        with grpc.secure_channel(node.address, trusting, node_name) as channel:
            with pytest.raises(grpc.RpcError) as err:
                inference_pb2_grpc.InferenceStub(channel).Generate(REQUEST, metadata=acting)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger = test_ca.tls("mallory").channel_credentials()
        with grpc.secure_channel(node.address, stranger, node_name) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(REQUEST, metadata=acting, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.Generate(REQUEST, metadata=ALICE_AUTH, timeout=30).node == "tls-node"

        stopped = True
        router_stop = threading.Thread(target=router.stop, args=(1,))
        node_stop = threading.Thread(target=node.stop, args=(1,))
        assert says_not_serving_while_stopping(router.rpc, router_stop)
        assert says_not_serving_while_stopping(node.rpc, node_stop)
        router_stop.join()
        node_stop.join()
    finally:
        if not stopped:
            router.stop(grace_s=1)
            node.stop(grace_s=1)
