"""Assembling the router: catalog, fleet watch, demand reports, authenticated gRPC server,
and the OpenAI-compatible HTTP API (`openai_api`) when given an address for it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from grpc_health.v1.health_pb2 import HealthCheckResponse

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import ErasureWatch, ResidencyTopics
from mint.backends.s3 import S3Settings, client
from mint.backends.s3_objects import S3Objects
from mint.probes import serve_metrics
from mint.rpc.auth import TokenMetrics, TokenTable
from mint.rpc.server import DRAIN_S, build_server
from mint.rpc.tls import NODE_SERVER_NAME, TlsFiles, dialer
from mint.serving.catalog import Catalog
from mint.tokenizer import byte_tokenizer
from mint.v1 import inference_pb2, inference_pb2_grpc

from .fleet_watch import DemandReporter, FleetWatch
from .metrics import RouterMetrics
from .openai_api.app import OpenAIApi
from .openai_api.server import HttpServer
from .servicer import Router, RouterServicer

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


@dataclass(frozen=True)
class RouterConfig:
    name: str
    kafka: KafkaConnection
    s3: S3Settings
    tokens: TokenTable
    # What the router calls nodes with: a "service" entry of their tokens ("": none, the
    # router's certificate in `tls` is its credential).
    service_token: str = field(repr=False)
    bucket: str = "mint"
    prefix: str = ""
    topics: ResidencyTopics = field(default_factory=ResidencyTopics)
    address: str = "127.0.0.1:0"
    silence_s: float = 4.0
    cold_start_s: float = 30.0
    demand_interval_s: float = 1.0
    metrics_port: int | None = None
    # Served over TLS with these files; with them the router also calls nodes over mutual
    # TLS, presenting the same certificate and checking that each node's names
    # `node_server_name` (nodes are dialled by pod IP, which their certificates lack).
    tls: TlsFiles | None = None
    node_server_name: str | None = NODE_SERVER_NAME
    health_port: int = 0  # plaintext, health only (probes); 0: a free port
    drain_s: float = DRAIN_S
    # The OpenAI-compatible HTTP API (host:port, port 0: a free one; None: not served),
    # over TLS with the files in `tls` when they include a certificate.
    http_address: str | None = None

    def __post_init__(self) -> None:
        if not self.service_token and not (self.tls and self.tls.has_identity):
            raise ValueError(
                "the router needs a credential toward the nodes: a service token "
                "(MINT_SERVICE_TOKEN) or a client certificate (MINT_TLS_CERT_FILE and "
                "MINT_TLS_KEY_FILE)"
            )


class RouterProcess:
    def __init__(self, config: RouterConfig) -> None:
        self.metrics = RouterMetrics()
        self.watch = FleetWatch(config.kafka, config.topics, config.silence_s)
        if not self.watch.caught_up.wait(timeout=60):
            raise RuntimeError(f"could not read {config.topics.status} to its end in 60 s")
        self.demand = DemandReporter(
            config.kafka, config.topics, config.name, config.demand_interval_s
        )
        objects = S3Objects(client(config.s3), config.bucket, config.prefix)
        catalog = Catalog(objects)
        # Requests for an erased adapter are refused at once, whatever the projection
        # (or this router's cache of it) still holds.
        self.erasures = ErasureWatch(config.kafka, config.topics, catalog.erase)
        tokenizer = byte_tokenizer()
        self.router = Router(
            catalog,
            self.watch,
            self.demand,
            self.metrics,
            tokenizer,
            config.service_token or None,
            config.cold_start_s,
            dialer(config.tls, config.node_server_name),
        )
        self.rpc = build_server(
            SERVICE_NAME,
            lambda s: inference_pb2_grpc.add_InferenceServicer_to_server(
                RouterServicer(self.router), s
            ),
            config.address,
            config.tokens.authenticate,
            workers=64,  # requests wait on cold starts: threads, not cores
            tls=config.tls,
            health_port=config.health_port,
            drain_s=config.drain_s,
        )
        self.port, self.health = self.rpc.port, self.rpc.health
        self.http: HttpServer | None = None
        if config.http_address is not None:
            api = OpenAIApi(self.router, config.tokens, objects, tokenizer, self.metrics)
            self.http = HttpServer(api.app(), config.http_address, config.tls)
        self.metrics.registry.register(TokenMetrics(config.tokens))
        self._health_lock = threading.Lock()
        self.watch.on_health = self._watch_health
        self._watch_health(self.watch.healthy.is_set())
        if config.metrics_port is not None:
            # /metrics, and a /healthz that says the process answers; no other path
            serve_metrics(config.metrics_port, self.metrics.registry, healthz=True)

    def _watch_health(self, _: bool) -> None:
        """A router whose fleet view is stale must not take traffic. (Reads the watch's
        state under a lock: the last call sets the latest state, whoever makes it.)"""
        with self._health_lock:
            ok = self.watch.healthy.is_set()
            status = HealthCheckResponse.SERVING if ok else HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                self.health.set(name, status)

    def stop(self, grace_s: float = 5.0) -> None:
        """NOT_SERVING at once, then the server drains (see `RpcServer.stop`)."""
        self.rpc.stop(grace_s)
        if self.http is not None:
            self.http.stop(grace_s)
        self.demand.close()
        self.watch.close()
        self.erasures.close()
