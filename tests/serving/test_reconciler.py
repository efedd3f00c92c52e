"""A node busy loading keeps reporting (its reports are its heartbeat), and loads several
revisions at once up to its bound: against the real Kafka, with a slow object store."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time

import torch
from safetensors.torch import save as save_safetensors

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import DesiredWriter, ResidencyTopics, TableFollower
from mint.models.base import build_base, tiny_llama_config
from mint.serving.catalog import Catalog, revision_key
from mint.serving.engine import ServingEngine
from mint.serving.packed_model import PEFT_PREFIX, PackedLoraModel
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable
from mint.v1 import residency_pb2 as pb
from services.inference.metrics import NodeMetrics
from services.inference.reconciler import Reconciler

HIDDEN, LAYERS, RANK, FINGERPRINT = 64, 2, 2, "f" * 64
LOAD_S, LOADS, MAX_LOADS, REPORT_S = 1.0, 4, 2, 0.2


class SlowObjects:
    """In memory, each GET taking LOAD_S; counts how many run at once."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(LOAD_S)
        with self._lock:
            self.running -= 1
        return self.data.get(key)


def revision(objects: SlowObjects, i: int) -> RevisionRef:
    g = torch.Generator().manual_seed(i)
    state = {}
    for layer in range(LAYERS):
        prefix = f"{PEFT_PREFIX}model.layers.{layer}.self_attn.q_proj"
        state[f"{prefix}.lora_A.weight"] = torch.randn(RANK, HIDDEN, generator=g)
        state[f"{prefix}.lora_B.weight"] = torch.randn(HIDDEN, RANK, generator=g)
    data = save_safetensors(state)
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": 4, "target_modules": ["q_proj"]}
    objects.data[revision_key(f"acme/a{i}", 1, "adapter_model.safetensors")] = data
    sha = hashlib.sha256(data).hexdigest()
    return RevisionRef(f"id{i}", f"acme/a{i}", 1, sha, len(data), FINGERPRINT, json.dumps(config))


def test_a_node_busy_loading_keeps_heartbeating_and_loads_up_to_its_bound(
    kafka: KafkaConnection, unique: str
) -> None:
    topics = ResidencyTopics(unique)
    topics.create(kafka)
    objects = SlowObjects()
    refs = [revision(objects, i) for i in range(LOADS)]
    base = build_base(tiny_llama_config(hidden=HIDDEN, layers=LAYERS), seed=0)
    model = PackedLoraModel(base, ["q_proj"], LOADS + 1, RANK)
    engine = ServingEngine(model, SlotTable(LOADS + 1, 2**30), FINGERPRINT, 64, 0, 1)
    node = Reconciler(
        "n1", "127.0.0.1:1", engine, Catalog(objects), kafka, topics, NodeMetrics(),
        report_s=REPORT_S, max_loads=MAX_LOADS,
    )  # fmt: skip
    status = TableFollower(kafka, topics.status)
    writer = DesiredWriter(kafka, topics, f"{unique}-controller")
    node.start()
    try:
        assert node.ready.wait(timeout=30)
        writer.activate()
        writer.write([("n1", ref, False) for ref in refs], [], term=1)
        beats: list[float] = []
        deadline = time.monotonic() + 30
        while len(engine.resident()) < LOADS and time.monotonic() < deadline:
            for _, value in status.poll(timeout_s=0.1):
                if value is not None:
                    beats.append(pb.NodeReport.FromString(value).at.ToNanoseconds() / 1e9)
        assert len(engine.resident()) == LOADS
    finally:
        writer.close()
        node.stop()
        status.close()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) >= 5 and max(gaps) < 4 * REPORT_S, f"reports stalled: {max(gaps):.2f} s"
    assert objects.most_at_once == MAX_LOADS  # concurrent, and never beyond the bound
