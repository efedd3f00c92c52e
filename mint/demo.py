"""End-to-end demo, embedded back end (no servers needed).

Step 1 of the project: a base model built in code, a LoRA adapter trained by nobody in
particular (random weights), published as one revision in the PEFT layout under a local
folder, and loaded back with peft from those files. Later steps grow this into the full
registry → projection → serving path.

  python -m mint.demo [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
import warnings
from pathlib import Path

import torch
from google.protobuf.timestamp_pb2 import Timestamp
from peft import PeftModel

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.models.lora import attach_lora, load_adapter_weights
from mint.v1.events_pb2 import EventEnvelope


def _step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(out: Path, tenant: str = "demo", name: str = "greeter") -> dict[str, str]:
    config = tiny_llama_config()
    base = build_base(config, seed=0)
    base_fp = fingerprint(base)
    _step(
        f"base model: tiny llama, {sum(p.numel() for p in base.parameters()):,} parameters, "
        f"fingerprint {base_fp[:16]}…"
    )

    model = attach_lora(build_base(config, seed=0), rank=8, seed=1)
    staging = out / "staging"
    model.save_pretrained(str(staging))
    weights = (staging / ADAPTER_WEIGHTS).read_bytes()
    blob_sha = hashlib.sha256(weights).hexdigest()
    _step(f"LoRA adapter rank 8 on q/v: {len(weights):,} bytes, sha256 {blob_sha[:16]}…")

    revision_dir = out / "adapters" / tenant / name / "revisions" / "1"
    revision_dir.mkdir(parents=True, exist_ok=True)
    blob = out / "blobs" / "sha256" / blob_sha[:2] / blob_sha
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(weights)
    (revision_dir / ADAPTER_WEIGHTS).write_bytes(weights)
    (revision_dir / ADAPTER_CONFIG).write_bytes((staging / ADAPTER_CONFIG).read_bytes())
    manifest = {
        "tenant": tenant,
        "name": name,
        "revision": 1,
        "base_fingerprint": base_fp,
        "weights_sha256": blob_sha,
    }
    (revision_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    envelope = EventEnvelope(
        event_id=str(uuid.uuid4()),
        event_type="mint.v1.RevisionPublished",
        schema_version=1,
        stream_id=f"{tenant}/{name}",
        stream_version=1,
        actor="demo",
        occurred_at=Timestamp(seconds=int(time.time())),
        payload=json.dumps(manifest).encode(),
    )
    _step(
        f"published {tenant}/{name}@1 to {revision_dir} "
        f"(event {len(envelope.SerializeToString())} bytes)"
    )

    assert load_adapter_weights(weights).keys(), "no tensors in the adapter"
    reloaded = PeftModel.from_pretrained(build_base(config, seed=0), revision_dir)
    tokens = torch.arange(16).reshape(2, 8)
    with torch.no_grad():
        same = torch.allclose(reloaded(tokens).logits, model(tokens).logits, atol=1e-6)
        changed = not torch.allclose(reloaded(tokens).logits, base(tokens).logits)
    if not (same and changed):
        raise SystemExit("the reloaded adapter does not reproduce the published one")
    _step("loaded it back with PeftModel.from_pretrained: outputs match the original adapter")
    return {"revision_dir": str(revision_dir), "sha256": blob_sha, "base": base_fp}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mint.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".mint/demo"),
        help="where the local blob store and projection go (default: %(default)s)",
    )
    args = parser.parse_args()
    # transformers deprecation notices raised from inside peft: not actionable here.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    result = run(args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
