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
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import STEMS
from engine.training.checkpoint import load_checkpoint
from engine.training.device import memory_format
from engine.training.resnet import ResNet18

def build_model(stem: str = "stock", in_channels: int = 3) -> nn.Module:
    """A freshly initialised ResNet18 (no pretrained weights) returning one logit per image."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}: expected one of {', '.join(STEMS)}")
    return ResNet18(in_channels, num_outputs=1, small_stem=stem == "cifar")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------
# The optimiser, and a model read back from a checkpoint (engine/training/checkpoint.py)


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
