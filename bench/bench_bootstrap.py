"""Benchmark 6: what the 95% intervals over LRGs cost at the end of training (issue 19).

share   engine.training.evaluate.final_val_metrics exactly as engine.train calls it with best.pt
        (final gates on the whole val split, θ_E bins, the core sensitivity curve), on a val split
        of random images of the real shape with ~12 rows per LRG (the unpaired view's layout), with
        the stock ResNet18, run twice on the same split and model: metrics.bootstrap_draws = 0 (no
        interval) and = DRAWS, alternated. The difference is what the intervals cost (noisy on a
        shared CPU); the time spent inside LrgDraws (drawing, every AUROC, the intervals), timed
        directly, is the steadier number: both are reported as a share of the evaluation.
scale   the bootstrap alone (LrgDraws + one AUROC over every row, then its interval) at the plan's
        10% and full val sizes (10,024 and 100,240 rows, 12 per LRG), for several draw counts:
        the seconds each costs, and how far the interval's bounds move between two seeds (the
        Monte-Carlo error the draw count buys).

    .venv/bin/python -m bench.bench_bootstrap [--rows 1200] [--draws 1000] [--part share|scale]

CPU only here (this machine has no GPU); on a GPU host the draws run on the training device.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from engine.config import load_config
from engine.data import bootstrap
from engine.training.evaluate import final_val_metrics
from engine.training.model import build_model
from engine.training.splits import DeviceSplit

from bench.common import REPO

ROWS_PER_LRG = 12


def val_split(rows: int, seed: int = 0) -> DeviceSplit:
    """Random residual-like images, half lenses, ROWS_PER_LRG rows per LRG, θ_E across the plan's bins."""
    rng = np.random.default_rng(seed)
    lrgs = max(2, rows // ROWS_PER_LRG)
    groups = np.repeat(np.arange(lrgs), ROWS_PER_LRG)[:rows].astype(np.int64)
    labels = (groups % 2).astype(np.uint8)                     # an LRG's rows carry one label
    theta_e = rng.uniform(0.5, 3.0, rows).astype(np.float32)
    images = rng.normal(0, 1, (rows, 3, 63, 63)).astype(np.float16)
    images[labels == 1, :, 28:35, 28:35] += 1.0                 # something for the model and the probes to see
    return DeviceSplit("val", torch.from_numpy(images), labels, theta_e, groups, images, {}, (), {})


def part_share(rows: int, draws: int, repeats: int = 2) -> None:
    torch.manual_seed(0)
    config = load_config(REPO / "experiments.toml")
    experiment = config.experiments["B1"]
    split = val_split(rows)
    model = build_model("stock").eval()
    calls = {"n": 0, "seconds": 0.0}
    originals = {name: getattr(bootstrap.LrgDraws, name) for name in ("__init__", "auroc", "interval")}

    def counted(name):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            t = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                calls["n"] += name == "auroc"
                calls["seconds"] += time.perf_counter() - t
        return wrapper

    for name in originals:
        setattr(bootstrap.LrgDraws, name, counted(name))
    try:
        timings = {}
        for n in (0, draws) * repeats:        # alternated: a slow spell of the shared CPU hits both
            cfg = dataclasses.replace(config.metrics, bootstrap_draws=n)
            calls.update(n=0, seconds=0.0)
            t = time.perf_counter()
            final_val_metrics(model, split, experiment, cfg, best_epoch=1)
            timings.setdefault(n, []).append((time.perf_counter() - t, calls["n"], calls["seconds"]))
    finally:
        for name, original in originals.items():
            setattr(bootstrap.LrgDraws, name, original)
    without = min(s for s, _, _ in timings[0])
    with_ci, n_calls, in_auroc = min(timings[draws])
    print(f"share: final_val_metrics on {rows} val rows ({rows // ROWS_PER_LRG} LRGs), ResNet18 stock, CPU "
          f"{torch.get_num_threads()} threads")
    print(f"  without intervals {without:.1f} s; with {draws} draws {with_ci:.1f} s: +{with_ci - without:.1f} s "
          f"({100 * (with_ci - without) / with_ci:.1f}% of the evaluation with intervals)")
    print(f"  {n_calls} LrgDraws.auroc calls; {in_auroc:.2f} s inside LrgDraws (drawing, AUROCs, intervals): "
          f"{100 * in_auroc / with_ci:.1f}% of the evaluation")
    print(f"  every timing: {timings}")


def part_scale(draw_counts: list[int]) -> None:
    rng = np.random.default_rng(1)
    for rows in (10_024, 100_240):
        groups = np.repeat(np.arange(rows // ROWS_PER_LRG + 1), ROWS_PER_LRG)[:rows]
        label_of = rng.integers(0, 2, groups.max() + 1)
        labels = label_of[groups].astype(np.uint8)
        scores = (rng.normal(0, 1, groups.max() + 1)[groups] + 0.8 * labels
                  + rng.normal(0, 0.1, rows)).astype(np.float32)
        for draws in draw_counts:
            t = time.perf_counter()
            lrg = bootstrap.LrgDraws(groups, draws, seed=1)
            t_init = time.perf_counter() - t
            t = time.perf_counter()
            first = lrg.interval(lrg.auroc(labels, scores))
            t_auroc = time.perf_counter() - t
            other = bootstrap.LrgDraws(groups, draws, seed=2)
            second = other.interval(other.auroc(labels, scores))
            move = max(abs(first.low - second.low), abs(first.high - second.high))
            print(f"scale: {rows:>7} rows, {draws:>5} draws: LrgDraws {t_init:6.2f} s, one AUROC + interval "
                  f"{t_auroc:6.2f} s; 95% [{first.low:.4f}, {first.high:.4f}] (width {first.high - first.low:.4f}); "
                  f"another seed moves a bound by {move:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--scale-draws", default="250,1000,2000")
    parser.add_argument("--part", choices=("share", "scale", "all"), default="all")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("share", "all"):
        part_share(args.rows, args.draws)
    if args.part in ("scale", "all"):
        part_scale([int(d) for d in args.scale_draws.split(",")])


if __name__ == "__main__":
    main()
