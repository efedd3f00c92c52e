"""Where a node's tensors live, checked on the machine itself: builds the node's engine on
`--device` in `--dtype`, loads adapters (more than it has slots), promotes them back from
host memory, runs a mixed batch against PEFT, decodes it again from CUDA graphs, times
the gathered-LoRA kernel against the torch path per decode step (`lora_kernel.py`), and
writes what it found to
`<out>/device_check.json` (`--out`, default `$OUT`, else the current folder).

  python -m bench.gpu.device_check --device cuda --dtype bfloat16 --hidden 1024 --layers 8
  python -m bench.gpu.device_check --device cpu        # the CPU smoke test CI runs

Every check runs even if an earlier one failed (each records its error); the exit status
is 1 if any failed. It needs torch, transformers and peft only (no pydantic, Kafka or S3
clients: the GPU machine has none of them). bench/README.md says how to run it there.
"""

from __future__ import annotations

import argparse
import copy
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
from peft import LoraConfig, PeftModel
from safetensors.torch import save as save_safetensors

from bench.gpu import lora_kernel
from mint.layout import ADAPTER_WEIGHTS
from mint.models.base import build_base, place, tiny_llama_config
from mint.models.lora import load_adapter_weights
from mint.serving.decode_graphs import DecodeGraphs
from mint.serving.device import TensorHome, resolve
from mint.serving.engine import ServingEngine, key_of
from mint.serving.packed_model import PEFT_PREFIX, LoraWeights, PackedLoraModel
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.residency import SlotTable
from mint.serving.scheduler import Scheduler

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
    """PEFT folders (adapter_config.json, adapter_model.safetensors) of rank-`--rank` LoRAs
    on q/v with random A and B, large enough to change the outputs."""
    g, hidden = torch.Generator().manual_seed(1), args.hidden
    folders = []
    for i in range(args.adapters):
        state = {}
        for layer in range(args.layers):
            for target in TARGETS:
                prefix = f"{PEFT_PREFIX}model.layers.{layer}.self_attn.{target}"
                a = torch.randn(args.rank, hidden, generator=g) / hidden**0.5
                state[f"{prefix}.lora_A.weight"] = a
                state[f"{prefix}.lora_B.weight"] = torch.randn(hidden, args.rank, generator=g)
        out = folder / f"a{i}"
        LoraConfig(r=args.rank, lora_alpha=ALPHA, target_modules=list(TARGETS)).save_pretrained(
            str(out)
        )
        (out / ADAPTER_WEIGHTS).write_bytes(save_safetensors(state))
        folders.append(out)
    return folders


class Bases:
    """The check's base, built once on the CPU in float32 (a large one takes a while);
    every model here starts from a copy of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        config = tiny_llama_config(hidden=args.hidden, layers=args.layers, heads=args.heads)
        self.cpu = build_base(config, seed=0)

    def placed(self, device: torch.device, dtype: torch.dtype) -> Any:
        model = copy.deepcopy(self.cpu)
        place(model, device, dtype)  # as the node places its base
        return model


def ref(i: int) -> RevisionRef:
    return RevisionRef(f"id-{i}", f"check/a{i}", 1, "0" * 64, 0)


def build_engine(args: argparse.Namespace, bases: Bases, home: TensorHome) -> ServingEngine:
    model = bases.placed(home.device, home.dtype)
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


def peft_reference(bases: Bases, folders: list[Path], dtype: torch.dtype, home: TensorHome) -> Any:
    model = bases.placed(home.device, dtype)
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
    engine: ServingEngine, args: argparse.Namespace, bases: Bases, folders: list[Path]
) -> dict[str, Any]:
    """One forward pass of a mixed batch (a slot per row, some rows bare) through the
    packed model vs PEFT's mixed batch, in the same dtype and in float32."""
    home = engine_home(engine)
    ids = torch.randint(3, 256, (args.batch, args.prompt), generator=torch.Generator())
    ids = ids.to(home.device)
    rows = [None if i % 4 == 3 else i % min(args.adapters, args.slots) for i in range(args.batch)]
    names = ["__base__" if a is None else f"a{a}" for a in rows]
    leases = [engine.acquire([] if a is None else [(ref(a), 1.0)]) for a in rows]
    try:
        with torch.no_grad():
            got = engine.model(ids, torch.tensor([lease.slot for lease in leases])).float()
            bare = engine.model(ids, torch.zeros(args.batch, dtype=torch.long)).float()
    finally:
        for lease in leases:
            engine.release(lease)
    same, exact = (peft_reference(bases, folders, d, home) for d in (home.dtype, torch.float32))
    with torch.no_grad():
        want = exact(ids, adapter_names=names).logits.float()
        theirs = same(ids, adapter_names=names).logits.float()
    adapted = torch.tensor([a is not None for a in rows], device=home.device)
    effect = float((want - bare)[adapted].abs().max())
    assert effect > 10 * float((got - want).abs().max()), "the adapters barely change the logits"
    return {
        "max_abs_logit_error_vs_fp32": float((got - want).abs().max()),
        "peft_same_dtype_max_abs_error_vs_fp32": float((theirs - want).abs().max()),
        "argmax_agreement_vs_fp32": float((got.argmax(-1) == want.argmax(-1)).float().mean()),
        "adapter_effect_max_abs": effect,
        "logit_scale": float(want.abs().max()),
    }


