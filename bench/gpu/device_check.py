"""Where a node's tensors live, checked on the machine itself: builds the node's engine on
`--device` in `--dtype`, loads adapters (more than it has slots), promotes them back from
host memory, runs a mixed batch against PEFT, and writes what it found to
`<out>/device_check.json` (`--out`, default `$OUT`, else the current folder).

  python -m bench.gpu.device_check --device cuda --dtype bfloat16 --hidden 1024 --layers 8
  python -m bench.gpu.device_check --device cpu        # the CPU smoke test CI runs

Every check runs even if an earlier one failed (each records its error); the exit status
is 1 if any failed. It needs torch, transformers and peft only (no pydantic, Kafka or S3
clients: the GPU machine has none of them). bench/README.md says how to run it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import PeftModel

from mint.layout import ADAPTER_WEIGHTS
from mint.models.base import build_base, place, tiny_llama_config
from mint.models.lora import attach_lora, load_adapter_weights
from mint.serving.device import TensorHome, resolve
from mint.serving.engine import GenerationJob, ServingEngine, key_of
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.residency import SlotTable

ALPHA, TARGETS = 16, ("q_proj", "v_proj")


class Checks:
    """Runs named checks, recording each one's result or its error."""

    def __init__(self) -> None:
        self.found: dict[str, Any] = {}
        self.failed: list[str] = []

    def run(self, name: str, check: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            result = check()
            self.found[name] = {"ok": True, **(result if isinstance(result, dict) else {})}
            return result
        except Exception as exc:  # recorded: the other checks still run
            self.failed.append(name)
            self.found[name] = {"ok": False, "error": repr(exc), "trace": traceback.format_exc()}
            return None
        finally:
            self.found[name]["seconds"] = round(time.perf_counter() - started, 3)


def environment() -> dict[str, Any]:
    found: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name(0)
        found["capability"] = list(torch.cuda.get_device_capability(0))
        found["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30)
    return found


def make_adapters(args: argparse.Namespace, folder: Path) -> list[Path]:
    """PEFT folders of rank `--rank` LoRAs on q/v, random A and B (scaled so they matter)."""
    folders = []
    for i in range(args.adapters):
        lora = attach_lora(base(args), rank=args.rank, alpha=ALPHA, targets=TARGETS, seed=i + 1)
        with torch.no_grad():
            for p in lora.parameters():
                if p.requires_grad:
                    p.mul_(4)
        lora.save_pretrained(str(folder / f"a{i}"))
        folders.append(folder / f"a{i}")
    return folders


def base(args: argparse.Namespace) -> Any:
    config = tiny_llama_config(hidden=args.hidden, layers=args.layers, heads=args.heads)
    return build_base(config, seed=0)


def ref(i: int) -> RevisionRef:
    return RevisionRef(f"id-{i}", f"check/a{i}", 1, "0" * 64, 0)


def build_engine(args: argparse.Namespace, home: TensorHome) -> ServingEngine:
    model = base(args)
    place(model, home.device, home.dtype)  # as the node does
    packed = PackedLoraModel(model, list(TARGETS), args.slots + 1, args.rank)
    return ServingEngine(packed, SlotTable(args.slots + 1, 2**34), "", 4096, 0, 1)


def placement(engine: ServingEngine, home: TensorHome) -> dict[str, Any]:
    tensors = list(engine.model.base.parameters()) + list(engine.model.base.buffers())
    misplaced = [t for t in tensors if t.device != home.device]
    weights = list(engine.model.base.parameters())
    wrong_dtype = [t for t in weights if t.dtype != home.dtype]
    banks = [bank for bank, _ in engine.model.banks]
    assert not misplaced, f"{len(misplaced)} of {len(tensors)} tensors are not on {home.device}"
    assert not wrong_dtype, f"{len(wrong_dtype)} tensors are not {home.dtype}"
    assert all(b.A.device == home.device and b.A.dtype == home.dtype for b in banks)
    assert engine.model_device == home.device and engine.model_dtype == home.dtype
    return {"tensors": len(tensors), "bank_bytes": sum(b.A.nbytes + b.B.nbytes for b in banks)}


def load_all(engine: ServingEngine, folders: list[Path], home: TensorHome) -> dict[str, Any]:
    times = []
    for i, folder in enumerate(folders):
        state = load_adapter_weights((folder / ADAPTER_WEIGHTS).read_bytes())
        weights = LoraWeights.from_peft(state, ALPHA)
        started = time.perf_counter()
        engine.load(ref(i), weights)
        times.append((time.perf_counter() - started) * 1000)
    held = [engine.host.get(k).weights for k in engine.host]
    tensors = [t for w in held for a, b, _ in w.modules.values() for t in (a, b)]
    assert all(t.dtype == home.dtype and t.device.type == "cpu" for t in tensors)
    pinned = all(t.is_pinned() for t in tensors)
    assert pinned == home.pins, f"host copies pinned: {pinned}, expected {home.pins}"
    tiers = {t.tier: vars(t) for t in engine.tiers()}
    assert tiers["host"]["adapters"] == len(folders)
    return {"load_ms_median": statistics.median(times), "pinned": pinned, "tiers": tiers}


def promotions(engine: ServingEngine, adapters: int) -> dict[str, Any]:
    """Round robin over more adapters than slots: from the second round on, each request
    copies its adapter from host memory into a slot (the slot must then hold it)."""
    counted: list[int] = []
    engine.on_promote = lambda: counted.append(1)
    times = []
    for _ in range(2):
        for i in range(adapters):
            started = time.perf_counter()
            with engine.lease([(ref(i), 1.0)]) as lease:
                times.append((time.perf_counter() - started) * 1000)
                held = engine.host.get(key_of(ref(i))).weights
                name, (a, _, _) = next(iter(held.modules.items()))
                slots = engine.model.layers[name].slots
                assert torch.equal(slots.A[lease.slot, : a.shape[0]].cpu(), a)
    assert len(counted) >= adapters, f"{len(counted)} promotions"
    return {"promotions": len(counted), "acquire_ms_median": statistics.median(times)}


def mixed_rows(args: argparse.Namespace) -> list[tuple[list[int], int | None]]:
    """(prompt ids, adapter index or None for the bare base), prompts of several lengths;
    as many distinct adapters as there are slots (a batch cannot use more)."""
    g = torch.Generator().manual_seed(7)
    rows = []
    for i in range(args.batch):
        length = args.prompt - (i % 4) * (args.prompt // 8)
        ids = torch.randint(3, 256, (length,), generator=g).tolist()
        rows.append((ids, None if i % 4 == 3 else i % min(args.adapters, args.slots)))
    return rows


def peft_reference(
    args: argparse.Namespace, folders: list[Path], dtype: torch.dtype, home: TensorHome
) -> Any:
    model = base(args)
    place(model, home.device, dtype)
    reference = PeftModel.from_pretrained(model, str(folders[0]), adapter_name="a0")
    for i, folder in enumerate(folders[1:], start=1):
        reference.load_adapter(str(folder), adapter_name=f"a{i}")
    reference.eval()
    return reference


def logits_of(model: Any, ids: list[int], adapter: int | None, device: torch.device) -> Any:
    name = "__base__" if adapter is None else f"a{adapter}"
    with torch.no_grad():
        return model(torch.tensor([ids], device=device), adapter_names=[name]).logits[0].float()


def mixed_forward(
    engine: ServingEngine, args: argparse.Namespace, folders: list[Path], home: TensorHome
) -> dict[str, Any]:
    """One forward pass per row through the packed model vs PEFT, same dtype and float32."""
    rows = mixed_rows(args)
    same, exact = (peft_reference(args, folders, d, home) for d in (home.dtype, torch.float32))
    errors, peft_errors, agree = [], [], 0
    for ids, adapter in rows:
        parts = [] if adapter is None else [(ref(adapter), 1.0)]
        with torch.no_grad(), engine.lease(parts) as lease:
            got = engine.model(torch.tensor([ids], device=home.device), torch.tensor([lease.slot]))
        want = logits_of(exact, ids, adapter, home.device)
        errors.append(float((got[0].float() - want).abs().max()))
        peft_errors.append(float((logits_of(same, ids, adapter, home.device) - want).abs().max()))
        agree += int((got[0].argmax(-1) == want.argmax(-1)).sum())
    positions = sum(len(ids) for ids, _ in rows)
    return {
        "max_abs_logit_error_vs_fp32": max(errors),
        "peft_same_dtype_max_abs_error_vs_fp32": max(peft_errors),
        "argmax_agreement_vs_fp32": agree / positions,
        "logit_scale": float(want.abs().max()),
    }


def generate_mixed(
    engine: ServingEngine, args: argparse.Namespace, folders: list[Path], home: TensorHome
) -> dict[str, Any]:
    """engine.generate on a mixed batch; each step teacher-forced through PEFT (same
    dtype): the share of our greedy tokens that are PEFT's own choice."""
    rows = mixed_rows(args)
    leases = [engine.acquire([] if a is None else [(ref(a), 1.0)]) for _, a in rows]
    try:
        started = time.perf_counter()
        jobs = [GenerationJob(ids, x.slot) for (ids, _), x in zip(rows, leases, strict=True)]
        out = engine.generate(jobs, Sampling(max_new_tokens=args.new_tokens))
        seconds = time.perf_counter() - started
    finally:
        for lease in leases:
            engine.release(lease)
    same = peft_reference(args, folders, home.dtype, home)
    agree = steps = 0
    for (ids, adapter), tokens in zip(rows, out, strict=True):
        logits = logits_of(same, ids + tokens, adapter, home.device)[len(ids) - 1 : -1]
        agree += int((logits.argmax(-1).cpu() == torch.tensor(tokens)).sum())
        steps += len(tokens)
    rate = agree / steps
    return {"token_agreement_vs_peft_same_dtype": rate, "tokens_per_s": steps / seconds}


def timing(engine: ServingEngine, args: argparse.Namespace, home: TensorHome) -> dict[str, Any]:
    """A mixed batch's forward pass vs the bare base's, same shapes (medians of
    `--repeats`, after two warm-up passes)."""
    ids = torch.randint(3, 256, (args.batch, args.prompt), device=home.device)
    mixed = torch.tensor([1 + i % args.slots for i in range(args.batch)])

    def run(slots: torch.Tensor) -> float:
        times = []
        for _ in range(args.repeats + 2):
            sync(home)
            started = time.perf_counter()
            with torch.no_grad():
                engine.model(ids, slots)
            sync(home)
            times.append(time.perf_counter() - started)
        return statistics.median(times[2:]) * 1000

    packed, bare = run(mixed), run(torch.zeros(args.batch, dtype=torch.long))
    return {"packed_ms": packed, "bare_ms": bare, "packed_over_bare": packed / bare}


def sync(home: TensorHome) -> None:
    if home.device.type == "cuda":
        torch.cuda.synchronize(home.device)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--adapters", type=int, default=6)
    parser.add_argument("--slots", type=int, default=3, help="device slots (fewer than adapters)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    return parser.parse_args()


def main() -> None:
    args = parse()
    checks = Checks()
    checks.found["environment"] = environment()
    home = checks.run("resolve", lambda: resolve(args.device, args.dtype))
    if home is not None:
        device, dtype = home.describe()
        checks.found["resolve"].update(device=device, dtype=dtype)
        run_checks(checks, args, home)
    checks.found["failed"] = checks.failed
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "device_check.json"
    found = {"args": {k: str(v) for k, v in vars(args).items()}, **checks.found}
    report.write_text(json.dumps(found, indent=2, default=str))
    print(f"wrote {report}; failed: {', '.join(checks.failed) or 'none'}")
    raise SystemExit(1 if checks.failed else 0)


def run_checks(checks: Checks, args: argparse.Namespace, home: TensorHome) -> None:
    with tempfile.TemporaryDirectory(prefix="device-check-") as folder:
        started = time.perf_counter()
        folders = make_adapters(args, Path(folder))
        engine = build_engine(args, home)
        checks.found["setup_seconds"] = round(time.perf_counter() - started, 3)
        checks.run("placement", lambda: placement(engine, home))
        checks.run("load", lambda: load_all(engine, folders, home))
        checks.run("promotion", lambda: promotions(engine, args.adapters))
        checks.run("mixed_forward", lambda: mixed_forward(engine, args, folders, home))
        checks.run("generate", lambda: generate_mixed(engine, args, folders, home))
        checks.run("timing", lambda: timing(engine, args, home))
    if home.device.type == "cuda":
        checks.found["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30


if __name__ == "__main__":
    main()
