"""The demo's serving half: what an inference node does, in process. Revisions go into
packed slots and one mixed batch serves them beside the bare base, one forward pass per
step; a revision is also read back from the PEFT layout and generated with PEFT itself,
which must give the same tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from mint.domain.adapter import Adapter
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST, revision_prefix
from mint.models.base import build_base, tiny_llama_config
from mint.registry import Registry
from mint.serving.engine import ServingEngine
from mint.serving.loading import weights_from_bytes
from mint.serving.packed_model import PackedLoraModel
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.residency import SlotTable
from mint.serving.scheduler import Scheduler
from mint.tokenizer import byte_tokenizer

NEW_TOKENS = 12


def write_peft_layout(
    registry: Registry, adapter: Adapter, channel: str, base_fp: str, out: Path
) -> Path:
    """The channel's revision as the projector lays it out (PEFT files and a manifest)."""
    revision = adapter.resolve(channel)
    folder = out / revision_prefix(adapter.ref.tenant, adapter.ref.name, revision.number)
    folder.mkdir(parents=True)
    (folder / ADAPTER_CONFIG).write_text(revision.config_json)
    weights = registry.blobs.get(adapter.adapter_id, revision.weights_sha256)
    (folder / ADAPTER_WEIGHTS).write_bytes(weights)
    manifest = {
        "adapter": str(adapter.ref),
        "revision": revision.number,
        "base": base_fp,
        "weights_sha256": revision.weights_sha256,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return folder


def serve_mixed(
    registry: Registry,
    adapters: dict[str, Adapter],
    base_fp: str,
    peft_dir: Path,
    prompt: str,
) -> dict[str, Any]:
    """Each adapter's stable revision and the bare base in one batch; the first
    adapter's tokens compared with PEFT generating from `peft_dir`."""
    model = PackedLoraModel(build_base(tiny_llama_config(), seed=0), ["q_proj", "v_proj"], 8, 16)
    engine = ServingEngine(model, SlotTable(8, 2**26), base_fp, 64, pad_token_id=0, eos_token_id=1)
    asks: dict[str, list[tuple[RevisionRef, float]]] = {}
    for name, adapter in adapters.items():
        rev = adapter.resolve("stable")
        blob = registry.blobs.get(adapter.adapter_id, rev.weights_sha256)
        ref = RevisionRef(
            adapter.adapter_id, str(adapter.ref), rev.number, rev.weights_sha256, len(blob), base_fp
        )
        engine.load(ref, weights_from_bytes(blob, rev.weights_sha256, rev.config_json))
        asks[f"{name}@stable"] = [(ref, 1.0)]
    asks["bare base"] = []
    tokenizer = byte_tokenizer()
    ids = list(tokenizer(prompt)["input_ids"])
    scheduler = Scheduler(engine)
    running = {
        who: scheduler.submit(parts, ids, Sampling(NEW_TOKENS)) for who, parts in asks.items()
    }
    while scheduler.step():  # every step: one forward pass for the whole batch
        pass
    tokens = {who: list(g.result().tokens) for who, g in running.items()}
    first = next(iter(asks))
    return {
        "batch": max(g.result().batch_size for g in running.values()),
        "tokens": tokens,
        "texts": {who: tokenizer.decode(t) for who, t in tokens.items()},
        "alice_equals_peft": tokens[first] == _peft_tokens(peft_dir, ids),
    }


def _peft_tokens(peft_dir: Path, ids: list[int]) -> list[int]:
    reference = PeftModel.from_pretrained(build_base(tiny_llama_config(), seed=0), peft_dir)
    prompt = torch.tensor([ids])
    with torch.no_grad():
        generated = reference.generate(  # type: ignore[no-untyped-call]
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),  # every position is a prompt token
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return [int(t) for t in generated[0, len(ids) :].tolist()]
