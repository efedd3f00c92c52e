"""The GPU check (bench/gpu/device_check.py) and the serving figures
(bench/gpu/serving_figures.py), run as CI can: on the CPU, in a process where the
packages the GPU machine lacks cannot be imported."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu import device_check

# Not installed on the GPU machine (issue #11): the check must not need them.
ABSENT_THERE = ["pydantic", "pydantic_settings", "kafka", "minio", "grpc_health", "grpc_reflection"]
ABSENT_THERE += ["cachetools"]
BLOCKED = (
    "import runpy, sys\n"
    f"for name in {ABSENT_THERE!r}:\n"
    "    sys.modules[name] = None  # import raises ImportError\n"
    "runpy.run_module('bench.gpu.{}', run_name='__main__')\n"
)
RUN = BLOCKED.format("device_check")
SMALL = ["--adapters", "4", "--slots", "3", "--batch", "4", "--prompt", "16"]
SMALL += ["--new-tokens", "8", "--repeats", "1"]


def test_the_gpu_check_runs_on_the_cpu_and_reports_every_check(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN, "--device", "cpu", "--dtype", "bfloat16", *SMALL],
        # the kernel check runs the Triton kernels in Triton's interpreter (no GPU here)
        env={**os.environ, "OUT": str(tmp_path), "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads((tmp_path / "device_check.json").read_text())
    assert found["failed"] == []
    assert (found["resolve"]["device"], found["resolve"]["dtype"]) == ("cpu", "bfloat16")
    assert found["load"]["tiers"]["host"]["adapters"] == 4
    assert found["load"]["tiers"]["device"]["adapters"] == 3
    assert found["load"]["pinned"] is False  # pinned only for a CUDA device
    assert found["promotion"]["promotions"] >= 4
    assert found["mixed_forward"]["argmax_agreement_vs_fp32"] >= 0.9
    assert found["generate"]["token_agreement_vs_peft_same_dtype"] >= 0.9
    assert found["timing"]["packed_ms"] > 0
    graphs = found["decode_graphs"]  # the padded passes, not captured on the CPU
    assert graphs["captured"] is False and graphs["tokens_equal_share"] >= 0.9
    kernel = found["lora_kernel"]
    assert kernel["kernel"] == "runs"
    for config in ("rank8-qv/b4", "rank16-all/b4"):  # within one bfloat16 ulp: else it fails
        assert kernel[config]["torch_ms"] > 0
        assert 0 < kernel[config]["kernel_max_error_over_max_output"] < 2**-7


def test_the_gpu_check_says_why_it_cannot_run_on_a_missing_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["device_check", "--device", "cuda", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        device_check.main()
    assert stopped.value.code == 1
    found = json.loads((tmp_path / "device_check.json").read_text())
    assert found["failed"] == ["resolve"]
    assert "torch sees no CUDA device" in found["resolve"]["error"]


def test_the_serving_figures_run_on_the_cpu_and_report_every_figure(tmp_path: Path) -> None:
    tiny = ["--tiny", "--requests", "4", "--prompt", "8", "--new-tokens", "4", "--repeats", "2"]
    tiny += ["--device", "cpu", "--dtype", "float32", "--many", "64", "--grpc-clients", "4"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED.format("serving_figures"), *tiny],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads((tmp_path / "serving_figures.json").read_text())
    assert (found["device"], found["dtype"]) == ("cpu", "float32") and found["failed"] == []
    for config in ("rank8-qv/4", "rank16-all/4"):
        figures = found[config]
        assert figures["token_agreement"] == 1.0  # float32: PEFT's own greedy tokens
        for name in ("packed_over_peft_per_request", "packed_over_bare", "decode_step_ms"):
            assert figures[name] > 0
    assert found["float32"]["all_equal"] is True
    assert found["many_resident"]["resident"] == 64
    assert found["many_resident"]["many_over_32"] > 0
    assert "cannot be imported here" in found["grpc"]["skipped"]  # as on the GPU machine


def test_the_grpc_figure_serves_every_client_through_the_node() -> None:
    """Tiny, in this process (where the servicer's packages are installed)."""
    from bench.gpu import node_grpc, serving_figures
    from mint.serving.device import TensorHome

    args = argparse.Namespace(tiny=True, new_tokens=4, prompt=8)
    setup = serving_figures.Setup(args, TensorHome(torch.device("cpu"), torch.float32))
    found = node_grpc.measure(setup, 4)
    assert found["clients"] == 4
    assert found["grpc_tokens_per_s"] > 0 and found["engine_tokens_per_s"] > 0


def test_the_one_device_call_runs_both_scripts(tmp_path: Path) -> None:
    """bench/gpu/run_all.sh, tiny on the CPU: both scripts start and write their reports
    (the device call is the one chance a session has to run them)."""
    small = " ".join(SMALL)
    figures = "--tiny --requests 4 --prompt 8 --new-tokens 4 --repeats 2 --many 64"
    done = subprocess.run(
        ["bash", "bench/gpu/run_all.sh"],
        env={
            **os.environ,
            "OUT": str(tmp_path),
            "PYTHON": sys.executable,
            "DEVICE": "cpu",
            "DTYPE": "float32",
            "CHECK_ARGS": small,
            "FIGURES_ARGS": f"{figures} --grpc-clients 0 --float32-requests 2",
            "TRITON_INTERPRET": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "device_check: exit 0" in done.stdout, done.stdout + done.stderr
    assert "serving_figures: exit 0" in done.stdout, done.stdout + done.stderr
    assert json.loads((tmp_path / "device_check.json").read_text())["failed"] == []
    assert json.loads((tmp_path / "serving_figures.json").read_text())["failed"] == []
