"""Residency event to servable, vs a raw S3 GET plus safetensors parse (Step 4 (d)).

A node (its reconciler and engine, in this process) follows the desired-residency topic
on the real Kafka and loads from the real S3. For each of N adapters (rank 16 on
q/k/v/o of a ~58M-parameter Llama, about 2 MB each) one run measures, alternately:
  * event → servable: commit an intent to the desired topic, until the revision is in a
    slot and requests can use it (Kafka delivery, S3 GETs, sha256, parse, slot copy);
  * the baseline: `get_object` of the same weights and `safetensors.torch.load`.
Target: the median of the first <= 1.5x the median of the second. The clock starts when
the intent is committed (the event exists); publishing it (the controller's transaction)
is reported beside it. The ratio is taken per round (each round its own adapters); the
figure is the median over the rounds, with their spread, so one noisy spell of a shared
machine shows as spread rather than as the figure.

  python -m bench.residency_load [--rounds 5] [--adapters 40] [--rank 16]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field

import torch
from minio import Minio
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from bench.common import bar_chart_svg, record, servers
from bench.serving_scale import base_config
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import DesiredWriter, ResidencyTopics
from mint.backends.s3 import S3Settings, client, ensure_bucket
from mint.backends.s3_objects import S3Objects
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST
from mint.models.base import build_base, fingerprint
from mint.serving.catalog import Catalog, revision_key
from mint.serving.engine import ServingEngine, key_of
from mint.serving.host_reserve import RESERVE_BYTES, HostReserve
from mint.serving.packed_model import PackedLoraModel
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable
from services.inference.metrics import NodeMetrics
from services.inference.reconciler import Reconciler

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def put(s3: Minio, bucket: str, key: str, data: bytes) -> None:
    s3.put_object(bucket, key, io.BytesIO(data), len(data))


def publish(s3: Minio, bucket: str, base_fp: str, i: int, rank: int) -> RevisionRef:
    """One revision's files in the projection layout, as the projector writes them."""
    config = base_config()
    g = torch.Generator().manual_seed(i)
    state = {}
    for layer in range(config.num_hidden_layers):
        for target in TARGETS:
            out = config.hidden_size
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(rank, config.hidden_size, generator=g)
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 0.01
    weights = save_safetensors(state)
    adapter, sha = f"bench/a{i}", hashlib.sha256(weights).hexdigest()
    lora = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(TARGETS),
        "base_model_name_or_path": "bench",
    }
    adapter_id, config_json = uuid.uuid4().hex, json.dumps(lora)
    manifest = {
        "adapter_id": adapter_id,
        "config_json": config_json,
        "base_fingerprint": base_fp,
        "files": {ADAPTER_WEIGHTS: {"sha256": sha, "size": len(weights)}},
    }
    put(s3, bucket, revision_key(adapter, 1, ADAPTER_WEIGHTS), weights)
    put(s3, bucket, revision_key(adapter, 1, ADAPTER_CONFIG), config_json.encode())
    put(s3, bucket, revision_key(adapter, 1, MANIFEST), json.dumps(manifest).encode())
    # As the router resolves it from the manifest, and the controller passes it on.
    return RevisionRef(adapter_id, adapter, 1, sha, len(weights), base_fp, config_json)


def raw_get_and_parse(s3: Minio, bucket: str, ref: RevisionRef) -> float:
    started = time.perf_counter()
    response = s3.get_object(bucket, revision_key(ref.adapter, 1, ADAPTER_WEIGHTS))
    try:
        tensors = load_safetensors(response.read())
    finally:
        response.close()
        response.release_conn()
    elapsed = time.perf_counter() - started
    assert tensors
    return elapsed


def event_to_servable(
    writer: DesiredWriter, engine: ServingEngine, ref: RevisionRef, timeout_s: float = 30.0
) -> tuple[float, float]:
    """(publishing the intent, from its commit until servable)."""
    started = time.perf_counter()
    writer.write([("bench-node", ref, False)], [], term=1)
    committed = time.perf_counter()
    if not engine.wait_resident(ref, timeout_s):
        raise TimeoutError(f"{ref.label} never became resident")
    # When the node's engine had it in a slot: not when this thread got the GIL back.
    return committed - started, engine.servable_at[key_of(ref)] - committed


