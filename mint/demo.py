"""End-to-end demo on the embedded back end (a SQLite log and a local blob folder).

A base model is built in code and registered; an adapter is created, two LoRA revisions
are published through the registry with provenance, one is evaluated and promoted past a
gate to `stable`; the log's hash chain is verified; and the stable revision is read back
from the blob store in the PEFT layout and loaded with `PeftModel.from_pretrained`,
reproducing the published adapter's outputs exactly. Finally both revisions are loaded
into packed serving slots and one mixed batch serves stable, latest, a weighted stack of
both and the bare base, with stable's tokens checked against PEFT's own generate.

  python -m mint.demo [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import uuid
import warnings
from pathlib import Path

import torch
from peft import PeftModel

from mint.backends.local_blobs import LocalBlobStore, local_kek
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain.adapter import Adapter
from mint.domain.names import AdapterRef
from mint.eventlog.chain import verify_stream
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Principal, Registry, Upload
from mint.serving.engine import ServingEngine
from mint.serving.loading import weights_from_bytes
from mint.serving.packed_model import PackedLoraModel
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.residency import SlotTable
from mint.serving.scheduler import Scheduler

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"demo"}))
REF = AdapterRef("demo", "greeter")
PROMPT = torch.arange(16).reshape(2, 8)


def _step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _train(seed: int, staging: Path) -> tuple[PeftModel, Upload]:
    """Stand-in for a training run: a LoRA with random weights, saved by peft."""
    model = attach_lora(build_base(tiny_llama_config(), seed=0), rank=8, seed=seed)
    folder = staging / f"run-{seed}"
    model.save_pretrained(str(folder))
    return model, Upload(
        (folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes()
    )


def _mean_logprob(model: torch.nn.Module) -> float:
    with torch.no_grad():
        logits = model(PROMPT).logits[:, :-1]
        logprobs = torch.log_softmax(logits, -1).gather(-1, PROMPT[:, 1:, None])
    return float(logprobs.mean())


def run(out: Path) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    blobs = LocalBlobStore(out, local_kek(out / "kek"))
    registry = Registry(SqliteEventLog(out / "events.db"), blobs)
    base = build_base(tiny_llama_config(), seed=0)
    base_fp = fingerprint(base)
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    registry.register_base(OPS, "tiny-llama", base_fp, shapes, uuid.uuid4().hex)
    _step(
        f"registered base tiny-llama ({sum(p.numel() for p in base.parameters()):,} "
        f"parameters), fingerprint {base_fp[:16]}…"
    )

    created = registry.create_adapter(
        ALICE, REF, base_fp, uuid.uuid4().hex, labels={"kind": "style"}
    )
    _step(f"created {REF} (adapter id {created.adapter.adapter_id})")
    first_model, first = _train(1, out / "staging")
    registry.publish_revision(
        ALICE,
        REF,
        first,
        uuid.uuid4().hex,
        training_run_id="run-1",
        hyperparameters={"rank": "8", "seed": "1"},
    )
    _, second = _train(2, out / "staging")
    published = registry.publish_revision(
        ALICE, REF, second, uuid.uuid4().hex, parents=(1,), training_run_id="run-2"
    )
    _step(
        f"published revisions 1 and 2 (2's parent: 1); latest -> "
        f"{published.adapter.channels['latest']}"
    )

    score = _mean_logprob(first_model)
    registry.set_gate(ALICE, REF, "stable", "smoke", uuid.uuid4().hex)
    registry.record_evaluation(
        ALICE,
        REF,
        1,
        "smoke",
        {"mean_logprob": score},
        passed=score > -10,
        request_id=uuid.uuid4().hex,
    )
    promoted = registry.move_channel(
        ALICE, REF, "stable", 1, uuid.uuid4().hex, reason="passed smoke"
    )
    stable = promoted.adapter.resolve("stable")
    _step(f"evaluated revision 1 (mean log-prob {score:.3f}) and promoted it to stable")

    history = registry.history(ALICE, REF)
    problems = verify_stream((r.envelope, str(r.position)) for r in history)
    for r in history:
        print(
            f"    v{r.envelope.stream_version:<2} {r.envelope.event_type:28} by {r.envelope.actor}"
        )
    if problems:
        raise SystemExit(f"hash chain broken: {problems}")
    _step(f"history: {len(history)} events, hash chain intact")

    revision_dir = out / "adapters" / REF.tenant / REF.name / "revisions" / str(stable.number)
    revision_dir.mkdir(parents=True)
    (revision_dir / ADAPTER_CONFIG).write_text(stable.config_json)
    (revision_dir / ADAPTER_WEIGHTS).write_bytes(registry.weights(OPS, REF, stable.number))
    manifest = {
        "adapter": str(REF),
        "revision": stable.number,
        "base": base_fp,
        "weights_sha256": stable.weights_sha256,
    }
    (revision_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    reloaded = PeftModel.from_pretrained(build_base(tiny_llama_config(), seed=0), revision_dir)
    with torch.no_grad():
        same = torch.equal(reloaded(PROMPT).logits, first_model(PROMPT).logits)
    if not same:
        raise SystemExit("the stable revision does not reproduce the published adapter")
    _step(
        f"stable = revision {stable.number}, read back from the blob store into "
        f"{revision_dir}: PeftModel.from_pretrained reproduces it exactly"
    )
    served = _serve(registry, promoted.adapter, base_fp, first_model)
    _step(
        f"served stable, latest, a 50/50 stack of both and the bare base in one batch of "
        f"{served['batch']}; stable's tokens equal PEFT's: {served['stable_equals_peft']}"
    )
    _step(
        f"audit it: python -m mint.audit --backend embedded --data-dir {out} "
        "verify | replay | provenance demo/greeter --svg lineage.svg"
    )
    return {
        "revision_dir": str(revision_dir),
        "sha256": stable.weights_sha256,
        "base": base_fp,
        "events": len(history),
        "served": served,
    }


def _serve(
    registry: Registry, adapter: Adapter, base_fp: str, reference: PeftModel
) -> dict[str, object]:
    """What an inference node does, in process: both revisions into packed slots, then
    one mixed batch (stable, latest, a weighted stack, none) in one forward per step."""
    model = PackedLoraModel(build_base(tiny_llama_config(), seed=0), ["q_proj", "v_proj"], 8, 16)
    engine = ServingEngine(model, SlotTable(8, 2**26), base_fp, 64, pad_token_id=0, eos_token_id=1)
    refs = {}
    for channel in ("stable", "latest"):
        rev = adapter.resolve(channel)
        blob = registry.weights(OPS, REF, rev.number)
        ref = RevisionRef(
            adapter.adapter_id, str(REF), rev.number, rev.weights_sha256, len(blob), base_fp
        )
        engine.load(ref, weights_from_bytes(blob, rev.weights_sha256, rev.config_json))
        refs[channel] = ref
    asks = [[(refs["stable"], 1.0)], [(refs["latest"], 1.0)], [(r, 0.5) for r in refs.values()], []]
    prompt = PROMPT[0].tolist()
    scheduler = Scheduler(engine)
    running = [scheduler.submit(parts, prompt, Sampling(8)) for parts in asks]
    while scheduler.step():  # every step: one forward pass for the four together
        pass
    outputs = [g.result().tokens for g in running]
    batch = max(g.result().batch_size for g in running)
    with torch.no_grad():
        expected = reference.generate(  # type: ignore[no-untyped-call]
            input_ids=PROMPT[:1],
            attention_mask=torch.ones_like(
                PROMPT[:1]
            ),  # token 0 is a prompt token here, not padding
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
    return {
        "batch": batch,
        "tokens": dict(zip(["stable", "latest", "stack", "base"], outputs, strict=True)),
        "stable_equals_peft": outputs[0] == expected,
    }


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
        help="where the log, blobs and projection go; replaced on each run (default: %(default)s)",
    )
    args = parser.parse_args()
    # transformers deprecation notices raised from inside peft: not actionable here.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    print(json.dumps(run(args.out), indent=2))


if __name__ == "__main__":
    main()
