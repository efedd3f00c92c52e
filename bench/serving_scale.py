"""Does serving slow down as adapters accumulate? Packed slots, on a ~40M-parameter Llama.

(c) of Step 4: with 1,000 adapters resident vs 32 —
  * one decode step (32 requests over 32 distinct adapters, 64-token context in the KV
    cache): target <= 1.1x;
  * loading one more adapter into its slot: target <= 1.2x.

  python -m bench.serving_scale [--resident 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig

from bench.common import bar_chart_svg, record
from mint.models.base import build_base
from mint.serving.packed_model import LoraWeights, PackedLoraModel

BATCH, PROMPT, RANK = 32, 64, 8


def base_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )


def random_adapter(model: PackedLoraModel, seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for name, layer in model.layers.items():
        base = layer.base
        modules[name] = (
            torch.randn(RANK, base.in_features, generator=g) * 0.01,
            torch.randn(base.out_features, RANK, generator=g) * 0.01,
            2.0,
        )
    return LoraWeights(modules)


class Setup:
    """A packed model with `resident` adapters loaded and a 32-request batch prefilled."""

    def __init__(self, resident: int) -> None:
        self.resident = resident
        self.model = PackedLoraModel(
            build_base(base_config(), seed=0),
            ["q_proj", "v_proj"],
            slots=resident + 2,
            max_rank=RANK,
        )
        adapter = random_adapter(self.model, 1)
        for slot in range(1, resident + 1):
            self.model.load(slot, adapter)
        distinct = torch.arange(1, BATCH + 1) * (resident // BATCH)  # 32 distinct slots
        self.slots = self.model.route(distinct)  # once, as the scheduler does per batch
        prompt = torch.randint(
            0, 32000, (BATCH, PROMPT), generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            self.cache = self.model.run(prompt, self.slots, use_cache=True).cache
        self.token = torch.randint(0, 32000, (BATCH, 1))

    def decode_step(self) -> float:
        started = time.perf_counter()
        with torch.no_grad():
            self.model.run(self.token, self.slots, cache=self.cache, use_cache=True)
        elapsed = time.perf_counter() - started
        self.cache.crop(-1)  # drop the token just added: every step sees the same context
        return elapsed

    def load_one(self, seed: int) -> float:
        fresh = random_adapter(self.model, seed)
        started = time.perf_counter()
        self.model.load(self.resident + 1, fresh)
        return time.perf_counter() - started


def measure(few: int, many: int, repeats: int) -> dict[str, float]:
    """Medians, alternating the two setups step by step so drift hits both alike."""
    setups = (Setup(few), Setup(many))
    steps: tuple[list[float], list[float]] = ([], [])
    loads: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        for k, setup in enumerate(setups):
            steps[k].append(setup.decode_step())
            loads[k].append(setup.load_one(100 + i))
    return {
        "few_step": statistics.median(steps[0]),
        "many_step": statistics.median(steps[1]),
        "few_load": statistics.median(loads[0]),
        "many_load": statistics.median(loads[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resident", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = sum(p.numel() for p in build_base(base_config(), seed=0).parameters())
    m = measure(32, args.resident, args.repeats)
    few_step, many_step, few_load, many_load = (
        m["few_step"],
        m["many_step"],
        m["few_load"],
        m["many_load"],
    )
    step_ratio, load_ratio = many_step / few_step, many_load / few_load
    print(
        f"base: Llama, {params / 1e6:.1f}M parameters, rank-{RANK} LoRA on q/v, "
        f"{args.threads} threads"
    )
    print(f"  decode step, 32 resident   {few_step * 1e3:8.1f} ms")
    print(
        f"  decode step, {args.resident} resident {many_step * 1e3:8.1f} ms  "
        f"ratio {step_ratio:.2f}x (target <= 1.1x)"
    )
    print(f"  load one,    32 resident   {few_load * 1e3:8.2f} ms")
    print(
        f"  load one,    {args.resident} resident {many_load * 1e3:8.2f} ms  "
        f"ratio {load_ratio:.2f}x (target <= 1.2x)"
    )
    path = record(
        "serving_scale",
        {
            "base_parameters": params,
            "rank": RANK,
            "batch": BATCH,
            "context": PROMPT,
            "threads": args.threads,
            "resident_many": args.resident,
            "decode_step_ms": {
                "32": round(few_step * 1e3, 2),
                str(args.resident): round(many_step * 1e3, 2),
            },
            "load_ms": {
                "32": round(few_load * 1e3, 3),
                str(args.resident): round(many_load * 1e3, 3),
            },
            "decode_ratio": round(step_ratio, 3),
            "load_ratio": round(load_ratio, 3),
            "targets": {"decode_ratio": "<= 1.1", "load_ratio": "<= 1.2"},
        },
    )
    chart = bar_chart_svg(
        "serving_scale",
        "Decode step (32 requests, 32 adapters), by adapters resident",
        [("32 resident", few_step * 1e3), (f"{args.resident} resident", many_step * 1e3)],
        "ms",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
