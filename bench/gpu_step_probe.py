"""Where a training step's time goes on a GPU, and what removes the overhead (docs/PERFORMANCE.md §2).

    python -m bench.gpu_step_probe [--device cuda] [--batch 128] [--steps 40] [--json FILE]

The plan's batch is 128 images of 3x63x63: ResNet18 does that in well under a millisecond of
GPU work, so an eager step is bound by the CPU launching ~400 kernels. This measures, side by
side in one process: the parts of a step (augmentation, forward + backward, optimiser) and whole
steps in eager mode with the foreach and the fused AdamW, with torch.compile, and with the step
(forward, backward, fused AdamW) captured once as a CUDA graph and replayed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from bench.common import REPO
from engine.training.augment import training_batch
from engine.config import load_config
from engine.training.device import memory_format, pick_precision
from engine.training.model import build_model, build_optimizer
from engine.training.step import CudaGraphStep, EagerStep

IMAGE = (3, 63, 63)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Callable[[int], object], steps: int, warmup: int) -> float:
    """Median-free simple rate: seconds per call of fn(b) over `steps` calls after `warmup`."""
    for b in range(warmup):
        fn(b)
    sync(device)
    start = time.perf_counter()
    for b in range(warmup, warmup + steps):
        fn(b)
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_step_probe")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    config = load_config(REPO / "experiments.toml")
    t, aug, masking = config.training, config.augmentation, config.experiments["B2"].masking
    precision = pick_precision(device, t.mixed_precision)
    layout = memory_format(device)
    batch, steps = args.batch, args.steps
    n = batch * 8
    images = torch.randn(n, *IMAGE, device=device).to(torch.float16)
    labels = (torch.rand(n, device=device) < 0.5).float()
    results: dict[str, float] = {}

    def idx_of(b: int) -> torch.Tensor:
        start = (b % 8) * batch
        return torch.arange(start, start + batch, device=device)

    def new_model():
        torch.manual_seed(0)
        return build_model(t.stem, t.in_channels).to(device, memory_format=layout).train()

    def batch_of(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx_of(b)
        x, _ = training_batch(images.index_select(0, idx), seed=1, epoch=0, batch=b, aug=aug, masking=masking)
        return x.contiguous(memory_format=layout), labels[idx]

    def report(name: str, sec: float) -> None:
        results[name] = batch / sec
        print(f"{name:<44} {sec * 1e3:8.2f} ms/step  {batch / sec:10,.0f} img/s", flush=True)
        if args.json:   # after every measurement: a time limit keeps what was measured
            args.json.write_text(json.dumps({"batch": batch, "device": str(device), "img_s": results}, indent=1))

    # Parts of a step.
    report("augment only (training_batch)", timed(device, lambda b: batch_of(b), steps, 3))
    model = new_model()
    x0, y0 = batch_of(0)

    def fwd_bwd(b: int) -> None:
        with precision.autocast(device):
            logits = model(x0).squeeze(1)
        F.binary_cross_entropy_with_logits(logits.float(), y0).backward()
    report("forward + backward only", timed(device, fwd_bwd, steps, 3))
    for fused in (False, True):
        if fused and device.type != "cuda":
            continue
        opt = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)
        report(f"optimiser step only ({'fused' if fused else 'foreach'})", timed(device, lambda b: opt.step(), steps, 3))

    # Whole steps, eager: engine.training.step.EagerStep, as engine.train runs it.
    def eager_step(model, opt, forward) -> Callable[[int], object]:
        step = EagerStep(forward, opt, precision.grad_scaler(device), precision, device)
        return lambda b: step(*batch_of(b))

    for fused in (False, True):
        if fused and device.type != "cuda":
            continue
        model = new_model()
        opt = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)
        report(f"eager step, AdamW {'fused' if fused else 'foreach'}", timed(device, eager_step(model, opt, model), steps, 5))

    if device.type == "cuda":
        try:
            graph_steps(device, precision, t, new_model, batch_of, report, steps)
        except Exception as exc:   # record and go on: the other measurements still count
            print(f"CUDA graph step failed: {type(exc).__name__}: {exc}", flush=True)

    if not args.skip_compile:   # mode "default": max-autotune spent minutes autotuning (first H100 check)
        try:
            compiled_step(device, precision, t, "default", new_model, eager_step, report, steps)
        except Exception as exc:
            print(f"compile failed: {type(exc).__name__}: {exc}", flush=True)


def graph_steps(device, precision, t, new_model, batch_of, report, steps) -> None:
    """engine.training.step.CudaGraphStep, as `engine.train --cuda-graph` runs it: augmentation outside, graph replayed."""
    model = new_model()
    opt = build_optimizer(model, t.learning_rate, t.weight_decay, device, cuda_graph=True)
    eager = EagerStep(model, opt, precision.grad_scaler(device), precision, device)
    step = CudaGraphStep(model, opt, precision, *batch_of(0), eager)
    report("CUDA graph step (fused capturable AdamW)", timed(device, lambda b: step(*batch_of(b)), steps, 3))
    report("CUDA graph replay only (no augmentation)", timed(device, lambda b: step.graph.replay(), steps, 3))


def compiled_step(device, precision, t, mode, new_model, eager_step, report, steps) -> None:
    """torch.compile of the model in `mode`, fused AdamW, eager backward driver."""
    model = new_model()
    opt = build_optimizer(model, t.learning_rate, t.weight_decay, device)
    forward = torch.compile(model, mode=mode)
    started = time.perf_counter()
    eager_step(model, opt, forward)(0)
    sync(device)
    print(f"  compile ({mode}) first step {time.perf_counter() - started:.1f}s", flush=True)
    report(f"compiled step ({mode}), AdamW fused", timed(device, eager_step(model, opt, forward), steps, 3))


if __name__ == "__main__":
    main()
