"""The report's experiment_metrics.csv: one row per experiment, in a stable order of columns.

The columns are listed in engine/results/report.py's docstring (they follow the config's
`sensitivity_radii` and `thetae_bins`); a missing value is an empty cell.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

from engine.config import SPLITS, Config
from engine.files import atomic_write_text
from engine.numbers import number
from engine.results.decision import settings_note
from engine.results.reading import (bin_key, curve_of, effective, epochs_done, gates_in_order, history_of, overrides_text,
                                    test_bins, val_bins)
from engine.results.representative import RunCandidate
from engine.results.uncertainty import pair
from engine.results.verdicts import VERDICT_NAMES, thetae_summary


def csv_columns(config: Config) -> list[str]:
    """The CSV header, in the documented stable order."""
    cols = ["experiment", "status", "host", "dataset", "code_version", "plan_settings", "overrides",
            "epochs_planned", "epochs_completed", "best_val_auroc", "best_epoch", "last_train_loss",
            "last_val_loss", "last_val_auroc", "last_learning_rate", "train_time_sec",
            "gate_after_epochs", "gate_core_lr_auc", "gate_radial_lr_auc", "gate_n_samples",
            "final_core_lr_auc", "final_radial_lr_auc", "core_reliance", "thetae_source",
            "thetae_min_bin_auroc", "thetae_max_spread", "test_auroc"]
    cols += [f"{name}_verdict" for name in VERDICT_NAMES]
    radii = config.metrics.sensitivity_radii
    cols += [f"core_sensitivity_r{r}" for r in radii]
    cols += [f"test_core_sensitivity_r{r}" for r in radii]
    for prefix in ("val", "test"):
        for lo, hi in config.metrics.thetae_bin_pairs:
            cols += [f"{prefix}_auroc_thetae_{bin_key(lo, hi)}", f"{prefix}_count_thetae_{bin_key(lo, hi)}"]
    cols += ["core_gate_reading", "core_lr_auc_judged", *_CONTEXT_KEYS, "radial_uninformative"]
    for split in SPLITS:
        cols += [f"{split}_rows", f"{split}_distinct_positive", f"{split}_distinct_negative"]
    cols += ["replicates_done", "replicates_planned", "replicate_seeds"]
    for name in VERDICT_NAMES:
        cols += [f"{name}_lower", f"{name}_upper", f"{name}_seeds_n", f"{name}_seeds_sd",
                 f"{name}_seeds_lower", f"{name}_seeds_upper", f"{name}_crosses"]
    return cols

# The end-of-training gate values shown beside the judged ones (CSV columns and the probes table).
_CONTEXT_KEYS = ("final_mask_radius", "final_masked_core_lr_auc", "final_masked_radial_lr_auc",
                 "final_core_lr_auc_ungrouped", "final_radial_lr_auc_ungrouped",
                 "final_masked_core_lr_auc_ungrouped", "final_raw_robust_core_lr_auc",
                 "final_raw_robust_radial_lr_auc")

def csv_row(run: RunCandidate, verdicts: Mapping[str, Mapping[str, Any]], config: Config) -> dict[str, Any]:
    """One experiment's CSV row (keys: csv_columns); missing values are empty cells."""
    m, info = run.metrics, run.run_info or {}
    history = history_of(m)
    last = history[-1] if history else {}
    times = [number(r.get("epoch_time_sec")) for r in history]
    gate = (gates_in_order(m) or [{}])[-1]
    th = thetae_summary(m)
    row: dict[str, Any] = {
        "experiment": run.experiment, "status": run.state, "host": info.get("host"),
        "dataset": info.get("dataset"), "code_version": info.get("code_version"),
        "plan_settings": "yes" if settings_note(run.experiment, m) is None else "no",
        "overrides": overrides_text(m), "epochs_planned": m.get("epochs_planned"),
        "epochs_completed": epochs_done(m), "best_val_auroc": number(m.get("best_val_auroc")),
        "best_epoch": m.get("best_epoch"), "last_train_loss": number(last.get("train_loss")),
        "last_val_loss": number(last.get("val_loss")), "last_val_auroc": number(last.get("val_auroc")),
        "last_learning_rate": number(last.get("learning_rate")),
        "train_time_sec": sum(t for t in times if t is not None) if history else None,
        "gate_after_epochs": gate.get("after_epochs"), "gate_core_lr_auc": number(gate.get("core_lr_auc")),
        "gate_radial_lr_auc": number(gate.get("radial_lr_auc")), "gate_n_samples": gate.get("gate_n_samples"),
        "final_core_lr_auc": number(m.get("final_core_lr_auc")),
        "final_radial_lr_auc": number(m.get("final_radial_lr_auc")),
        "core_reliance": number(m.get("core_reliance")), "thetae_source": th.source,
        "thetae_min_bin_auroc": th.min_auroc, "thetae_max_spread": th.max_spread,
        "test_auroc": number(m.get("test_auroc")),
    }
    for name in VERDICT_NAMES:
        row[f"{name}_verdict"] = verdicts[name]["verdict"]
    for key in ("core_sensitivity", "test_core_sensitivity"):
        curve = curve_of(m, key)
        for r in config.metrics.sensitivity_radii:
            row[f"{key}_r{r}"] = curve.get(r)
    for prefix, bins in (("val", val_bins(m)[1]), ("test", test_bins(m))):
        for lo, hi in config.metrics.thetae_bin_pairs:
            record = bins.get(bin_key(lo, hi)) or {}
            row[f"{prefix}_auroc_thetae_{bin_key(lo, hi)}"] = number(record.get("auroc"))
            row[f"{prefix}_count_thetae_{bin_key(lo, hi)}"] = record.get("count")
    core = verdicts["core_lr_auc"]
    row["core_gate_reading"] = core.get("reading")
    row["core_lr_auc_judged"] = core.get("value")
    for key in _CONTEXT_KEYS:
        row[key] = number(m.get(key))
    row["radial_uninformative"] = "yes" if verdicts["radial_lr_auc"].get("uninformative") else "no"
    sample = effective(m)
    for split in SPLITS:
        counts = sample.get(split) or {}
        row[f"{split}_rows"] = counts.get("rows")
        row[f"{split}_distinct_positive"] = counts.get("distinct_positive")
        row[f"{split}_distinct_negative"] = counts.get("distinct_negative")
    rec = m.get("replicates") if isinstance(m.get("replicates"), Mapping) else {}
    exp = config.experiments.get(run.experiment)
    row["replicates_done"] = rec.get("done")
    row["replicates_planned"] = exp.replicates if exp is not None else None
    row["replicate_seeds"] = " ".join(str(s) for s in rec.get("seeds") or [] if s is not None) or None
    for name in VERDICT_NAMES:
        v = verdicts[name]
        interval, seeds = pair(v.get("interval")), v.get("seeds") if isinstance(v.get("seeds"), Mapping) else {}
        spread = pair(seeds.get("ci95"))
        row[f"{name}_lower"], row[f"{name}_upper"] = interval if interval else (None, None)
        row[f"{name}_seeds_n"], row[f"{name}_seeds_sd"] = seeds.get("n"), number(seeds.get("sd"))
        row[f"{name}_seeds_lower"], row[f"{name}_seeds_upper"] = spread if spread else (None, None)
        row[f"{name}_crosses"] = " ".join(f"{e:g}" for e in v.get("crosses") or []) or None
    return row

def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """The CSV, written whole (engine/files.py: a reader never sees half)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    atomic_write_text(path, text.getvalue())
