"""The classifier (plan §4.1): ResNet18, 3 bands in, 1 logit out; and its checkpoint files.

The network is engine/training/resnet.py's ResNet18 (torchvision's, layer for layer, without
importing torchvision). Two stems (`training.stem` in experiments.toml; measurements in
docs/TRAINING.md):
- "stock": the 7x7 stride-2 conv + 3x3 max-pool. A 63x63 cutout leaves a 2x2 map after
  layer4. Same seed, same initial weights as torchvision's resnet18.
- "cifar": a 3x3 stride-1 conv and no max-pool (the usual small-image ResNet). The
  map after layer4 is 8x8 and the network costs ~15x the compute (4.4 vs 0.30 GFLOP per image).
  Its stem conv gets the same He initialisation as every other conv (until 2026-11-27 it
  kept PyTorch's default, an accident of replacing torchvision's stem after the fact).

`python -m engine.training.model --stem stock` measures training throughput (img/s) on this machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import STEMS
from engine.training.device import memory_format
from engine.training.resnet import ResNet18
from engine.files import replace_via_temp

def build_model(stem: str = "stock", in_channels: int = 3) -> nn.Module:
    """A freshly initialised ResNet18 (no pretrained weights) returning one logit per image."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}: expected one of {', '.join(STEMS)}")
    return ResNet18(in_channels, num_outputs=1, small_stem=stem == "cifar")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------
# Checkpoint files: tensors and plain data only, so torch.load(weights_only=True) reads them


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or unreadable; the message names the file."""


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    """torch.save `obj` to `path` atomically (temp file + fsync + rename): never half a file.

    A file-system failure (full disk, read-only, quota) is a CheckpointError naming the file
    and the reason; the previous file at `path` is left as it was.
    """
    path = Path(path)

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    try:
        replace_via_temp(path, fill)
    except BaseException as exc:
        # torch reports a full disk as "unexpected pos" with the OSError only in the chain.
        cause = _os_error_in(exc)
        if cause is not None:
            raise CheckpointError(f"cannot write {path}: {cause.strerror or cause}; "
                                  f"the previous {path.name} is kept") from exc
        raise


def _os_error_in(exc: BaseException | None) -> OSError | None:
    """The first OSError in `exc` or its chain of causes and contexts."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def remove_stale_temp_files(directory: Path, names: tuple[str, ...]) -> list[str]:
    """Delete `.NAME.*.tmp` left by a process killed while writing NAME; call holding the run lock."""
    removed = []
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; a missing or damaged file is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path}: not a lenstui checkpoint (no 'model' entry)")
    return obj


def build_optimizer(model: nn.Module, learning_rate: float, weight_decay: float,
                    device: torch.device, *, cuda_graph: bool = False) -> torch.optim.AdamW:
    """AdamW; on a GPU its fused kernel (one launch per step instead of hundreds).

    On one H100 the default foreach AdamW cost 6.8 ms per step for ResNet18 and the fused
    one 0.35 ms (bench/gpu_step_probe.py, docs/PERFORMANCE.md): at the plan's batch of 128
    the optimiser was half the step. Same update rule, same state_dict format.
    `cuda_graph`: also capturable (engine/training/step.py; it moves the learning rate into a device
    tensor once the schedule is set up, so the schedule's base rate stays a plain float).
    """
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay,
                             fused=cuda_graph or device.type == "cuda", capturable=cuda_graph)


BUILD_FLAGS = ("fused", "capturable", "foreach", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A checkpoint's optimiser state into `optimizer`, keeping how `optimizer` was built.

    The saved param_groups carry the flags of the device the run was on when it saved
    (fused, capturable, lr as a float or, under a CUDA graph, a tensor); a run may resume
    elsewhere (CPU to GPU, with or without a CUDA graph), so the flags are put back as
    built, the learning rate comes back as a float, and each `step` counter moves to where
    the built optimiser keeps it (the parameter's device when fused or capturable, else the CPU).
    """
    built = [{k: g[k] for k in BUILD_FLAGS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, built):
        group.update(flags, lr=float(group["lr"]))
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param)
            if state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=param.device if on_device else "cpu", dtype=torch.float32)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model stored in a checkpoint (best.pt or last.pt), in eval mode, and the checkpoint."""
    ckpt = load_checkpoint(path, device)
    model = build_model(ckpt.get("stem", "stock"), int(ckpt.get("in_channels", 3)))
    model.load_state_dict(ckpt["model"])
    device = torch.device(device)
    return model.to(device, memory_format=memory_format(device)).eval(), ckpt


# ---------------------------------------------------------------------------
# Throughput measurement (docs/TRAINING.md)


def measure_throughput(stem: str, *, batch_size: int = 128, steps: int = 5, warmup: int = 1,
                       device: str = "cpu", image_size: int = 63) -> tuple[float, float]:
    """Training images per second (median step, best step): forward + backward + AdamW on random data.

    Each step is timed on its own: on a shared machine the best step shows what the
    hardware can do and the median what a run there actually gets.
    """
    torch.manual_seed(0)
    model = build_model(stem).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device).float()
    loss_fn = nn.BCEWithLogitsLoss()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x).squeeze(1), y).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return batch_size / times[len(times) // 2], batch_size / times[0]


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.training.model [--stem stock|cifar] [--threads N]`: print training img/s."""
    parser = argparse.ArgumentParser(prog="python -m engine.training.model", description=main.__doc__)
    parser.add_argument("--stem", choices=STEMS, action="append", help="repeat for several (default both)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's choice)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for stem in args.stem or list(STEMS):
        median, best = measure_throughput(stem, batch_size=args.batch_size, steps=args.steps, device=args.device)
        params = count_parameters(build_model(stem))
        print(f"stem={stem:5s} device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} "
              f"steps={args.steps}: {median:8.1f} train img/s median step, {best:8.1f} best  ({params:,} params)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