def mixed_scheduler(
    engine: ServingEngine, rows: list[Any], graphs: DecodeGraphs | None = None
) -> Scheduler:
    return Scheduler(engine, max_batch=len(rows), step_tokens=max(512, len(rows)), graphs=graphs)


def decode_rows(
    scheduler: Scheduler, rows: list[tuple[list[int], int | None]], new_tokens: int
) -> tuple[list[list[int]], float]:
    """Every row submitted at once and stepped to the end: each row's tokens, seconds."""
    started = time.perf_counter()
    running = [
        scheduler.submit([] if a is None else [(ref(a), 1.0)], ids, Sampling(new_tokens))
        for ids, a in rows
    ]
    while scheduler.step():
        pass
    return [g.result().tokens for g in running], time.perf_counter() - started


def generate_mixed(
    engine: ServingEngine, args: argparse.Namespace, bases: Bases, folders: list[Path]
) -> dict[str, Any]:
    """The node's scheduler on a mixed batch (all submitted at once); each step
    teacher-forced through PEFT (same dtype): the share of our greedy tokens that are
    PEFT's own choice."""
    rows, home = mixed_rows(args), engine_home(engine)
    out, seconds = decode_rows(mixed_scheduler(engine, rows), rows, args.new_tokens)
    same = peft_reference(bases, folders, home.dtype, home)
    agree = steps = 0
    for (ids, adapter), tokens in zip(rows, out, strict=True):
        logits = logits_of(same, ids + tokens, adapter, home.device)[len(ids) - 1 : -1]
        agree += int((logits.argmax(-1).cpu() == torch.tensor(tokens)).sum())
        steps += len(tokens)
    rate = agree / steps
    return {"token_agreement_vs_peft_same_dtype": rate, "tokens_per_s": steps / seconds}


def decode_graphs(engine: ServingEngine, args: argparse.Namespace) -> dict[str, Any]:
    """The mixed batch decoded by plain passes and by passes replayed from CUDA graphs
    (`DecodeGraphs`; on the CPU the same padded passes, not captured): the share of equal
    tokens, and tokens/s of each (graphs: the second run on the same scheduler, the first
    one grows its cache and captures)."""
    rows, home = mixed_rows(args), engine_home(engine)

    def decode(scheduler: Scheduler) -> tuple[list[list[int]], float]:
        graphs = scheduler.graphs
        sync(home)
        tokens, seconds = decode_rows(scheduler, rows, args.new_tokens)
        sync(home)
        if graphs is not None and scheduler.graphs is None:
            raise RuntimeError("a captured decode pass failed: see the log above")
        return tokens, sum(map(len, tokens)) / seconds

    plain, plain_rate = decode(mixed_scheduler(engine, rows))
    graphs = DecodeGraphs(engine.layout, capture=home.device.type == "cuda")
    replaying = mixed_scheduler(engine, rows, graphs)
    _, first_rate = decode(replaying)
    replayed, replayed_rate = decode(replaying)
    same = sum(
        a == b for p, r in zip(plain, replayed, strict=True) for a, b in zip(p, r, strict=True)
    )
    return {
        "captured": graphs.capture,
        "tokens_equal_share": same / sum(map(len, plain)),
        "plain_tokens_per_s": plain_rate,
        "graphs_first_run_tokens_per_s": first_rate,
        "graphs_tokens_per_s": replayed_rate,
        "graphs_over_plain": replayed_rate / plain_rate,
    }


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


def engine_home(engine: ServingEngine) -> TensorHome:
    return TensorHome(engine.model_device, engine.model_dtype)


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
    parser.add_argument(
        "--kernel-batches",
        help="decode batches of the lora_kernel check, comma-separated (default: 32,128 on a "
        "GPU, 4 on the CPU)",
    )
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
        bases = Bases(args)
        engine = build_engine(args, bases, home)
        checks.found["setup_seconds"] = round(time.perf_counter() - started, 3)
        checks.run("placement", lambda: placement(engine, home))
        checks.run("load", lambda: load_all(engine, folders, home))
        checks.run("promotion", lambda: promotions(engine, args.adapters))
        checks.run("mixed_forward", lambda: mixed_forward(engine, args, bases, folders))
        checks.run("generate", lambda: generate_mixed(engine, args, bases, folders))
        checks.run("decode_graphs", lambda: decode_graphs(engine, args))
        checks.run("timing", lambda: timing(engine, args, home))
    if home.device.type == "cuda":  # the engine's peak, before the kernel check's banks
        checks.found["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    checks.run("lora_kernel", lambda: lora_kernel.measure(args, home))


if __name__ == "__main__":
    main()
