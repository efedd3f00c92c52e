"""Issue 11's serving figures in one run, on the machine with the GPU: for each adapter
config (rank 8 on q/v; rank 16 on all seven linear layers) and each number of
concurrent requests over as many adapters (32 and 128), on TinyLlama 1.1B's shapes in
bfloat16 (random weights: speed does not depend on them):

  * packed: the node's engine and continuous-batching scheduler (decode passes replayed
    from CUDA graphs), tokens/s; against PEFT's `set_adapter` + `generate` per request
    (target >= 20x) and the bare base run by the same engine (target >= 0.9x for rank 8
    on q/v, >= 0.8x for rank 16 on all);
  * the decode step (the running batch, captured) against the floor of reading the base's
    weights once at the device copy bandwidth measured in the same run (target <= 6x,
    aim 4x), and the bare base's step beside it;
  * greedy agreement with PEFT in the same dtype, teacher-forced: the share of our tokens
    that are PEFT's own argmax (target >= 99% in bfloat16), and the largest logit gap;
    and in float32 (`--float32-requests`), each request's tokens equal to PEFT's own;
  * with `--many` adapters resident (10,000; rank 8 on q/v), the decode step of 32 rows
    against the same with 32 resident (target <= 1.1x);
  * through the node's gRPC API (`--grpc-clients`, 64, over as many adapters) against the
    engine alone (target >= 0.8x): `node_grpc.py`.

Everything lands in `$OUT/serving_figures.json` (`--out`). Before the gRPC figure it
imports torch, transformers and peft only (the GPU machine has no pydantic, Kafka or S3
clients); that figure needs the servicer's packages (carried wheels there).

  python -m bench.gpu.serving_figures --device cuda --dtype bfloat16
  python -m bench.gpu.serving_figures --device cpu --tiny     # the smoke test CI runs
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from transformers import LlamaConfig

from bench.gpu.device_check import environment, ref
from bench.gpu.lora_kernel import CONFIGS, copy_bandwidth_gbs
from mint.models.base import build_base, place
from mint.serving.decode_graphs import DecodeGraphs
from mint.serving.device import TensorHome, resolve
from mint.serving.engine import ServingEngine
from mint.serving.kv_batch import KvBatch
from mint.serving.packed_model import PEFT_PREFIX, LoraWeights, PackedLoraModel
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.residency import SlotTable
from mint.serving.scheduler import Scheduler
from mint.serving.static_kv import StaticKvBatch

TINYLLAMA = {"hidden": 2048, "layers": 22, "heads": 32, "kv_heads": 4, "mlp": 5632}
TINY = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 128}
PEFT_REQUESTS = 8  # PEFT serves one request at a time: its rate does not depend on N


def llama(args: argparse.Namespace) -> LlamaConfig:
    shape = TINY if args.tiny else TINYLLAMA
    return LlamaConfig(
        vocab_size=256 if args.tiny else 32000,
        hidden_size=shape["hidden"],
        intermediate_size=shape["mlp"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )


class Setup:
    """The base (built once) and each request's adapter as PEFT stores it."""

    def __init__(self, args: argparse.Namespace, home: TensorHome) -> None:
        self.args, self.home = args, home
        self.cpu = build_base(llama(args), seed=0)
        # What a decode step reads: every weight but the input embedding (a row each).
        self.weight_bytes = sum(
            p.numel() * home.dtype.itemsize
            for name, p in self.cpu.named_parameters()
            if "embed_tokens" not in name
        )

    def base(self) -> Any:
        model = copy.deepcopy(self.cpu)
        place(model, self.home.device, self.home.dtype)
        return model

    def adapter_states(
        self, rank: int, targets: tuple[str, ...], count: int
    ) -> list[dict[str, torch.Tensor]]:
        """`count` adapters' PEFT state dicts: random A, and B large enough that each
        adapter changes the outputs (so agreement with PEFT means something)."""
        linears = [
            (name, module)
            for name, module in self.cpu.named_modules()
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in targets
        ]
        states = []
        for i in range(count):
            g = torch.Generator().manual_seed(1000 + i)
            state = {}
            for name, linear in linears:
                a = torch.randn(rank, linear.in_features, generator=g) / linear.in_features**0.5
                b = torch.randn(linear.out_features, rank, generator=g) * 0.5
                state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.to(self.home.dtype)
                state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.to(self.home.dtype)
            states.append(state)
        return states


