"""The gathered-LoRA Triton kernels (mint/serving/kernels) against the torch path they
replace on CUDA (`slots.gathered_lora`), run on the CPU by Triton's interpreter.

Triton reads TRITON_INTERPRET when a kernel is defined (`@triton.jit`, at import), so the
kernels run in one subprocess of their own with it set: this process, and every other
test, keeps compiled Triton. Inputs are made here, the kernels' outputs come back in a
file, and every comparison happens here.

Tolerances: float32 agrees with the torch path to 1e-5 (both accumulate in float32).
In bfloat16 and float16 the kernels accumulate in float32 and round once, into the output;
they are checked against float64 math on the same inputs: within one unit in the last
place of the output's dtype (the GPU rounds to nearest, Triton's interpreter truncates).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mint.serving.kernels import gathered_lora_kernel, kernel_applies, lora_delta
from mint.serving.slots import GatheredLora, gathered_lora

SLOTS = 6  # slot 0 (no adapter) and five adapters


@dataclass(frozen=True)
class Case:
    name: str
    dtype: torch.dtype
    batch: int
    seq: int | None  # None: decode-shaped x [rows, in]; else prefill [batch, seq, in]
    in_features: int
    out_features: int
    rank: int
    strided: bool = False  # x and out are views into wider tensors

    def slot_ids(self) -> torch.Tensor:
        """3, 2, 1, 0, 5, 4, 3, …: slot 0 from the fourth row on, adapters repeating."""
        return (3 + 5 * torch.arange(self.batch)) % SLOTS


F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
CASES = [
    Case("decode-f32-r1-b1", F32, 1, None, 37, 53, 1),
    Case("decode-f32-r8-b33-strided", F32, 33, None, 37, 53, 8, strided=True),
    Case("decode-f32-r64-split-k", F32, 3, None, 520, 45, 64),  # 8 splits, 2 K steps in one
    Case("decode-bf16-r16", BF16, 7, None, 37, 53, 16),
    Case("decode-f16-r8", F16, 5, None, 300, 29, 8),
    Case("decode-f32-r12-stacked", F32, 6, None, 37, 53, 12),  # a stack's rank: 4 + 8
    Case("prefill-f32-r8-split-k", F32, 4, 5, 200, 53, 8),  # 2 splits, 2 K steps each
    Case("prefill-f32-r12-stacked", F32, 4, 3, 37, 53, 12),
    Case("prefill-f32-r64-two-row-tiles", F32, 2, 70, 200, 45, 64),
    Case("prefill-bf16-r16-strided", BF16, 5, 19, 37, 53, 16, strided=True),
    Case("prefill-f16-r1", F16, 4, 17, 37, 53, 1),
]

# Runs the kernels on the cases' inputs with TRITON_INTERPRET=1 set before Triton loads.
RUN = (
    "import sys, torch\n"
    "from mint.serving.kernels.bgmv import INTERPRETED, bgmv_delta\n"
    "assert INTERPRETED\n"
    "cases = torch.load(sys.argv[1])\n"
    "done = {name: bgmv_delta(*operands) for name, operands in cases.items()}\n"
    "torch.save(done, sys.argv[2])\n"
)


def operands(case: Case) -> tuple[torch.Tensor, ...]:
    """(x, A, B, scale, slot_ids, out) for `case`; slot 0 empty as in a real bank."""
    g = torch.Generator().manual_seed(len(case.name))
    rows = (case.batch,) if case.seq is None else (case.batch, case.seq)
    A = torch.randn(SLOTS, case.rank, case.in_features, generator=g) / case.in_features**0.5
    B = torch.randn(SLOTS, case.out_features, case.rank, generator=g)
    scale = torch.rand(SLOTS, generator=g) + 0.5
    for bank in (A, B, scale):
        bank[0] = 0
    pad = 3 if case.strided else 0
    x = torch.randn(*rows, case.in_features + pad, generator=g)[..., pad:]
    out = torch.randn(*rows, case.out_features + pad, generator=g)[..., : -pad or None]
    x, A, B, scale, out = (t.to(case.dtype) for t in (x, A, B, scale, out))
    return x, A, B, scale, case.slot_ids(), out


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Each case's output from the kernels, run once for all cases."""
    folder = tmp_path_factory.mktemp("kernels")
    torch.save({case.name: operands(case) for case in CASES}, folder / "cases.pt")
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(folder / "cases.pt"), str(folder / "done.pt")],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, torch.Tensor] = torch.load(folder / "done.pt")
    return results


