"""Fused gathered-LoRA kernels for mixed-adapter batches on CUDA (Triton; BGMV/SGMV as
Punica, S-LoRA and vLLM). `lora_delta` picks them for CUDA tensors and otherwise runs the
torch path in `mint.serving.slots`; Triton is imported on first use only."""

from mint.serving.kernels.dispatch import (
    gathered_lora_kernel,
    kernel_applies,
    lora_delta,
    lora_path,
)

__all__ = ["gathered_lora_kernel", "kernel_applies", "lora_delta", "lora_path"]