def prompts(args: argparse.Namespace, count: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(7)
    vocab = 256 if args.tiny else 32000
    return [torch.randint(3, vocab, (args.prompt,), generator=g).tolist() for _ in range(count)]


def engine_of(setup: Setup, rank: int, targets: tuple[str, ...], slots: int) -> ServingEngine:
    model = PackedLoraModel(setup.base(), list(targets), slots + 1, rank)
    return ServingEngine(model, SlotTable(slots + 1, 2**40), "", 4096, 0, 1)


def serve(
    engine: ServingEngine, asks: list[list[int]], refs: list[RevisionRef] | None, new: int
) -> tuple[list[list[int]], float]:
    """Every request at once through the node's scheduler (graphs on a GPU), request i
    with `refs[i]` (None: the bare base), twice on one scheduler (the first run grows
    its cache and captures); the second run's tokens and tokens/s."""
    on_gpu = engine.model_device.type == "cuda"
    graphs = DecodeGraphs(engine.layout) if on_gpu else None
    scheduler = Scheduler(engine, len(asks), len(asks), max(512, len(asks)), graphs=graphs)
    rate, tokens = 0.0, []
    for _ in range(2):
        sync(engine.model_device)
        started = time.perf_counter()
        running = [
            scheduler.submit([] if refs is None else [(refs[i], 1.0)], ids, Sampling(new))
            for i, ids in enumerate(asks)
        ]
        while scheduler.step():
            pass
        sync(engine.model_device)
        tokens = [g.result().tokens for g in running]
        rate = sum(map(len, tokens)) / (time.perf_counter() - started)
        if on_gpu and scheduler.graphs is None:
            raise RuntimeError("a captured decode pass failed: see the log above")
    return tokens, rate


def peft_model(setup: Setup, targets: tuple[str, ...], rank: int, states: list[Any]) -> Any:
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets))
    model = get_peft_model(setup.base(), config, adapter_name="a0")
    for i, state in enumerate(states):
        if i:
            model.add_adapter(f"a{i}", config)
        set_peft_model_state_dict(model, state, adapter_name=f"a{i}")
    model.eval()
    return model


def peft_per_request(model: Any, asks: list[list[int]], new: int, device: torch.device) -> float:
    """PEFT's serving pattern: per request, `set_adapter`, then `generate`: tokens/s."""
    sync(device)
    started = time.perf_counter()
    produced = 0
    for i, ids in enumerate(asks):
        model.set_adapter(f"a{i}")
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids], device=device),
                max_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,  # exactly `new` tokens
            )
        produced += out.shape[1] - len(ids)
    sync(device)
    return produced / (time.perf_counter() - started)


def agreement(
    model: Any, asks: list[list[int]], ours: list[list[int]], device: torch.device
) -> dict[str, float]:
    """Teacher-forced through PEFT: the share of our tokens that are its argmax, and the
    largest gap between its top logit and its logit for our token."""
    same = total = 0
    gap = 0.0
    for i, (ids, tokens) in enumerate(zip(asks, ours, strict=True)):
        model.set_adapter(f"a{i}")
        with torch.no_grad():
            logits = model(torch.tensor([ids + tokens], device=device)).logits[0].float()
        steps = logits[len(ids) - 1 : -1]
        chosen = torch.tensor(tokens, device=device)
        same += int((steps.argmax(-1) == chosen).sum())
        total += len(tokens)
        top = steps.max(-1).values
        ours_logit = steps.gather(1, chosen[:, None])[:, 0]
        gap = max(gap, float((top - ours_logit).max()))
    return {"token_agreement": same / total, "max_logit_gap": gap}


