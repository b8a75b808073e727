"""Metrics of a model on a split (plan §5), and `python -m engine.evaluate` to redo them for a run.

    python -m engine.evaluate --run runs/A1 --split test [--config experiments.toml] [--data-root DIR]

re-evaluates the run's best.pt on the split and updates its metrics.json (val:
core_sensitivity, core_reliance and final_val_auroc_by_thetae; test: test_auroc,
test_auroc_by_thetae, test_core_sensitivity), then its verdicts. The images stay on the device; evaluation
runs in large batches without gradients (autocast on a GPU); a metric that needs masked
images masks them on the device (no re-read of the data).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.protocol import rundir
from engine.training.augment import mask_core
from engine.config import SPLITS, Config, ConfigError, Experiment, MetricsConfig, load_config
from engine.data.settings import DataSettings
from engine.data.bootstrap import LEVEL, Interval, LrgDraws
from engine.training.device import FP32, DeviceError, Precision, memory_format, pick_device, pick_precision
from engine.training.checkpoint import CheckpointError
from engine.training.splits import DeviceSplit, load_device_split
from engine.training.model import load_model
from engine.numbers import fixed, is_int
from engine.protocol import exitcodes
from engine.protocol.runlog import RunLog

EVAL_BATCH = 2048
NA = "n/a"   # what a log line shows where a metric has no value


# ---------------------------------------------------------------------------
# Scores


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, precision: Precision = FP32,
            mask_radius: float = 0, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Logits (N,) float32 of `model` on `images` (on the model's device), every image masked at R."""
    was_training = model.training
    model.eval()
    out = torch.empty(images.shape[0], dtype=torch.float32, device=images.device)
    layout = memory_format(images.device)
    for start in range(0, images.shape[0], batch_size):
        x = mask_core(images[start:start + batch_size].float(), mask_radius).contiguous(memory_format=layout)
        with precision.autocast(images.device):
            out[start:start + batch_size] = model(x).squeeze(1).float()
    model.train(was_training)
    return out.cpu().numpy()


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; None when only one class is present (AUROC is undefined)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def bce(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of logits against 0/1 labels (the training loss)."""
    return float(F.binary_cross_entropy_with_logits(
        torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.float64)))


def auroc_by_thetae(labels: np.ndarray, scores: np.ndarray, theta_e: np.ndarray,
                    bins: Sequence[tuple[float, float]], min_positives: int) -> list[dict[str, Any]]:
    """Per θ_E bin [lo, hi): AUROC of the bin's positives against ALL negatives, and the count.

    AUROC does not depend on the class ratio, and using every negative gives the lowest
    variance. A bin with fewer than `min_positives` positives reports its count and no AUROC.
    """
    return thetae_bins(labels, scores, theta_e, bins, min_positives)[0]


def thetae_bins(labels: np.ndarray, scores: np.ndarray, theta_e: np.ndarray, bins: Sequence[tuple[float, float]],
                min_positives: int, lrg: LrgDraws | None = None) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """auroc_by_thetae's records and, with `lrg`, each bin's 95% interval over LRGs (`ci95`) and the
    per-draw AUROCs of the bins that have a value (for the joint interval of their min and spread)."""
    labels, scores, theta_e = np.asarray(labels), np.asarray(scores), np.asarray(theta_e)
    negatives = labels == 0
    out, per_draw = [], []
    for lo, hi in bins:
        in_bin = (labels == 1) & (theta_e >= lo) & (theta_e < hi)
        count = int(in_bin.sum())
        value, note = None, None
        if count < min_positives:
            note = f"{count} positives, fewer than the {min_positives} an AUROC needs (metrics.thetae_min_positives)"
        elif not negatives.any():
            note = "no negatives in the split"
        else:
            rows = in_bin | negatives
            value = auroc(labels[rows], scores[rows])
        record: dict[str, Any] = {"bin": [lo, hi], "auroc": value, "count": count, "note": note}
        if lrg is not None:
            record["ci95"] = None
            if value is not None:
                draws = lrg.auroc(labels, scores, rows=in_bin | negatives)
                record["ci95"] = _bounds(lrg.interval(draws))
                per_draw.append(draws)
        out.append(record)
    return out, per_draw


def core_sensitivity(model: nn.Module, images: torch.Tensor, labels: np.ndarray, radii: Sequence[int], *,
                     precision: Precision = FP32, batch_size: int = EVAL_BATCH,
                     unmasked_scores: np.ndarray | None = None, lrg: LrgDraws | None = None,
                     per_draw: dict[int, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """§5.5: AUROC with every image masked at each radius R (R = 0: no mask).

    With `lrg`, each point also carries its 95% interval over LRGs (`ci95`), and `per_draw`
    (when given) receives each radius's per-draw AUROCs, for core_reliance's paired interval.
    """
    curve = []
    for radius in radii:
        if radius == 0 and unmasked_scores is not None:
            scores = unmasked_scores
        else:
            scores = predict(model, images, precision=precision, mask_radius=radius, batch_size=batch_size)
        point: dict[str, Any] = {"radius": int(radius), "auroc": auroc(labels, scores)}
        if lrg is not None:
            draws = lrg.auroc(labels, scores)
            point["ci95"] = _bounds(lrg.interval(draws)) if point["auroc"] is not None else None
            if per_draw is not None:
                per_draw[int(radius)] = draws
        curve.append(point)
    return curve


def core_reliance(curve: Sequence[dict[str, Any]], radius: int) -> float | None:
    """AUROC(R=0) − AUROC(R=radius) from a sensitivity curve; None if either is missing."""
    by_radius = {c["radius"]: c["auroc"] for c in curve}
    a0, ar = by_radius.get(0), by_radius.get(radius)
    return None if a0 is None or ar is None else a0 - ar


# ---------------------------------------------------------------------------
# The gates (a data probe; engine/data/gates.py does the work)


def gate_record(split: DeviceSplit, metrics_cfg: MetricsConfig, *, n_samples: int | None,
                mask_radius: int = 0, intervals: bool = False) -> dict[str, Any]:
    """core_lr_auc, radial_lr_auc, gate_n_samples on unmasked images; and at `mask_radius` when > 0.

    The gate probes the data the model sees. The plan's gate is on the preprocessed images
    (unmasked); an experiment that masks during training also gets the gate at its mask
    radius (`masked_*`), which is what the published "unpaired+residual+R7" row measures and
    what a masking variant's verdict reads (docs/DECISIONS.md). Beside each value,
    `<key>_ungrouped` is the published method's (plain StratifiedKFold: for comparison only),
    and `radial_feature_max_abs` shows whether the radial probe can see anything at all.
    `n_samples` None = the largest balanced sample of the split. `intervals`: each judged value's
    95% interval over LRGs beside it (`<key>_ci95`; the end-of-training gates ask for them).
    """
    from engine.data.gates import shortcut_gates

    n_max = 2 * min(split.positives, len(split) - split.positives)
    n = n_max if n_samples is None else min(n_samples, n_max)
    common = dict(n_samples=n, folds=metrics_cfg.gate_cv_folds, seed=metrics_cfg.gate_seed,
                  core_box=metrics_cfg.core_box, ungrouped=True, intervals=intervals,
                  draws=metrics_cfg.bootstrap_draws, draws_seed=metrics_cfg.bootstrap_seed,
                  device=split.images.device if split.images is not None else None)
    started = time.perf_counter()
    record: dict[str, Any] = {"core_lr_auc": None, "radial_lr_auc": None, "gate_n_samples": 0}
    try:
        result = shortcut_gates(split.host_images, split.labels, split.groups, mask_radius=0, **common)
        record.update(core_lr_auc=result.core_lr_auc, radial_lr_auc=result.radial_lr_auc,
                      gate_n_samples=result.n_samples, core_lr_auc_ungrouped=result.core_lr_auc_ungrouped,
                      radial_lr_auc_ungrouped=result.radial_lr_auc_ungrouped,
                      radial_feature_max_abs=result.radial_feature_max_abs)
        if intervals:
            record.update(core_lr_auc_ci95=_pair(result.core_interval), radial_lr_auc_ci95=_pair(result.radial_interval))
        if mask_radius > 0:
            masked = shortcut_gates(split.host_images, split.labels, split.groups, mask_radius=mask_radius,
                                    **common)
            record.update(mask_radius=int(mask_radius), masked_core_lr_auc=masked.core_lr_auc,
                          masked_radial_lr_auc=masked.radial_lr_auc,
                          masked_core_lr_auc_ungrouped=masked.core_lr_auc_ungrouped,
                          masked_radial_lr_auc_ungrouped=masked.radial_lr_auc_ungrouped)
            if intervals:
                record.update(masked_core_lr_auc_ci95=_pair(masked.core_interval),
                              masked_radial_lr_auc_ci95=_pair(masked.radial_interval))
    except ValueError as exc:
        # Too few LRGs or one class in the sample (tiny smoke runs): the gate has no value and says why;
        # training goes on, and the verdict shows "no value" rather than a number from a broken probe.
        record["note"] = f"gate not computed: {exc}"
    record["gate_time_sec"] = round(time.perf_counter() - started, 3)
    return record


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return list(interval) if interval is not None else None


# ---------------------------------------------------------------------------
# Verdicts


def with_verdicts(metrics: dict[str, Any], config: Config) -> dict[str, Any]:
    """`metrics` with its §6 verdicts recomputed (engine/results/verdicts.py)."""
    from engine.results.verdicts import compute_verdicts

    metrics["verdicts"] = compute_verdicts(metrics, config.thresholds, config.targets,
                                           variant_core_gate=config.decision.variant_core_gate)
    return metrics


# ---------------------------------------------------------------------------
# Whole-split evaluation with a trained model


def evaluate_split(model: nn.Module, split: DeviceSplit, metrics_cfg: MetricsConfig, *,
                   precision: Precision = FP32, batch_size: int = EVAL_BATCH) -> dict[str, Any]:
    """AUROC, loss, per-θ_E-bin AUROC and the core sensitivity curve of `model` on `split`, each
    with its 95% interval over LRGs (metrics.bootstrap_draws resamples; none when that is 0).

    The one evaluation of a trained model on a whole split: the end of training (val with
    best.pt in final_val_metrics, then the test set once) and `python -m engine.evaluate`
    all call it, and apply_evaluation puts its values under the plan's names. Every interval
    comes from the same draws of the split's LRGs (engine/data/bootstrap.py), so core_reliance's
    is the interval of a paired difference on the same images, and the θ_E bins' minimum and
    spread are computed per draw over the bins that have a value.
    """
    lrg = split_draws(split, metrics_cfg)
    started = time.perf_counter()
    scores = predict(model, split.images, precision=precision, batch_size=batch_size)
    per_radius: dict[int, torch.Tensor] = {}
    curve = core_sensitivity(model, split.images, split.labels, metrics_cfg.sensitivity_radii,
                             precision=precision, batch_size=batch_size, unmasked_scores=scores,
                             lrg=lrg, per_draw=per_radius)
    by_thetae, bin_draws = thetae_bins(split.labels, scores, split.theta_e, metrics_cfg.thetae_bin_pairs,
                                       metrics_cfg.thetae_min_positives, lrg)
    result: dict[str, Any] = {
        "auroc": auroc(split.labels, scores),
        "loss": bce(split.labels, scores),
        "by_thetae": by_thetae,
        "sensitivity": curve,
        "core_reliance": core_reliance(curve, metrics_cfg.core_reliance_radius),
    }
    if lrg is not None:
        r = metrics_cfg.core_reliance_radius
        unmasked = per_radius.get(0)
        result["auroc_ci95"] = _bounds(lrg.interval(unmasked)) if result["auroc"] is not None else None
        result["core_reliance_ci95"] = (_bounds(lrg.interval(unmasked - per_radius[r]))
                                        if result["core_reliance"] is not None else None)
        low = spread = None
        if bin_draws:
            stacked = torch.stack(bin_draws)                 # (bins with a value, draws)
            low = _bounds(lrg.interval(stacked.min(dim=0).values))
            if len(bin_draws) >= 2:
                spread = _bounds(lrg.interval(stacked.max(dim=0).values - stacked.min(dim=0).values))
        result["thetae_min_bin_auroc_ci95"], result["thetae_max_spread_ci95"] = low, spread
        result["bootstrap"] = bootstrap_record(lrg, time.perf_counter() - started)
    return result


def split_draws(split: DeviceSplit, metrics_cfg: MetricsConfig) -> LrgDraws | None:
    """The split's bootstrap draws of LRGs on its device (None when metrics.bootstrap_draws is 0)."""
    if metrics_cfg.bootstrap_draws <= 0 or len(split) == 0:
        return None
    device = split.images.device if split.images is not None else None
    return LrgDraws(split.groups, metrics_cfg.bootstrap_draws, metrics_cfg.bootstrap_seed, device)


def bootstrap_record(lrg: LrgDraws, seconds: float) -> dict[str, Any]:
    """How one split's intervals were drawn (metrics.json `bootstrap`): unit, level, draws, seed, sizes.

    `seconds` is the whole evaluation with intervals (predictions included), as the log shows it."""
    return {"unit": "LRG", "method": "percentile", "level": LEVEL, "draws": lrg.draws, "seed": lrg.seed,
            "rows": lrg.rows, "lrgs": lrg.lrgs, "device": str(lrg.device), "seconds": round(seconds, 3)}


def shown(metrics: dict[str, Any], key: str) -> str:
    """'0.0412 [0.0305–0.0520]': a value with its 95% interval over LRGs, as the log writes it."""
    ci = metrics.get(f"{key}_ci95")
    bounds = f" [{ci[0]:.4f}–{ci[1]:.4f}]" if isinstance(ci, list) and len(ci) == 2 else ""
    return fixed(metrics.get(key), 4, NA) + bounds


def _bounds(found: Interval | None) -> list[float] | None:
    return found.as_list() if found is not None else None


def apply_evaluation(metrics: dict[str, Any], split: str, result: dict[str, Any]) -> None:
    """Write `result` (evaluate_split) into `metrics` under the plan's names for `split`, each
    interval beside its value (`<key>_ci95`; in a bin or a curve point, its `ci95`)."""
    if split == "test":
        metrics["test_auroc"] = result["auroc"]
        metrics["test_auroc_by_thetae"] = result["by_thetae"]
        metrics["test_core_sensitivity"] = result["sensitivity"]
        names = {"auroc_ci95": "test_auroc_ci95", "thetae_min_bin_auroc_ci95": "test_thetae_min_bin_auroc_ci95",
                 "thetae_max_spread_ci95": "test_thetae_max_spread_ci95"}
    else:
        metrics["core_sensitivity"] = result["sensitivity"]
        metrics["core_reliance"] = result["core_reliance"]
        metrics["final_val_auroc_by_thetae"] = result["by_thetae"]
        # best.pt's val AUROC is best_val_auroc (the history's best epoch is best.pt's), so its interval goes there.
        names = {"auroc_ci95": "best_val_auroc_ci95", "core_reliance_ci95": "core_reliance_ci95",
                 "thetae_min_bin_auroc_ci95": "final_val_thetae_min_bin_auroc_ci95",
                 "thetae_max_spread_ci95": "final_val_thetae_max_spread_ci95"}
    for source, key in names.items():
        metrics[key] = result.get(source)
    if "bootstrap" in result:
        record = metrics.get("bootstrap") if isinstance(metrics.get("bootstrap"), dict) else {}
        metrics["bootstrap"] = {**record, split: result["bootstrap"]}


# ---------------------------------------------------------------------------
# The end of training on val, with best.pt (plan §5.3-§5.5): what the verdicts and §10 read

# Where each end-of-training gate value goes in metrics.json (gate_record key -> metrics key).
_FINAL_GATE_KEYS = {
    "core_lr_auc": "final_core_lr_auc", "radial_lr_auc": "final_radial_lr_auc",
    "core_lr_auc_ungrouped": "final_core_lr_auc_ungrouped",
    "radial_lr_auc_ungrouped": "final_radial_lr_auc_ungrouped",
    "gate_n_samples": "final_gate_n_samples", "radial_feature_max_abs": "final_radial_feature_max_abs",
    "note": "final_gate_note", "core_lr_auc_ci95": "final_core_lr_auc_ci95",
    "radial_lr_auc_ci95": "final_radial_lr_auc_ci95",
}
_FINAL_MASKED_KEYS = {
    "mask_radius": "final_mask_radius", "masked_core_lr_auc": "final_masked_core_lr_auc",
    "masked_radial_lr_auc": "final_masked_radial_lr_auc",
    "masked_core_lr_auc_ungrouped": "final_masked_core_lr_auc_ungrouped",
    "masked_radial_lr_auc_ungrouped": "final_masked_radial_lr_auc_ungrouped",
    "masked_core_lr_auc_ci95": "final_masked_core_lr_auc_ci95",
    "masked_radial_lr_auc_ci95": "final_masked_radial_lr_auc_ci95",
}
_RAW_KEYS = {
    "core_lr_auc": "final_raw_robust_core_lr_auc", "radial_lr_auc": "final_raw_robust_radial_lr_auc",
    "core_lr_auc_ungrouped": "final_raw_robust_core_lr_auc_ungrouped",
    "radial_lr_auc_ungrouped": "final_raw_robust_radial_lr_auc_ungrouped",
    "gate_n_samples": "final_raw_robust_gate_n_samples", "note": "final_raw_robust_note",
}


def final_val_metrics(model: nn.Module, val: DeviceSplit, experiment: Experiment, metrics_cfg: MetricsConfig, *,
                      best_epoch: int, precision: Precision = FP32, batch_size: int = EVAL_BATCH,
                      raw_val: DeviceSplit | None = None, raw_note: str | None = None) -> dict[str, Any]:
    """The end-of-training val values of metrics.json, from `model` (best.pt) and the val split.

    - final gates on the whole val split: unmasked (`final_core_lr_auc`, ...: the data's
      shortcut) and, for an experiment that masks, at the radius in force at `best_epoch`
      (best.pt's epoch, counted from 1 as metrics.json counts)
      (`final_mask_radius`, `final_masked_*`: B3's best.pt may come from any step of its
      schedule); each with the published method's `*_ungrouped` beside it;
    - the same probes on `raw_val` (the same rows, raw_robust inputs) as data-level context
      (`final_raw_robust_*`), or `raw_note` saying why there is none;
    - best.pt's val AUROC per θ_E bin (`final_val_auroc_by_thetae`: what §6.3 reads), the core
      sensitivity curve and core_reliance (§5.5);
    - beside every value a verdict or §10 reads, its 95% interval over LRGs (`<key>_ci95`).
    Every key is written on every call (None where there is no value), so a rerun never
    leaves a stale value behind.
    """
    out: dict[str, Any] = {k: None for k in (*_FINAL_GATE_KEYS.values(), *_FINAL_MASKED_KEYS.values(),
                                             *_RAW_KEYS.values())}
    radius, _ = experiment.masking.at_epoch(best_epoch - 1)   # best_epoch counts from 1; at_epoch from 0
    final = gate_record(val, metrics_cfg, n_samples=None, mask_radius=radius, intervals=True)
    for source, key in (*_FINAL_GATE_KEYS.items(), *(_FINAL_MASKED_KEYS.items() if radius else ())):
        out[key] = final.get(source)
    if radius:
        out["final_mask_radius"] = int(radius)
    if raw_val is not None:
        raw = gate_record(raw_val, metrics_cfg, n_samples=None)
        for source, key in _RAW_KEYS.items():
            out[key] = raw.get(source)
    else:
        out["final_raw_robust_note"] = raw_note
    apply_evaluation(out, "val", evaluate_split(model, val, metrics_cfg, precision=precision, batch_size=batch_size))
    return out


# ---------------------------------------------------------------------------
# The command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.evaluate",
                                description="Re-evaluate a run directory's best.pt and update its metrics.json.")
    p.add_argument("--run", required=True, type=Path, help="the run directory (<runs_root>/<experiment>)")
    p.add_argument("--split", required=True, choices=SPLITS[1:], help="val or test (a model is not evaluated on its training split)")
    p.add_argument("--config", type=Path, default=Path("experiments.toml"))
    p.add_argument("--data-root", type=Path, default=None, help="default: the data_root recorded in run.json")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="manifests and stamp caches (default: the run's host's cache_dir; engine/data/cachedir.py)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m engine.evaluate`; returns the exit code."""
    args = _parser().parse_args(argv)
    run_dir: Path = args.run
    try:
        config = load_config(args.config)
        info = rundir.read_run_info(run_dir)
        metrics_read = rundir.read_metrics(run_dir)
        for read, name in ((info, rundir.RUN_FILE), (metrics_read, rundir.METRICS_FILE)):
            if read.data is None:
                raise _Usage(read.error or f"{run_dir / name}: missing; is {run_dir} a run directory?")
        run, metrics = info.data, metrics_read.data
        if not isinstance(run.get("experiment"), str):
            raise _Usage(f"{run_dir / rundir.RUN_FILE}: no experiment id recorded")
        overrides = run.get("overrides") or {}
        experiment = config.experiment(run["experiment"], base=overrides.get("base"))
        data_root = args.data_root or run.get("data_root")
        if not data_root or not Path(data_root).is_dir():
            raise _Usage(f"data root {data_root!r} not found; pass --data-root DIR")
        # The run's host's settings (its cache folder, its dataset's imported manifest) when it read
        # that host's dataset; the config's alone when it was given --data-root.
        host = config.hosts.get(run.get("host")) if run.get("dataset") and args.data_root is None else None
        settings = DataSettings.from_config(config, host).with_cache_dir(args.cache_dir)
        device = pick_device(args.device)
    except (ConfigError, DeviceError, _Usage) as exc:
        print(f"engine.evaluate: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        lock = rundir.acquire_run_lock(run_dir)
    except rundir.AlreadyRunning:
        print(f"engine.evaluate: {run_dir} is training right now; evaluate after it ends", file=sys.stderr)
        return exitcodes.REFUSED
    log = RunLog(run_dir / rundir.LOG_FILE)
    log.header(f"{experiment.id} evaluate --split {args.split}",
               {"command": " ".join([sys.executable, "-m", "engine.evaluate", *(argv or sys.argv[1:])]),
                "pid": os.getpid(), "data": data_root, "device": str(device)})
    try:
        precision = pick_precision(device, config.training.mixed_precision)
        model, ckpt = load_model(run_dir / rundir.BEST_CKPT, device)
        limit = overrides.get("limit_val")
        seed = int(overrides.get("seed", config.training.seed))
        split = load_device_split(config, experiment, data_root, args.split, device, limit=limit, limit_seed=seed,
                                  settings=settings)
        result = evaluate_split(model, split, config.metrics, precision=precision, batch_size=args.batch_size)
        metrics = rundir.read_metrics(run_dir).data or metrics  # the freshest copy, under the lock
        apply_evaluation(metrics, args.split, result)
        rundir.write_metrics(run_dir, with_verdicts(metrics, config))
        log.line(f"evaluate {args.split}: best.pt (epoch {_epoch_from_1(ckpt.get('epoch'))}) on {len(split)} rows: "
                 f"auroc {fixed(result['auroc'], 4, NA)}  core_reliance {fixed(result['core_reliance'], 4, NA)}  "
                 + "  ".join(f"R={c['radius']}:{fixed(c['auroc'], 4, NA)}" for c in result["sensitivity"]))
        return exitcodes.OK
    except CheckpointError as exc:
        log.line(f"engine.evaluate: {exc}")
        return exitcodes.BAD_INPUT
    except _data_errors() as exc:   # the message names the shard, the row and the setting to change
        log.line(f"engine.evaluate FAILED (metrics.json unchanged): bad data: {exc}")
        print(f"engine.evaluate: bad data: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    except Exception:
        log.line(f"engine.evaluate FAILED (metrics.json unchanged):\n{traceback.format_exc().rstrip()}")
        return exitcodes.FAILED
    finally:
        log.close()
        os.close(lock)


class _Usage(Exception):
    """Bad input to the evaluate command."""


def _data_errors() -> tuple[type[Exception], ...]:
    """The data layer's errors, whose messages name the file, the row and what to do."""
    from engine.files import CacheError
    from engine.data.manifest import ManifestError
    from engine.data.shards import BadRowsError, BlobError, ShardError

    return (ShardError, BlobError, BadRowsError, ManifestError, CacheError)


def _epoch_from_1(loop_epoch: Any) -> Any:
    """A checkpoint's 0-based loop counter as metrics.json and every view count epochs (from 1)."""
    return loop_epoch + 1 if is_int(loop_epoch) else "?"


if __name__ == "__main__":
    raise SystemExit(main())
