"""The gathered-LoRA kernel (mint/serving/kernels) against the torch path it replaces on
CUDA, per decode step: every wrapped linear layer's delta for a batch of one token per
request, each request with an adapter of its own (rank 8 on q/v, rank 16 on all seven
linear layers), eager and replayed from a CUDA graph, beside the floor of reading the
adapters' weights at the device's copy bandwidth; and how close each path comes to the
delta computed in float32.

On a GPU the shapes are TinyLlama 1.1B's (hidden 2048, 22 layers, k/v 256, MLP 5632) at
batch 32 and 128. On the CPU (the smoke test CI runs) they are the check's tiny base:
the torch path is timed, and the kernel's agreement is checked when TRITON_INTERPRET=1
(Triton's interpreter); kernel timings and graphs are CUDA only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mint.serving.device import TensorHome
from mint.serving.kernels.dispatch import kernel_applies, lora_delta, torch_delta
from mint.serving.slots import gathered_lora

Delta = Callable[..., torch.Tensor]  # (x, A, B, scale, slot_ids, out) -> out
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIGS = {"rank8-qv": (8, ("q_proj", "v_proj")), "rank16-all": (16, ALL_LINEAR)}
TINYLLAMA = {"hidden": 2048, "layers": 22, "kv_dim": 256, "intermediate": 5632}


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    kv_dim: int  # k_proj / v_proj out features (key-value heads times head size)
    intermediate: int

    def features(self, target: str) -> tuple[int, int]:
        """(in, out) of a Llama linear layer."""
        h, kv, mlp = self.hidden, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, mlp),
            "up_proj": (h, mlp),
            "down_proj": (mlp, h),
        }[target]


class DeltaStep:
    """One decode step's LoRA deltas: per layer and target, banks A [layers, slots, R, in],
    B [layers, slots, out, R] as the node's slot banks, rows in slots 1..batch."""

    def __init__(
        self, shape: Shape, rank: int, targets: tuple[str, ...], batch: int, home: TensorHome
    ) -> None:
        g = torch.Generator(home.device).manual_seed(0)

        def new(*size: int) -> torch.Tensor:
            return torch.randn(*size, generator=g, device=home.device, dtype=home.dtype)

        slots, self.layers, self.targets = batch + 1, shape.layers, targets
        self.banks = {}
        for t in targets:
            fan_in, fan_out = shape.features(t)
            A = new(shape.layers, slots, rank, fan_in) / fan_in**0.5
            B = new(shape.layers, slots, fan_out, rank)
            scale = torch.full((shape.layers, slots), 2.0, device=home.device, dtype=home.dtype)
            self.banks[t] = (A, B, scale)
        self.x = {t: new(batch, shape.features(t)[0]) for t in targets}
        self.out = {t: new(batch, shape.features(t)[1]) for t in targets}
        self.slot_ids = torch.arange(1, slots, device=home.device)
        per_row = rank * sum(sum(shape.features(t)) for t in targets)  # A's and B's rows
        self.lora_bytes = batch * shape.layers * per_row * torch.finfo(home.dtype).bits // 8

    def run(self, delta: Delta) -> None:
        for layer in range(self.layers):
            for t in self.targets:
                A, B, scale = self.banks[t]
                delta(self.x[t], A[layer], B[layer], scale[layer], self.slot_ids, self.out[t])

    def errors(self, kernel: Delta) -> dict[str, float]:
        """Layer 0's outputs by the kernel and by the torch path against out plus the
        float32 delta on the same inputs: the largest error of each, over the largest
        output (rounding the output is most of it)."""
        worst = {"kernel": 0.0, "torch": 0.0, "excess": 0.0}
        for t in self.targets:
            A, B, scale = (bank[0] for bank in self.banks[t])
            x, out = self.x[t], self.out[t]
            exact = gathered_lora(
                x.float().unsqueeze(1), A.float(), B.float(), scale.float(), self.slot_ids
            ).squeeze(1)
            want = out.float() + exact
            size = float(want.abs().max())
            for name, fn in (("kernel", kernel), ("torch", torch_delta)):
                got = fn(x, A, B, scale, self.slot_ids, out.clone()).float()
                worst[name] = max(worst[name], float((got - want).abs().max()) / size)
            # within one unit in the last place of out's dtype, element by element
            got = kernel(x, A, B, scale, self.slot_ids, out.clone()).float()
            bound = torch.finfo(out.dtype).eps * want.abs() + 1e-5 * size
            worst["excess"] = max(worst["excess"], float(((got - want).abs() - bound).max()))
        return worst