@dataclass
class Round:
    ours: list[float] = field(default_factory=list)  # event -> servable, seconds
    raw: list[float] = field(default_factory=list)  # GET + parse, seconds
    publishing: list[float] = field(default_factory=list)

    @property
    def ours_ms(self) -> float:
        return statistics.median(self.ours) * 1000

    @property
    def raw_ms(self) -> float:
        return statistics.median(self.raw) * 1000

    @property
    def ratio(self) -> float:
        return self.ours_ms / self.raw_ms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--adapters", type=int, default=40, help="per round")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    total = args.rounds * args.adapters
    with servers() as env:
        settings = S3Settings(
            env["MINT_S3_ENDPOINT"], env["MINT_S3_ACCESS_KEY"], env["MINT_S3_SECRET_KEY"]
        )
        kafka = KafkaConnection(env["MINT_KAFKA_BOOTSTRAP"])
        s3, bucket = client(settings), f"bench-load-{uuid.uuid4().hex[:8]}"
        ensure_bucket(s3, bucket)
        base = build_base(base_config(), seed=0)
        base_fp = fingerprint(base)
        refs = [publish(s3, bucket, base_fp, i, args.rank) for i in range(total)]
        model = PackedLoraModel(base, list(TARGETS), total + 1, args.rank)
        engine = ServingEngine(model, SlotTable(total + 1, 2**34), base_fp, 1024, 0, 1)
        topics = ResidencyTopics(bucket)
        topics.create(kafka)
        reconciler = Reconciler(
            "bench-node",
            "127.0.0.1:0",
            engine,
            Catalog(S3Objects(s3, bucket)),
            kafka,
            topics,
            NodeMetrics(),
            report_s=5.0,
            reserve=HostReserve(RESERVE_BYTES),  # as a CPU node has
        )
        reconciler.start()
        reconciler.ready.wait(timeout=60)
        writer = DesiredWriter(kafka, topics, f"{bucket}-writer")
        writer.activate()
        raw_get_and_parse(s3, bucket, refs[0])  # warm the connection pool
        rounds = [Round() for _ in range(args.rounds)]
        for i, ref in enumerate(refs):
            round_ = rounds[i // args.adapters]
            round_.raw.append(raw_get_and_parse(s3, bucket, ref))
            publish_s, servable_s = event_to_servable(writer, engine, ref)
            round_.publishing.append(publish_s)
            round_.ours.append(servable_s)
        writer.close()
        reconciler.stop()
    report(args, refs[0].weights_size, rounds)


def report(args: argparse.Namespace, adapter_bytes: int, rounds: list[Round]) -> None:
    ratios = [r.ratio for r in rounds]
    ratio = statistics.median(ratios)
    ours_ms = statistics.median(r.ours_ms for r in rounds)
    raw_ms = statistics.median(r.raw_ms for r in rounds)
    publish_ms = statistics.median(statistics.median(r.publishing) * 1000 for r in rounds)
    ours_all = [x for r in rounds for x in r.ours]
    raw_all = [x for r in rounds for x in r.raw]
    print(
        f"{args.rounds} rounds of {args.adapters} adapters of {adapter_bytes / 1e6:.1f} MB "
        f"(rank {args.rank}, q/k/v/o, 8 layers)"
    )
    for n, r in enumerate(rounds, 1):
        print(f"  round {n}: {r.ours_ms:6.1f} ms vs {r.raw_ms:6.1f} ms = {r.ratio:.2f}x")
    print(f"  residency event -> servable      median {ours_ms:7.1f} ms (p90 {_p90(ours_all):.1f})")
    print(f"  raw S3 GET + safetensors parse   median {raw_ms:7.1f} ms (p90 {_p90(raw_all):.1f})")
    print(f"  (publishing the intent: a Kafka transaction, median {publish_ms:.1f} ms)")
    print(
        f"(d) event -> servable / raw GET + parse = {ratio:.2f}x, median of {len(rounds)} "
        f"rounds (spread {min(ratios):.2f}-{max(ratios):.2f}x; target <= 1.5x)"
    )
    path = record(
        "residency_load",
        {
            "rounds": args.rounds,
            "adapters_per_round": args.adapters,
            "rank": args.rank,
            "adapter_bytes": adapter_bytes,
            "event_to_servable_ms_median": round(ours_ms, 2),
            "raw_get_parse_ms_median": round(raw_ms, 2),
            "event_to_servable_ms_p90": round(_p90(ours_all), 2),
            "raw_get_parse_ms_p90": round(_p90(raw_all), 2),
            "publish_intent_ms_median": round(publish_ms, 2),
            "ratio_d": round(ratio, 3),
            "ratio_d_min": round(min(ratios), 3),
            "ratio_d_max": round(max(ratios), 3),
            "round_ratios": [round(x, 3) for x in ratios],
            "target": "<= 1.5",
        },
    )
    chart = bar_chart_svg(
        "residency_load",
        f"Time to load one adapter: {ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x "
        f"over {len(rounds)} rounds)",
        [("residency event -> servable", ours_ms), ("raw S3 GET + safetensors parse", raw_ms)],
        "ms",
        fmt=".1f",
    )
    print(f"recorded in {path} and {chart}")


def _p90(samples: list[float]) -> float:
    return sorted(samples)[int(0.9 * (len(samples) - 1))] * 1000


if __name__ == "__main__":
    main()
