"""Benchmark 2, training and evaluation throughput: img/s, epoch time and peak memory, per stem and device.

Step throughput: the training step exactly as engine/training/train.py runs it (gather from a
resident float16 tensor, engine.training.augment.training_batch, autocast per engine.training.device,
BCE-with-logits, AdamW through the grad scaler) on random images of the real shape,
and evaluation through engine.training.evaluate.predict. Variants measure what the fast path
could add (docs/PERFORMANCE.md): channels_last memory format, torch.compile, and the
evaluation batch size. Epoch times for the plan's sizes follow from the two rates.

--e2e also runs `python -m engine.train --experiment A1` on the synthetic bench dataset
(a few hundred images, every §5 metric on) and reports its phases.

    .venv/bin/python -m bench.bench_train [--quick] [--device cuda] [--stems stock,cifar]
        [--variants base,channels_last,compile] [--e2e] [--json FILE]
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from bench.common import (PLAN_10PCT, PLAN_FULL, REPO, Report, bench_dataset, cuda_peak_mib, cuda_sync, parser,
                          peak_rss_mib, phase_times, progress, ratio, read_timestamped, reset_cuda_peak,
                          run_summary, run_timestamped, set_threads)
from engine.training.augment import training_batch
from engine.config import load_config
from engine.training.device import DeviceError, pick_device, pick_precision
from engine.training.evaluate import predict
from engine.training.model import build_model, build_optimizer, count_parameters

SEED = 42
IMAGE = (3, 63, 63)


def step_rate(stem: str, variant: str, device: torch.device, *, batch: int, steps: int, warmup: int) -> dict:
    """Training img/s of `steps` steps after `warmup`, the way engine/training/train.py steps."""
    config = load_config(REPO / "experiments.toml")
    t, aug, masking = config.training, config.augmentation, config.experiments["B2"].masking
    precision = pick_precision(device, t.mixed_precision)
    torch.manual_seed(SEED)
    n = batch * (steps + warmup)
    images = torch.randn(n, *IMAGE, device=device).to(torch.float16)
    labels = (torch.rand(n, device=device) < 0.5).float()
    model = build_model(stem, t.in_channels).to(device)
    channels_last = variant in ("channels_last", "compile")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, t.learning_rate, t.weight_decay, device)
    scaler = precision.grad_scaler(device)
    forward = torch.compile(model) if variant == "compile" else model
    model.train()
    reset_cuda_peak()
    first = time.perf_counter()
    first_step_s = None
    for b in range(steps + warmup):
        if b == warmup:
            cuda_sync()
            start = time.perf_counter()
        idx = torch.arange(b * batch, (b + 1) * batch, device=device)
        x, _ = training_batch(images, index=idx, seed=SEED, epoch=0, batch=b, aug=aug, masking=masking)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            logits = forward(x).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if b == 0:   # the first step pays cudnn's autotuning and, for compile, the compilation
            cuda_sync()
            first_step_s = time.perf_counter() - first
    cuda_sync()
    seconds = time.perf_counter() - start
    return {"train_img_s": steps * batch / seconds, "model": model, "forward": forward, "precision": precision,
            "loss": float(loss.detach()), "cuda_peak_mib": cuda_peak_mib(), "first_step_s": first_step_s}


def eval_rate(forward: torch.nn.Module, device: torch.device, precision, *, n: int, batch: int,
              channels_last: bool) -> float:
    """Evaluation img/s of engine.training.evaluate.predict over `n` resident float16 images."""
    images = torch.randn(n, *IMAGE, device=device).to(torch.float16)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    predict(forward, images[:batch], precision=precision, batch_size=batch)   # warm-up (cudnn autotune)
    cuda_sync()
    start = time.perf_counter()
    predict(forward, images, precision=precision, batch_size=batch)
    cuda_sync()
    return n / (time.perf_counter() - start)


def run_e2e(args, device: str, report: Report) -> None:
    """`python -m engine.train --experiment A1` on the bench dataset, every §5 metric on; its phases."""
    root = bench_dataset(args)
    runs = Path(args.work) / "runs-e2e"
    # A new run every time, and no pile of old ones (--fresh would keep each, checkpoints and all).
    shutil.rmtree(runs, ignore_errors=True)
    epochs = 1 if args.quick else 2
    argv = [sys.executable, "-m", "engine.train", "--experiment", "A1", "--config", str(REPO / "experiments.toml"),
            "--data-root", str(root), "--runs-root", str(runs), "--epochs", str(epochs), "--device", device]
    progress("train: end to end, " + " ".join(argv[1:]))
    log = Path(args.work) / "e2e-train.log"
    env = dict(os.environ)
    if device == "cpu":   # the same thread count as the step timings above
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    code, wall = run_timestamped(argv, log, timeout=600, env=env)
    if code != 0:
        report.note(f"end-to-end run failed (exit {code}); see {log}")
        report.values["e2e"] = {"exit": code}
        return
    summary = run_summary(runs / "A1")
    phases = phase_times(read_timestamped(log))
    for checkpoint in (runs / "A1").glob("*.pt"):   # ~130 MB each; metrics.json and the log stay
        checkpoint.unlink()
    table = report.table(f"End to end: engine.train A1, {epochs} epoch(s), {device}, every metric on "
                         f"(train {summary['rows']['train']}, val {summary['rows']['val']}, "
                         f"test {summary['rows']['test']} images)", ["phase", "seconds"])
    for name, label in (("startup", "start-up (imports, config, run directory)"),
                        ("data", "data: manifests + stamp cache + to device"),
                        ("epochs", "gates before training + epochs (+ gates, checkpoints)"),
                        ("final_val", "end: final gates on all val, sensitivity curve"),
                        ("test", "test: load + evaluate + sensitivity"), ("total", "total wall")):
        table.add(label, phases.get(name))
    for i, seconds in enumerate(summary["epoch_time_sec"]):
        table.add(f"epoch {i + 1} epoch_time_sec (train + val predict)", seconds)
    for n, seconds in zip(summary["gate_n_samples"], summary["gate_time_sec"]):
        table.add(f"one gate (core + radial, n={n}) gate_time_sec", seconds)
    report.values["e2e"] = {"phases": phases, **summary}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--stems", default=None,
                   help="comma-separated (default: cuda stock,cifar; cpu stock, as cifar costs ~13x)")
    p.add_argument("--variants", default=None,
                   help="base, channels_last, compile; comma-separated (default: base,channels_last)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default: cpu 3, cuda 50)")
    p.add_argument("--eval-batches", default=None, help="evaluation batch sizes (default: cpu 2048, cuda 512,2048,8192)")
    p.add_argument("--eval-images", type=int, default=None, help="images per evaluation timing (cpu 256, cuda 20000)")
    p.add_argument("--e2e", action="store_true", help="also run engine.train A1 end to end on the bench dataset")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps {args.steps}: expected at least 1")
    try:
        device = pick_device(args.device)
    except DeviceError as exc:
        print(f"bench_train: {exc}", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    # On CPU one intra-op thread unless told otherwise: on this shared 2-core machine two
    # threads measured 2.7x slower than one (`python -m engine.training.model --threads 1|2`).
    set_threads(args.threads or (None if cuda else 1))
    if cuda:
        torch.backends.cudnn.benchmark = True   # as engine/training/train.py sets it on a GPU
    report = Report("bench_train", argv)
    batch = load_config(REPO / "experiments.toml").training.batch_size
    stems = (args.stems or ("stock,cifar" if cuda and not args.quick else "stock")).split(",")
    variants = (args.variants or ("base" if args.quick else "base,channels_last")).split(",")
    eval_batches = [int(b) for b in (args.eval_batches or ("512,2048,8192" if cuda else "2048")).split(",")]
    n_eval = args.eval_images or (20_000 if cuda else (64 if args.quick else 256))
    warmup = 10 if cuda else 1
    if args.quick:
        batch, warmup = 16, 1

    rates = report.table(f"Step throughput on {device.type} (batch {batch} for training)",
                         ["stem", "variant", "params", "train img/s", "first step s", "eval batch",
                          "eval img/s", "peak GPU MiB (train)", "peak RSS MiB so far"])
    epochs = report.table("Epoch time from those rates (train + one val pass), seconds",
                          ["stem", "variant", "10% epoch", "full epoch", "full, 50 epochs (h)"])
    results = []
    for stem in stems:
        steps = args.steps or (1 if args.quick else (50 if cuda else 3))
        for variant in variants:
            if variant not in ("base", "channels_last", "compile"):
                raise SystemExit(f"--variants: unknown variant {variant!r} (base, channels_last, compile)")
            progress(f"train: {stem} {variant}: {steps} steps of {batch}")
            try:
                r = step_rate(stem, variant, device, batch=batch, steps=steps, warmup=warmup)
            except Exception as exc:   # e.g. torch.compile without a working compiler: record, go on
                report.note(f"{stem} {variant}: failed ({type(exc).__name__}: {str(exc)[:200]})")
                progress(f"train: {stem} {variant} failed: {exc}")
                continue
            evals = {}
            for eb in eval_batches:
                evals[eb] = eval_rate(r["forward"], device, r["precision"], n=n_eval, batch=eb,
                                      channels_last=variant != "base")
                rates.add(stem, variant, count_parameters(r["model"]), r["train_img_s"], r["first_step_s"], eb,
                          evals[eb], r["cuda_peak_mib"], peak_rss_mib())
            best_eval = max(evals.values())
            ten = PLAN_10PCT["train"] / r["train_img_s"] + PLAN_10PCT["val"] / best_eval
            full = PLAN_FULL["train"] / r["train_img_s"] + PLAN_FULL["val"] / best_eval
            epochs.add(stem, variant, ten, full, 50 * full / 3600)
            results.append({"stem": stem, "variant": variant, "train_img_s": r["train_img_s"],
                            "eval_img_s": {str(k): v for k, v in evals.items()}, "precision": r["precision"].name,
                            "cuda_peak_mib": r["cuda_peak_mib"], "first_step_s": r["first_step_s"],
                            "epoch_10pct_s": ten, "epoch_full_s": full})
            progress(f"train: {stem} {variant}: {r['train_img_s']:,.0f} train img/s, {best_eval:,.0f} eval img/s")
            del r
            if cuda:
                torch.cuda.empty_cache()
    report.values["results"] = results
    base = {x["stem"]: x for x in results if x["variant"] == "base"}
    for x in results:
        if x["variant"] != "base" and x["stem"] in base:
            report.note(f"{x['stem']} {x['variant']}: train {ratio(x['train_img_s'], base[x['stem']]['train_img_s']):.2f}x "
                        f"base")
    report.note("random images of the real shape: throughput does not depend on pixel values; "
                "B2's mask (R=5, p=0.5) is on, the costliest per-batch augmentation of the plan")
    if args.e2e:
        run_e2e(args, device.type, report)
    report.values["peak_rss_mib"] = peak_rss_mib()
    report.finish(args.json)
    if not results:   # every variant failed: say so in the exit status too (gpu.sh records it)
        print("bench_train: every variant failed; see the notes above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