def measure(args: Any, home: TensorHome) -> dict[str, Any]:
    """The `lora_kernel` check (see the module's docstring); fails if the kernel's error
    exceeds one unit in the last place of the output's dtype."""
    on_gpu = home.device.type == "cuda"
    shape = Shape(**TINYLLAMA) if on_gpu else tiny_shape(args)
    batches = [int(b) for b in (args.kernel_batches or ("32,128" if on_gpu else "4")).split(",")]
    kernel, why_not = pick_kernel(home)
    found: dict[str, Any] = {"shape": vars(shape), "kernel": why_not or "runs"}
    if on_gpu:
        found["copy_gbs"] = copy_bandwidth_gbs(home)
    for name, (rank, targets) in CONFIGS.items():
        for batch in batches:
            step = DeltaStep(shape, rank, targets, batch, home)
            found[f"{name}/b{batch}"] = one_config(step, kernel, args.repeats, found, on_gpu)
            del step
    return found


def one_config(
    step: DeltaStep, kernel: Delta | None, repeats: int, found: dict[str, Any], on_gpu: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"lora_bytes_per_step": step.lora_bytes}
    if kernel is not None:  # first: timed steps keep adding into the outputs
        errors = step.errors(kernel)
        result.update({f"{k}_max_error_over_max_output": errors[k] for k in ("kernel", "torch")})
        assert errors["excess"] <= 0, f"kernel beyond one ulp of the output by {errors['excess']}"
    result["torch_ms"] = eager_ms(lambda: step.run(torch_delta), repeats, on_gpu)
    if on_gpu and kernel is not None:
        result["kernel_ms"] = eager_ms(lambda: step.run(kernel), repeats, on_gpu)
        result["torch_graph_ms"] = graph_ms(lambda: step.run(torch_delta), repeats)
        result["kernel_graph_ms"] = graph_ms(lambda: step.run(kernel), repeats)
        result["kernel_speedup_eager"] = result["torch_ms"] / result["kernel_ms"]
        result["kernel_speedup_graph"] = result["torch_graph_ms"] / result["kernel_graph_ms"]
        floor = step.lora_bytes / (found["copy_gbs"] * 1e9) * 1000
        result["read_floor_ms"] = floor
        result["kernel_graph_over_floor"] = result["kernel_graph_ms"] / floor
    return result


def tiny_shape(args: Any) -> Shape:
    """The check's own base (tiny_llama_config: as many key-value heads as heads)."""
    return Shape(args.hidden, args.layers, args.hidden, 2 * args.hidden)


def pick_kernel(home: TensorHome) -> tuple[Delta | None, str | None]:
    """The kernel as the layer would call it, or None and why not."""
    probe = torch.zeros(1, device=home.device)
    if home.device.type == "cuda":
        if not kernel_applies(probe, probe, probe):
            return None, "not run: Triton does not import here"
        return lora_delta, None
    try:
        from mint.serving.kernels.bgmv import INTERPRETED, bgmv_delta
    except ImportError as exc:
        return None, f"not run: Triton does not import ({exc})"
    if not INTERPRETED:
        return None, "not run: a CPU without TRITON_INTERPRET=1 (the kernels need a GPU)"
    return bgmv_delta, None


def eager_ms(step: Callable[[], None], repeats: int, on_gpu: bool) -> float:
    """Median of `repeats` steps, after two warm-up steps (the first compiles)."""
    times = []
    for _ in range(repeats + 2):
        sync(on_gpu)
        started = time.perf_counter()
        step()
        sync(on_gpu)
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:]) * 1000


def graph_ms(step: Callable[[], None], repeats: int) -> float:
    """A step captured once in a CUDA graph, then replayed: the mean replay time."""
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capturing stream, as torch asks
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000


def copy_bandwidth_gbs(home: TensorHome) -> float:
    """Device-to-device copy of 1 GiB, bytes read plus written per second (GB/s)."""
    source = torch.empty(2**30, dtype=torch.uint8, device=home.device)
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    torch.cuda.synchronize()
    return 5 * 2 * source.numel() / (time.perf_counter() - started) / 1e9


def sync(on_gpu: bool) -> None:
    if on_gpu:
        torch.cuda.synchronize()
