"""A node busy loading keeps reporting (its reports are its heartbeat), and loads several
revisions at once up to its bound: against the real Kafka, with a slow object store. A
node with more revisions than device slots serves them all from host memory, fetching
each once: against the real Kafka and S3."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import time
from collections.abc import Callable

import torch
from minio import Minio
from prometheus_client import generate_latest
from safetensors.torch import save as save_safetensors

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import DesiredWriter, ResidencyTopics, TableFollower
from mint.backends.s3_objects import S3Objects
from mint.models.base import build_base, tiny_llama_config
from mint.serving.catalog import Catalog, revision_key
from mint.serving.engine import ServingEngine, key_of
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
    return stored_revision(objects.data.__setitem__, i)


def stored_revision(put: Callable[[str, bytes], object], i: int) -> RevisionRef:
    """A rank-2 q_proj adapter, its weights put where the projection keeps them."""
    g = torch.Generator().manual_seed(i)
    state = {}
    for layer in range(LAYERS):
        prefix = f"{PEFT_PREFIX}model.layers.{layer}.self_attn.q_proj"
        state[f"{prefix}.lora_A.weight"] = torch.randn(RANK, HIDDEN, generator=g)
        state[f"{prefix}.lora_B.weight"] = torch.randn(HIDDEN, RANK, generator=g)
    data = save_safetensors(state)
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": 4, "target_modules": ["q_proj"]}
    put(revision_key(f"acme/a{i}", 1, "adapter_model.safetensors"), data)
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


class CountedObjects(S3Objects):
    """The real S3, counting the reads of adapter weights."""

    def __init__(self, s3: Minio, bucket: str) -> None:
        super().__init__(s3, bucket)
        self.weights_reads = 0

    def get(self, key: str) -> bytes | None:
        self.weights_reads += key.endswith("adapter_model.safetensors")
        return super().get(key)


def test_more_adapters_than_device_slots_are_served_from_host_memory_fetched_once(
    kafka: KafkaConnection, s3: Minio, unique: str
) -> None:
    topics = ResidencyTopics(unique)
    topics.create(kafka)
    s3.make_bucket(unique)
    objects = CountedObjects(s3, unique)
    refs = [
        stored_revision(lambda k, d: s3.put_object(unique, k, io.BytesIO(d), len(d)), i)
        for i in range(4)
    ]
    unit = LAYERS * 2 * RANK * HIDDEN * 4  # one adapter's A and B in float32
    base = build_base(tiny_llama_config(hidden=HIDDEN, layers=LAYERS), seed=0)
    model = PackedLoraModel(base, ["q_proj"], 3, RANK)  # two slots, and slot 0
    engine = ServingEngine(
        model, SlotTable(3, 2 * unit), FINGERPRINT, 64, 0, 1, host_budget_bytes=4 * unit
    )
    metrics = NodeMetrics()
    engine.on_promote = metrics.promotions.inc
    node = Reconciler("n1", "127.0.0.1:1", engine, Catalog(objects), kafka, topics, metrics, 0.2)
    status = TableFollower(kafka, topics.status)
    writer = DesiredWriter(kafka, topics, f"{unique}-controller")
    node.start()
    try:
        assert node.ready.wait(timeout=30)
        writer.activate()
        writer.write([("n1", ref, False) for ref in refs], [], term=1)
        assert all(engine.wait_resident(ref, timeout_s=30) for ref in refs)
        served: dict[int, list[torch.Tensor]] = {}
        promoted = []
        for _ in range(3):  # round robin over four adapters with two slots
            for i, ref in enumerate(refs):
                with engine.lease([(ref, 1.0)]) as lease, torch.no_grad():
                    logits = engine.model(torch.tensor([[1, 2, 3]]), torch.tensor([lease.slot]))
                served.setdefault(i, []).append(logits)
            promoted.append(metrics.promotions._value.get())
        report = _report_with(status, lambda r: len(r.tiers) == 2 and len(r.resident) == 4)
    finally:
        writer.close()
        node.stop()
        status.close()
    assert objects.weights_reads == 4  # one fetch each, however often they were evicted
    # From the second round on, every request finds its adapter out of the slots.
    assert promoted[0] >= 2 and promoted[2] - promoted[0] == 8
    for first, *later in served.values():  # each promotion brings back the same weights
        assert all(torch.equal(first, again) for again in later)
    assert not torch.equal(served[0][0], served[1][0])
    assert [key_of(r) for r in engine.resident()] == [key_of(r) for r in refs]
    tiers = {t.tier: (t.adapters, t.used_bytes, t.budget_bytes, t.slots) for t in report.tiers}
    assert tiers == {"device": (2, 2 * unit, 2 * unit, 2), "host": (4, 4 * unit, 4 * unit, 0)}
    assert (report.budget_bytes, report.used_bytes, report.slots) == (4 * unit, 4 * unit, 2)
    assert (report.device, report.dtype) == ("cpu", "float32")
    text = generate_latest(metrics.registry).decode()
    for tier, count, budget in (("device", 2, 2 * unit), ("host", 4, 4 * unit)):
        assert f'mint_node_resident_adapters{{tier="{tier}"}} {count}.0' in text
        assert f'mint_node_budget_bytes{{tier="{tier}"}} {float(budget)}' in text
    for state, count in (("total", 2), ("filled", 2), ("leased", 0)):
        assert f'mint_node_device_slots{{rank="{RANK}",state="{state}"}} {count}.0' in text


def _report_with(status: TableFollower, done: Callable[[pb.NodeReport], bool]) -> pb.NodeReport:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _, value in status.poll(timeout_s=0.1):
            if value is not None and done(report := pb.NodeReport.FromString(value)):
                return report
    raise AssertionError("no such report from the node")