def decode_step_ms(model: PackedLoraModel, slots: list[int], args: argparse.Namespace) -> float:
    """One decode pass of `len(slots)` rows (row i in `slots[i]`, 0: none) after a prefill
    of `--prompt` tokens, as the scheduler runs it (replayed from a graph on a GPU):
    the median of `--repeats`."""
    device = model.device
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (len(slots), args.prompt), generator=g).to(device)
    with torch.no_grad():
        cohort = KvBatch(model, slots, device)
        cohort.forward(ids, torch.ones_like(ids))
        batch = StaticKvBatch(model, device)
        batch.extend(cohort)
        batch.reserve(len(slots), args.prompt + args.repeats + 8)
        graphs = DecodeGraphs(model.layout, capture=device.type == "cuda")
        step = ids[:, -1:].clone()
        times = []
        for _ in range(args.repeats + 3):
            sync(device)
            started = time.perf_counter()
            graphs.forward(batch, step)
            sync(device)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[3:])


def one_config(setup: Setup, name: str, requests: int) -> dict[str, Any]:
    args, home = setup.args, setup.home
    rank, targets = CONFIGS[name]
    states = setup.adapter_states(rank, targets, requests)
    engine = engine_of(setup, rank, targets, requests)
    for i, state in enumerate(states):
        engine.load(ref(i), LoraWeights.from_peft(state, rank))  # alpha = rank: scale 1
    asks = prompts(args, requests)
    ours, packed = serve(engine, asks, [ref(i) for i in range(requests)], args.new_tokens)
    _, bare = serve(engine, asks, None, args.new_tokens)
    rows = list(range(1, requests + 1))
    step_ms = decode_step_ms(engine.model, rows, args)
    bare_step_ms = decode_step_ms(engine.model, [0] * requests, args)
    del engine
    few = min(PEFT_REQUESTS, requests)
    reference = peft_model(setup, targets, rank, states[:few])
    per_request = peft_per_request(reference, asks[:few], args.new_tokens, home.device)
    agreed = agreement(reference, asks[:few], ours[:few], home.device)
    del reference
    return {
        "packed_tokens_per_s": packed,
        "bare_tokens_per_s": bare,
        "peft_per_request_tokens_per_s": per_request,
        "packed_over_peft_per_request": packed / per_request,
        "packed_over_bare": packed / bare,
        "decode_step_ms": step_ms,
        "bare_decode_step_ms": bare_step_ms,
        **agreed,
    }


