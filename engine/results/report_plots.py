"""The report's three PNG plots (matplotlib, Agg, imported only here): learning curves, θ_E bins, core sensitivity.

The θ_E bins and the sensitivity curves carry error bars: each point's 95% interval over LRGs
(`ci95`, written at the end of training; for pooled seed replicates, the mean of theirs), where
the run has one.

matplotlib is an optional dependency of the report alone: without it the Markdown and the CSV
are still written and the report says why there are no plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import Config
from engine.files import replace_via_temp
from engine.numbers import number
from engine.results.reading import bin_key, curve_of, history_of, plan_order_of, val_bins
from engine.results.uncertainty import pair
from engine.results.verdicts import thetae_summary

if TYPE_CHECKING:
    from engine.results.report import Collection

PLOT_FILES = ("learning_curves.png", "thetae_bins.png", "core_sensitivity.png")


def write_plots(collection: Collection, config: Config, out_dir: Path) -> tuple[list[str], str | None]:
    """Draw the three PNGs; ([], why) where matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return [], ("Plots were not drawn: matplotlib is not installed for this Python "
                    "(`python -m pip install matplotlib`); the tables above hold every value.")
    runs = collection.runs
    ids = [e for e in plan_order_of(collection, config) if e in runs]
    th = config.thresholds

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for i, e in enumerate(ids):
        history = history_of(runs[e].metrics)
        epochs = [r.get("epoch", n + 1) for n, r in enumerate(history)]
        color = f"C{i % 10}"
        for key, style, label in (("train_loss", "-", "train"), ("val_loss", "--", "val")):
            ys = [_nan(r.get(key)) for r in history]
            if history:
                ax_loss.plot(epochs, ys, style, color=color, label=f"{e} {label}")
        if history:
            ax_auc.plot(epochs, [_nan(r.get("val_auroc")) for r in history], "-", color=color, label=e)
            drawn = True
    ax_auc.axhline(config.targets.val_auroc, color="grey", linestyle=":",
                   label=f"target {config.targets.val_auroc:.2f}")
    for ax in (ax_loss, ax_auc):   # epochs are whole numbers, counted from 1
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax_loss, "epoch", "BCE loss", "Loss (solid train, dashed val)", drawn)
    _finish(ax_auc, "epoch", "val AUROC", "Validation AUROC", drawn)
    _save(fig, plt, out_dir / PLOT_FILES[0])

    fig, ax = plt.subplots(figsize=(8, 4))
    pairs = config.metrics.thetae_bin_pairs
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in pairs]
    drawn = False
    for i, e in enumerate(ids):
        m = runs[e].metrics
        summary = thetae_summary(m)
        bins = val_bins(m)[1]
        records = [bins.get(bin_key(lo, hi)) or {} for lo, hi in pairs]
        ys = [_nan(r.get("auroc")) for r in records]
        if bins:
            ax.errorbar(range(len(pairs)), ys, yerr=_yerr(ys, [r.get("ci95") for r in records]), fmt="o-",
                        color=f"C{i % 10}", capsize=3, label=f"{e} ({summary.kind})")
            drawn = True
    ax.axhline(th.thetae_min_bin_auroc.pass_limit, color="green", linestyle=":", label="PASS above")
    ax.axhline(th.thetae_min_bin_auroc.fail_limit, color="red", linestyle=":", label="FAIL below")
    ax.set_xticks(range(len(pairs)), labels)
    _finish(ax, "θ_E bin (arcsec)", "AUROC", "Val AUROC by θ_E bin (best.pt where written, else latest gate)",
            drawn)
    _save(fig, plt, out_dir / PLOT_FILES[1])

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for i, e in enumerate(ids):
        for key, style, kind in (("core_sensitivity", "o-", "val"), ("test_core_sensitivity", "s--", "test")):
            curve = curve_of(runs[e].metrics, key)
            if curve:
                radii = sorted(curve)
                ys = [curve[r] for r in radii]
                points = {p.get("radius"): p for p in runs[e].metrics.get(key) or [] if isinstance(p, dict)}
                ax.errorbar(radii, ys, yerr=_yerr(ys, [(points.get(r) or {}).get("ci95") for r in radii]),
                            fmt=style, color=f"C{i % 10}", capsize=3, label=f"{e} {kind}")
                drawn = True
    ax.axvline(config.metrics.core_reliance_radius, color="grey", linestyle=":",
               label=f"R={config.metrics.core_reliance_radius} (core_reliance)")
    _finish(ax, "core mask radius R (px)", "AUROC", "Core sensitivity (solid val, dashed test)", drawn)
    _save(fig, plt, out_dir / PLOT_FILES[2])
    return list(PLOT_FILES), None

def _yerr(ys: list[float], intervals: list[Any]) -> list[list[float]] | None:
    """matplotlib's asymmetric error bars from [low, high] intervals (0 where a point has none);
    None when no point has one."""
    lows, highs, any_interval = [], [], False
    for y, raw in zip(ys, intervals):
        bounds = pair(raw)
        if bounds is None or y != y:
            lows.append(0.0)
            highs.append(0.0)
            continue
        any_interval = True
        lows.append(max(0.0, y - bounds[0]))
        highs.append(max(0.0, bounds[1] - y))
    return [lows, highs] if any_interval else None


def _nan(value: Any) -> float:
    v = number(value)
    return float("nan") if v is None else v

def _finish(ax: Any, xlabel: str, ylabel: str, title: str, drawn: bool) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)

def _save(fig: Any, plt: Any, path: Path) -> None:
    fig.tight_layout()
    try:
        replace_via_temp(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
