"""Assembling a node: base model, slots, engine, scheduler, catalog, reconciler, server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import mint
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import ResidencyTopics
from mint.backends.kafka_responses import ResponseRecorder, ResponsesTopic
from mint.backends.s3 import S3Settings, client
from mint.backends.s3_objects import S3Objects
from mint.models.base import place, served_base, served_fingerprint
from mint.probes import serve_metrics
from mint.rpc.auth import OnBehalf, TokenMetrics, TokenTable
from mint.rpc.server import DRAIN_S, build_server
from mint.rpc.tls import ROUTER_PEER_NAME, TlsFiles
from mint.serving.catalog import Catalog
from mint.serving.decode_graphs import DecodeGraphs
from mint.serving.device import TensorHome, resolve
from mint.serving.disk_cache import DiskCache
from mint.serving.engine import ServingEngine
from mint.serving.host_reserve import RESERVE_BYTES, HostReserve
from mint.serving.kernels import gathered_lora_kernel, lora_path
from mint.serving.packed_model import PackedLoraModel
from mint.serving.provenance import engine_version
from mint.serving.rank_classes import SlotLayout
from mint.serving.residency import SlotTable
from mint.serving.scheduler import Scheduler
from mint.serving.slots import gathered_lora
from mint.tokenizer import byte_tokenizer, load_tokenizer_dir, tokenizer_fingerprint
from mint.v1 import inference_pb2, inference_pb2_grpc

from .metrics import NodeMetrics
from .node import InferenceNode
from .provenance import Provenances, Stamp
from .reconciler import Reconciler
from .servicer import InferenceServicer

log = logging.getLogger(__name__)
SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


@dataclass(frozen=True)
class NodeConfig:
    name: str
    kafka: KafkaConnection
    s3: S3Settings
    tokens: TokenTable  # callers' tokens and the router's service token
    bucket: str = "mint"
    prefix: str = ""
    topics: ResidencyTopics = field(default_factory=ResidencyTopics)
    host: str = "127.0.0.1"
    port: int = 0
    advertise_host: str = "127.0.0.1"
    base_dir: str | None = None  # None: the tiny Llama built in code from base_seed
    base_seed: int = 0
    home: TensorHome | None = None  # device and dtype; None: auto (mint.serving.device)
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    slots: int = 64
    max_rank: int = 32
    rank_classes: str = "auto"  # see SlotLayout.parse
    lora_kernel: str = "auto"  # auto: the Triton kernel where it applies (CUDA)
    decode_graphs: str = "auto"  # auto: decode passes replayed from CUDA graphs on a GPU
    budget_bytes: int = 256 * 1024 * 1024  # the device slots
    host_budget_bytes: int = 1024 * 1024 * 1024  # every resident adapter, in host memory
    host_reserve_bytes: int = RESERVE_BYTES  # written ahead of loads (CPU nodes; 0: none)
    max_prompt_tokens: int = 1024
    batch_window_ms: float = 5.0  # an idle node waits this long for a burst to start with
    max_batch: int = 32  # requests running at once
    max_queue: int = 256  # requests waiting to run; more are refused (RESOURCE_EXHAUSTED)
    step_tokens: int = 512  # tokens per step, decodes and a prefill chunk together
    metrics_port: int | None = None
    report_s: float = 1.0
    disk_cache_dir: str | None = None  # None: no disk tier
    disk_budget_bytes: int = 4 * 1024**3
    # Served over TLS with these files. With `require_client_cert`, a caller whose
    # certificate names one of `trusted_peers` (the router) acts for the caller it names
    # without a token; anyone else still needs a token.
    tls: TlsFiles | None = None
    trusted_peers: frozenset[str] = frozenset({ROUTER_PEER_NAME})
    health_port: int = 0  # plaintext, health only (probes); 0: a free port
    drain_s: float = DRAIN_S
    # Where each reply's request is recorded for replay (None: nowhere; replies still
    # name their provenance).
    responses: ResponsesTopic | None = None


class NodeProcess:
    """A running node; `stop()` says goodbye on the status topic and drains requests."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        base: Any = served_base(config.base_dir, config.base_seed)
        tokenizer = load_tokenizer_dir(config.base_dir) if config.base_dir else byte_tokenizer()
        # Of the weights as stored, before the slots wrap its layers: the dtype a node
        # serves in changes no fingerprint.
        base_fingerprint = served_fingerprint(config.base_dir, base)
        home = config.home or resolve()
        place(base, home.device, home.dtype)  # the slot banks follow its layers
        layout = SlotLayout.parse(config.rank_classes, config.slots, config.max_rank)
        gathered = gathered_lora if config.lora_kernel == "torch" else gathered_lora_kernel
        model = PackedLoraModel(base, list(config.targets), layout, gathered=gathered)
        self.metrics = NodeMetrics()
        self.metrics.device.info(dict(zip(("device", "dtype"), home.describe(), strict=True)))
        self.engine = ServingEngine(
            model,
            SlotTable(layout.sizes, config.budget_bytes),
            base_fingerprint,
            config.max_prompt_tokens,
            pad_token_id=int(tokenizer.pad_token_id),
            eos_token_id=int(tokenizer.eos_token_id),
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            host_budget_bytes=config.host_budget_bytes,
            on_promote=self.metrics.promotions.inc,
        )
        self.scheduler = Scheduler(
            self.engine,
            config.max_batch,
            config.max_queue,
            config.step_tokens,
            config.batch_window_ms / 1000,
            on_step=self.metrics.batch_size.observe,
            graphs=DecodeGraphs(layout)
            if config.decode_graphs == "auto" and home.device.type == "cuda"
            else None,
        ).start()
        catalog = Catalog(S3Objects(client(config.s3), config.bucket, config.prefix))
        node = InferenceNode(
            config.name,
            self.engine,
            catalog,
            tokenizer,
            self.scheduler,
            on_miss=self.metrics.misses.inc,
        )
        self.recorder = (
            ResponseRecorder(config.kafka, config.responses.name, self.metrics.records_dropped.inc)
            if config.responses
            else None
        )
        stamp = Stamp(
            config.name,
            engine_version(
                mint.__version__,
                torch.__version__,
                *home.describe(),
                lora_path(config.lora_kernel, home.device),
            ),
            base_fingerprint,
            tokenizer_fingerprint(tokenizer),
        )
        servicer = InferenceServicer(node, self.metrics, Provenances(stamp, self.recorder))
        self.rpc = build_server(
            SERVICE_NAME,
            lambda s: inference_pb2_grpc.add_InferenceServicer_to_server(servicer, s),
            f"{config.host}:{config.port}",
            OnBehalf(config.tokens, config.trusted_peers),
            tls=config.tls,
            health_port=config.health_port,
            drain_s=config.drain_s,
        )
        self.port, self.health = self.rpc.port, self.rpc.health
        self.metrics.registry.register(TokenMetrics(config.tokens))
        self.address = f"{config.advertise_host}:{self.port}"
        # On a GPU the host tier keeps page-locked copies, not the fetched bytes.
        self.reserve = (
            HostReserve(config.host_reserve_bytes, self.metrics.count_reserve_take)
            if home.device.type == "cpu" and config.host_reserve_bytes > 0
            else None
        )
        self.reconciler = Reconciler(
            config.name,
            self.address,
            self.engine,
            catalog,
            config.kafka,
            config.topics,
            self.metrics,
            config.report_s,
            DiskCache(Path(config.disk_cache_dir), config.disk_budget_bytes)
            if config.disk_cache_dir
            else None,
            reserve=self.reserve,
        )
        self.reconciler.start()
        if config.metrics_port is not None:
            # /metrics, and a /healthz that says the process answers; no other path
            serve_metrics(config.metrics_port, self.metrics.registry, healthz=True)

    def stop(self, grace_s: float = 5.0) -> None:
        """NOT_SERVING and goodbye on the status topic first, then the server drains
        (see `RpcServer.stop`)."""
        self.rpc.start_draining()
        self.reconciler.stop()
        if self.reserve is not None:
            self.reserve.close()
        self.rpc.stop(grace_s)
        self.scheduler.close()
        if self.recorder is not None:
            self.recorder.close()  # after the calls drained: their records are queued
