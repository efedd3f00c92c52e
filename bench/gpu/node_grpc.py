"""Issue 11's gRPC figure: tokens/s through the node's `Inference` API (`--grpc-clients`
concurrent clients, as many rank-8 q/v adapters, one `Generate` each) against the node's
engine and scheduler alone serving the same requests. The node's servicer (with its
authentication), scheduler and engine run in this process on a local port; the adapters
are resident in-process and the catalog reads their manifests from memory (no Kafka, no
S3). Beyond torch, transformers and peft it imports what the servicer does (grpcio,
pydantic, prometheus_client, grpcio-health-checking, grpcio-reflection), which the GPU
machine needs carried as wheels (bench/README.md).
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from bench.gpu.lora_kernel import CONFIGS
from bench.gpu.serving_figures import Setup, engine_of, serve
from mint.commands import Principal
from mint.layout import MANIFEST
from mint.rpc.auth import OnBehalf, TokenTable, token_digest
from mint.rpc.server import build_server
from mint.serving.catalog import Catalog, revision_key
from mint.serving.decode_graphs import DecodeGraphs
from mint.serving.packed_model import LoraWeights
from mint.serving.requests import RevisionRef
from mint.serving.scheduler import Scheduler
from mint.tokenizer import byte_tokenizer, tokenizer_fingerprint
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc
from services.inference.metrics import NodeMetrics
from services.inference.node import InferenceNode
from services.inference.provenance import Provenances, Stamp
from services.inference.servicer import InferenceServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
TOKEN = "figures-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def measure(setup: Setup, clients: int) -> dict[str, Any]:
    rank, targets = CONFIGS["rank8-qv"]
    states = setup.adapter_states(rank, targets, clients)
    engine = engine_of(setup, rank, targets, clients)
    objects: dict[str, bytes] = {}
    refs = [described(objects, i, rank, targets) for i in range(clients)]
    for ref, state in zip(refs, states, strict=True):
        engine.load(ref, LoraWeights.from_peft(state, rank))
    tokenizer = byte_tokenizer()
    texts = [f"request {i}: " + "adapters as state " * 4 for i in range(clients)]
    asks = [tokenizer(t)["input_ids"] for t in texts]
    new = setup.args.new_tokens
    _, alone = serve(engine, asks, refs, new)
    graphs = DecodeGraphs(engine.layout) if engine.model_device.type == "cuda" else None
    scheduler = Scheduler(engine, clients, clients, max(512, clients), 0.005, graphs=graphs)
    scheduler.start()  # as a node's, graphs on a GPU
    node = InferenceNode("figures", engine, Catalog(objects), tokenizer, scheduler)
    stamp = Stamp("figures", "figures", "", tokenizer_fingerprint(tokenizer))
    servicer = InferenceServicer(node, NodeMetrics(), Provenances(stamp, None))
    tokens = TokenTable([(token_digest(TOKEN), Principal("bench", frozenset({"figures"})))])
    server = build_server(
        SERVICE_NAME,
        lambda s: inference_pb2_grpc.add_InferenceServicer_to_server(servicer, s),
        "127.0.0.1:0",
        OnBehalf(tokens, frozenset()),
        workers=clients + 4,
    )
    try:
        through = [_through_grpc(server.port, texts, refs, new) for _ in range(2)][-1]
    finally:
        server.stop(0)
        scheduler.close()
    return {
        "clients": clients,
        "engine_tokens_per_s": alone,
        "grpc_tokens_per_s": through,
        "grpc_over_engine": through / alone,
    }


def described(objects: dict[str, bytes], i: int, rank: int, targets: tuple[str, ...]) -> Any:
    """Adapter i's manifest in the projection's layout (what the node's catalog reads)."""
    adapter = f"figures/a{i}"
    config = json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": rank,
                         "target_modules": list(targets)})  # fmt: skip
    sha256 = hashlib.sha256(adapter.encode()).hexdigest()  # never fetched: resident already
    manifest = {
        "adapter_id": f"id-{i}",
        "config_json": config,
        "base_fingerprint": "",
        "files": {"adapter_model.safetensors": {"sha256": sha256, "size": 1}},
    }
    objects[revision_key(adapter, 1, MANIFEST)] = json.dumps(manifest).encode()
    return RevisionRef(f"id-{i}", adapter, 1, sha256, 1, "", config)


def _through_grpc(port: int, texts: list[str], refs: list[RevisionRef], new: int) -> float:
    """Every client's `Generate` at once; generated tokens per second of wall time."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)

        def call(i: int) -> int:
            request = pb.GenerateRequest(
                adapters=[pb.AdapterSelector(adapter=refs[i].adapter, revision=1)],
                prompt=texts[i],
                sampling=pb.Sampling(max_new_tokens=new),
            )
            reply = stub.Generate(request, metadata=AUTH, timeout=600)
            return len(reply.tokens)

        started = time.perf_counter()
        with ThreadPoolExecutor(len(texts)) as pool:
            produced = sum(pool.map(call, range(len(texts))))
        return produced / (time.perf_counter() - started)
