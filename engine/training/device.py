"""Which device trains, and in which precision (plan §4.2 "mixed precision: yes").

CPU trains in fp32 (autocast on CPU is slower than fp32 for convolutions and would
make runs harder to compare). A GPU trains under autocast: bf16 where the GPU
supports it (no loss scaling needed), fp16 with a GradScaler where it does not.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch


class DeviceError(RuntimeError):
    """The requested device is not usable here; the message says what to do."""


def pick_device(requested: str | None) -> torch.device:
    """`requested` ("cpu", "cuda" or None = cuda when available, else cpu) as a torch.device."""
    if requested in (None, ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "--device cuda: no CUDA GPU is visible to torch "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                "check nvidia-smi and CUDA_VISIBLE_DEVICES, or pass --device cpu")
        return torch.device("cuda")
    raise DeviceError(f"--device {requested!r}: expected cpu or cuda")


@dataclass(frozen=True)
class Precision:
    """How a forward pass runs: `name` is fp32, bf16 or fp16; fp16 also scales the loss."""

    name: str
    dtype: torch.dtype | None   # the autocast dtype; None = no autocast
    use_scaler: bool

    def autocast(self, device: torch.device) -> ContextManager:
        """The autocast context for a forward pass on `device` (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A GradScaler that is enabled only for fp16 (bf16 has fp32's range)."""
        return torch.amp.GradScaler(device.type, enabled=self.use_scaler)


FP32 = Precision("fp32", None, False)


def pick_precision(device: torch.device, mixed_precision: bool) -> Precision:
    """bf16 autocast on GPUs that support it, fp16 + scaler on older GPUs, fp32 on CPU."""
    if device.type != "cuda" or not mixed_precision:
        return FP32
    if torch.cuda.is_bf16_supported():
        return Precision("bf16", torch.bfloat16, False)
    return Precision("fp16", torch.float16, True)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on a GPU (cuDNN's tensor-core convolutions want NHWC), the default layout on the CPU.

    On this project's CPU channels_last measured 0.97x for training (docs/PERFORMANCE.md), so
    the CPU keeps NCHW; the model and every batch it sees use the same layout.
    """
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def describe(device: torch.device) -> str:
    """'cpu (2 threads)' or 'cuda:0 NVIDIA H100 80GB HBM3' for logs and run.json."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return f"cpu ({torch.get_num_threads()} threads)"