def float32_equality(setup: Setup, requests: int) -> dict[str, Any]:
    """In float32, rank 16 on all linear layers: each request's greedy tokens from the
    engine against PEFT's own greedy `generate` of as many tokens (equal, every one)."""
    fp32 = copy.copy(setup)
    fp32.home = TensorHome(setup.home.device, torch.float32)
    rank, targets = CONFIGS["rank16-all"]
    states = fp32.adapter_states(rank, targets, requests)
    engine = engine_of(fp32, rank, targets, requests)
    refs = [ref(i) for i in range(requests)]
    for r, state in zip(refs, states, strict=True):
        engine.load(r, LoraWeights.from_peft(state, rank))
    asks = prompts(setup.args, requests)
    ours, _ = serve(engine, asks, refs, setup.args.new_tokens)
    del engine
    reference = peft_model(fp32, targets, rank, states)
    equal, diverged = 0, []
    for i, (ids, tokens) in enumerate(zip(asks, ours, strict=True)):
        reference.set_adapter(f"a{i}")
        with torch.no_grad():
            out = reference.generate(
                input_ids=torch.tensor([ids], device=fp32.home.device),
                max_new_tokens=len(tokens),
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        theirs = out[0, len(ids) :].tolist()
        equal += theirs == tokens
        if theirs != tokens:  # where: a near-tie late in a request, or a bug from the start
            at = next(n for n, (x, y) in enumerate(zip(theirs, tokens, strict=True)) if x != y)
            diverged.append({"request": i, "first_different_token": at})
    return {
        "requests": requests,
        "equal": equal,
        "all_equal": equal == requests,
        "diverged": diverged,
    }


def many_resident(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Decode step of 32 rows with `--many` rank-8 q/v adapters resident vs 32."""
    rank, targets = CONFIGS["rank8-qv"]
    states = setup.adapter_states(rank, targets, 32)
    pin = setup.home.device.type == "cuda"  # 10,000 loads: asynchronous copies
    weights = [LoraWeights.from_peft(s, rank).to_host(setup.home.dtype, pin) for s in states]
    found = {}
    for resident in (32, args.many):
        model = PackedLoraModel(setup.base(), list(targets), resident + 1, rank)
        for slot in range(1, resident + 1):
            model.load(slot, weights[slot % 32])
        spread = [1 + i * (resident // 32) for i in range(32)]
        found[resident] = decode_step_ms(model, spread, args)
        del model
    return {
        "resident": args.many,
        "step_ms_32_resident": found[32],
        "step_ms_many_resident": found[args.many],
        "many_over_32": found[args.many] / found[32],
    }


def grpc_figure(setup: Setup, clients: int) -> dict[str, Any]:
    try:  # the servicer's packages: carried wheels on the GPU machine (bench/README.md)
        from bench.gpu import node_grpc
    except Exception as exc:  # absent, or a protobuf or grpcio older than mint/v1 needs
        return {"skipped": f"the node's servicer cannot be imported here: {exc!r}"}
    return node_grpc.measure(setup, clients)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tiny", action="store_true", help="a tiny base (the CPU smoke test)")
    parser.add_argument("--requests", default="32,128", help="concurrent requests, each size")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of " + ", ".join(CONFIGS))
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20, help="timed decode steps")
    parser.add_argument("--many", type=int, default=10000, help="adapters resident (0: skip)")
    parser.add_argument(
        "--float32-requests", type=int, default=8, help="greedy equality in float32 (0: skip)"
    )
    parser.add_argument(
        "--grpc-clients", type=int, default=64, help="through the node's gRPC API (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    return parser.parse_args()


def main() -> None:
    args = parse()
    home = resolve(args.device, args.dtype)
    setup = Setup(args, home)
    found: dict[str, Any] = {
        "environment": environment(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "failed": [],
    }
    found["device"], found["dtype"] = home.describe()
    found["weight_bytes"] = setup.weight_bytes
    if home.device.type == "cuda":
        found["copy_gbs"] = copy_bandwidth_gbs(home)
        found["read_floor_ms"] = setup.weight_bytes / (found["copy_gbs"] * 1e9) * 1000
    report = args.out / "serving_figures.json"
    args.out.mkdir(parents=True, exist_ok=True)

    def figure(key: str, measure: Callable[[], dict[str, Any]]) -> None:
        """One figure, its error recorded if it fails; the report rewritten after each,
        so a run stopped at its time limit keeps what it measured."""
        try:
            found[key] = measure()
            if "decode_step_ms" in found[key] and "read_floor_ms" in found:
                found[key]["step_over_floor"] = (
                    found[key]["decode_step_ms"] / found["read_floor_ms"]
                )
        except Exception as exc:  # the other figures still run
            found[key] = {"error": "".join(traceback.format_exception(exc))[-3000:]}
            found["failed"].append(key)
        print(key, json.dumps(found[key]), flush=True)
        report.write_text(json.dumps(found, indent=2, default=str))

    for name in args.configs.split(","):
        for requests in map(int, args.requests.split(",")):
            figure(f"{name}/{requests}", partial(one_config, setup, name, requests))
    if args.float32_requests:
        figure("float32", lambda: float32_equality(setup, args.float32_requests))
    if args.many:
        figure("many_resident", lambda: many_resident(setup, args))
    if args.grpc_clients:
        figure("grpc", lambda: grpc_figure(setup, args.grpc_clients))
    print(f"wrote {report}; failed: {', '.join(found['failed']) or 'none'}")
    raise SystemExit(1 if found["failed"] else 0)


if __name__ == "__main__":
    main()
