"""Generation throughput with packed adapters (Step 4 (a) and (b)).

32 concurrent requests over 32 distinct adapters, 64-token prompts, 32 new tokens (greedy),
on a ~58M-parameter Llama (rank-8 LoRA on q/v), served as a node serves them (the engine's
slots and the continuous-batching scheduler, default step budget), measured in one run
against:
  (a) PEFT's common serving pattern: per request, `set_adapter`, then `generate`
      (target: packed >= 10x);
  (b) the bare base model serving the same 32 requests batched, no adapters — the
      ceiling (target: packed >= 0.9x).

  python -m bench.serving_throughput [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from bench.common import bar_chart_svg, record
from bench.serving_scale import base_config
from mint.models.base import build_base
from mint.serving.engine import ServingEngine
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.residency import SlotTable
from mint.serving.scheduler import Scheduler

REQUESTS, PROMPT, NEW, RANK = 32, 64, 32, 8


def make_adapters(folder: Path) -> list[Path]:
    """32 rank-8 LoRAs on q/v with random (non-zero) weights, saved by peft."""
    paths = []
    base: Any = build_base(base_config(), seed=0)
    for i in range(REQUESTS):
        torch.manual_seed(100 + i)
        config = LoraConfig(
            r=RANK, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        model = get_peft_model(base, config)
        model.save_pretrained(str(folder / f"a{i}"))
        base = model.unload()  # the same base object, adapters removed
        paths.append(folder / f"a{i}")
    return paths


def peft_per_request(paths: list[Path], prompts: torch.Tensor) -> float:
    model = PeftModel.from_pretrained(
        build_base(base_config(), seed=0), paths[0], adapter_name="a0"
    )
    for i, path in enumerate(paths[1:], start=1):
        model.load_adapter(str(path), adapter_name=f"a{i}")
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(REQUESTS):
            model.set_adapter(f"a{i}")
            model.generate(  # type: ignore[no-untyped-call]
                input_ids=prompts[i : i + 1],
                max_new_tokens=NEW,
                do_sample=False,
                min_new_tokens=NEW,
                pad_token_id=0,
            )
    return REQUESTS * NEW / (time.perf_counter() - started)


def packed_batched(paths: list[Path], prompts: torch.Tensor) -> float:
    from mint.serving.loading import weights_from_bytes

    model = PackedLoraModel(
        build_base(base_config(), seed=0), ["q_proj", "v_proj"], slots=REQUESTS + 1, max_rank=RANK
    )
    engine = ServingEngine(model, SlotTable(REQUESTS + 1, 2**30), "", PROMPT, 0, 1)
    refs = []
    for i, path in enumerate(paths):
        data = (path / "adapter_model.safetensors").read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        weights: LoraWeights = weights_from_bytes(
            data, digest, (path / "adapter_config.json").read_text()
        )
        refs.append(RevisionRef(f"a{i}", f"bench/a{i}", 1, digest, len(data)))
        engine.load(refs[-1], weights)
    scheduler = Scheduler(engine, max_batch=REQUESTS)
    started = time.perf_counter()
    running = [
        scheduler.submit([(ref, 1.0)], prompt.tolist(), Sampling(NEW))
        for ref, prompt in zip(refs, prompts, strict=True)
    ]
    while scheduler.step():
        pass
    elapsed = time.perf_counter() - started
    if any(len(g.result().tokens) != NEW for g in running):
        raise RuntimeError("a request did not get all its tokens")
    return REQUESTS * NEW / elapsed


def bare_batched(prompts: torch.Tensor) -> float:
    base = build_base(base_config(), seed=0)
    started = time.perf_counter()
    with torch.no_grad():
        base.generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            pad_token_id=0,
        )
    return REQUESTS * NEW / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each batched side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = torch.randint(
        1, 32000, (REQUESTS, PROMPT), generator=torch.Generator().manual_seed(0)
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_adapters(Path(tmp))
        # The batched runs are short and this machine is noisy: alternate them and take
        # the median of each (PEFT per request runs ~40 s once, which averages itself).
        packed_runs, bare_runs = [], []
        for _ in range(args.repeats):
            packed_runs.append(packed_batched(paths, prompts))
            bare_runs.append(bare_batched(prompts))
        packed, bare = statistics.median(packed_runs), statistics.median(bare_runs)
        peft = peft_per_request(paths, prompts)
    a, b = packed / peft, packed / bare
    print(f"{REQUESTS} requests x {NEW} new tokens, {PROMPT}-token prompts, {args.threads} threads")
    print(f"  packed adapters, batched     {packed:8.1f} tokens/s")
    print(f"  bare base model, batched     {bare:8.1f} tokens/s")
    print(f"  PEFT set_adapter + generate  {peft:8.1f} tokens/s")
    print(f"(a) packed / PEFT per request = {a:.2f}x (target >= 10x)")
    print(f"(b) packed / bare base        = {b:.2f}x (target >= 0.9x)")
    path = record(
        "serving_throughput",
        {
            "requests": REQUESTS,
            "prompt_tokens": PROMPT,
            "new_tokens": NEW,
            "rank": RANK,
            "threads": args.threads,
            "repeats": args.repeats,
            "packed_runs_tokens_per_s": [round(x, 1) for x in packed_runs],
            "bare_runs_tokens_per_s": [round(x, 1) for x in bare_runs],
            "packed_tokens_per_s": round(packed, 1),
            "bare_tokens_per_s": round(bare, 1),
            "peft_per_request_tokens_per_s": round(peft, 1),
            "ratio_a_vs_peft_per_request": round(a, 2),
            "ratio_b_vs_bare": round(b, 3),
            "targets": {"a": ">= 10", "b": ">= 0.9"},
        },
    )
    chart = bar_chart_svg(
        "serving_throughput",
        "Generation throughput, 32 requests",
        [
            ("packed adapters, batched", packed),
            ("bare base, batched", bare),
            ("PEFT set_adapter + generate", peft),
        ],
        "tokens/s",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