def exact(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """out + the delta in float64 on the same (rounded) inputs."""
    samples = x.double() if x.dim() == 3 else x.double().unsqueeze(1)
    delta = gathered_lora(samples, A.double(), B.double(), scale.double(), slot_ids)
    return out.double() + delta.view(out.shape)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_matches_the_torch_path(case: Case, interpreted: dict[str, torch.Tensor]) -> None:
    x, A, B, scale, slot_ids, out = operands(case)
    got = interpreted[case.name]
    want = exact(x, A, B, scale, slot_ids, out)
    if case.dtype == torch.float32:
        torch_path = lora_delta(x, A, B, scale, slot_ids, out.clone())
        atol = 1e-5 * float(want.abs().max())
        torch.testing.assert_close(got, torch_path, rtol=1e-5, atol=atol)
    else:
        ulp = torch.finfo(case.dtype).eps  # relative spacing of the output's dtype
        error = (got.double() - want).abs()
        bound = ulp * want.abs() + 1e-5 * float(want.abs().max())
        assert bool((error <= bound).all()), f"max error {float(error.max())}"
    adapted = slot_ids != 0
    assert float((want - out.double())[adapted].abs().min()) > 0, "the delta must change out"
    assert torch.equal(got[~adapted], out[~adapted]), "rows of slot 0 are left as they were"


@pytest.mark.parametrize("seq", [None, 4])
def test_lora_delta_on_the_cpu_is_the_slots_torch_path(seq: int | None) -> None:
    case = Case("cpu", F32, 6, seq, 37, 53, 8)
    x, A, B, scale, slot_ids, out = operands(case)
    assert not kernel_applies(x, A, B)
    samples = x if x.dim() == 3 else x.unsqueeze(1)
    want = out + gathered_lora(samples, A, B, scale, slot_ids).view(out.shape)
    target = out.clone()
    assert lora_delta(x, A, B, scale, slot_ids, target) is target  # in place
    assert torch.equal(target, want)


def test_the_slotted_layers_hook_on_the_cpu_is_the_torch_path() -> None:
    x, A, B, scale, slot_ids, _ = operands(Case("hook", F32, 6, 4, 37, 53, 8))
    hook: GatheredLora = gathered_lora_kernel  # what SlottedLinear's `gathered` takes
    assert torch.equal(hook(x, A, B, scale, slot_ids), gathered_lora(x, A, B, scale, slot_ids))


def _bad(**change: object) -> dict[str, object]:
    x, A, B, scale, slot_ids, out = operands(Case("bad", F32, 3, None, 8, 5, 2))
    given: dict[str, object] = {"x": x, "A": A, "B": B, "scale": scale, "slot_ids": slot_ids}
    return {**given, "out": out, **change}


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (_bad(x=torch.zeros(3, 9)), "x has 9 features, the slots' A takes 8"),
        (_bad(slot_ids=torch.tensor([1, 2])), "one per row of x (3)"),
        (_bad(slot_ids=torch.ones(3)), "slot_ids must be integers"),
        (_bad(out=torch.zeros(3, 4)), "out is [3, 4], want [3, 5]"),
        (_bad(B=torch.zeros(SLOTS, 5, 3)), "slot banks disagree"),
        (_bad(x=torch.zeros(3, 8, dtype=torch.bfloat16)), "place the slots in the model's dtype"),
        (_bad(x=torch.zeros(8)), "lora_delta takes x [rows, in] or [batch, seq, in]"),
    ],
)
def test_operands_that_do_not_fit_are_refused_with_what_is_wrong(
    given: dict[str, torch.Tensor], says: str
) -> None:
    with pytest.raises(ValueError) as refused:
        lora_delta(**given)
    assert says in str(refused.value)


def test_mint_imports_and_serves_on_the_cpu_without_triton() -> None:
    script = (
        "import sys, torch\n"
        "sys.modules['triton'] = None  # import raises ImportError\n"
        "from mint.serving.kernels import lora_delta\n"
        "from mint.serving.kernels.dispatch import triton_imports\n"
        "import mint.serving.packed_model\n"
        "out = lora_delta(torch.ones(2, 4), torch.ones(3, 1, 4), torch.ones(3, 5, 1),\n"
        "                 torch.tensor([0.0, 1, 1]), torch.tensor([0, 2]), torch.zeros(2, 5))\n"
        "print(out.sum().item(), triton_imports())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["20.0", "False"]  # row 2: 4·1·1 in each of 5 outputs
