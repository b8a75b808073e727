"""Plan §9.2: the results report, from the run directories of one or more hosts.

    python -m engine.report --runs-root runs [--runs-root fetched/lambda2 ...] \\
        [--config experiments.toml] --out planb/ [--no-plots]

writes into --out:

    EXPERIMENT_RESULTS.md    the decision (§10) and its reason, the results matrix with every
                             metric and its §6 verdict in words ("0.612 (WARN)"), the gate history,
                             the θ_E table, the core sensitivity table, the learning-curve summary,
                             run provenance (a run that overrode experiments.toml is marked
                             "NOT the plan's settings: …"), and the notes a reader must see
    experiment_metrics.csv   one row per experiment found, the columns of `csv_columns` below
    learning_curves.png, thetae_bins.png, core_sensitivity.png
                             matplotlib (Agg); an optional dependency of the report only: without
                             it the Markdown and the CSV are still written and the report says so

Exit codes: 0 written; 1 the output could not be written; 2 bad input (a bad config, no run
directory under any --runs-root: the message names where it looked).

Several --runs-root are the results fetched from several hosts. The same experiment found more
than once: engine.results.representative's rule picks the run that stands for it (the one the matrix,
the decision panel and `lenstui status` show), the report says which and why, lists the others
under "Runs of each experiment", and warns when the runs it compares used different datasets
or settings.
Verdicts are recomputed from the values with this config's thresholds and `[decision]`
reading (engine.results.verdicts), so a report never shows verdicts of an older threshold table.
The decision and the verdicts read validation numbers only; the test numbers are shown in
their own columns and tables, marked held out (§5.6).

CSV columns, in this order (stable for a given experiments.toml; the radius and bin columns
follow its `sensitivity_radii` and `thetae_bins`):

    experiment, status, host, dataset, code_version, plan_settings ("yes"/"no"), overrides
    ("k=v; …"), epochs_planned, epochs_completed, best_val_auroc, best_epoch, last_train_loss,
    last_val_loss, last_val_auroc, last_learning_rate, train_time_sec, gate_after_epochs,
    gate_core_lr_auc, gate_radial_lr_auc, gate_n_samples, final_core_lr_auc, final_radial_lr_auc,
    core_reliance, thetae_source, thetae_min_bin_auroc, thetae_max_spread, test_auroc,
    <name>_verdict for each engine.results.verdicts.VERDICT_NAMES,
    core_sensitivity_r<R> for each R, test_core_sensitivity_r<R> for each R,
    val_auroc_thetae_<lo>_<hi>, val_count_thetae_<lo>_<hi> for each bin (best.pt's val table,
    else the latest gate's: thetae_source says which),
    test_auroc_thetae_<lo>_<hi>, test_count_thetae_<lo>_<hi> for each bin (held out),
    core_gate_reading, core_lr_auc_judged, final_mask_radius, final_masked_core_lr_auc,
    final_masked_radial_lr_auc, final_core_lr_auc_ungrouped, final_radial_lr_auc_ungrouped,
    final_masked_core_lr_auc_ungrouped, final_raw_robust_core_lr_auc,
    final_raw_robust_radial_lr_auc, radial_uninformative ("yes"/"no"),
    <split>_rows, <split>_distinct_positive, <split>_distinct_negative for train, val, test

Torch-free and NumPy-free at import; matplotlib is imported only to draw.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from engine.config import SPLITS, Config, ConfigError, default_config_path, load_config
from engine.files import atomic_write_text, replace_via_temp
from engine.numbers import DASH, fixed, number, scientific
from engine.protocol import exitcodes
from engine.results.decision import Decision, decide, settings_note
from engine.results.representative import (Choice, RunCandidate, candidate_from_entry, choose_all, comparison_notes,
                                   settings_text, time_text)
from engine.protocol.rundir import METRICS_FILE, RunState, observe_run, run_directories
from engine.results.verdicts import (THETAE_KINDS, VERDICT_NAMES, compute_verdicts, gates_in_order, gate_verdicts,
                             latest_gate_with, thetae_summary)

DEFAULT_OUT = "planb"   # plan §9.2; lenstui writes it beside experiments.toml
RESULTS_MD = "EXPERIMENT_RESULTS.md"
METRICS_CSV = "experiment_metrics.csv"
PLOT_FILES = ("learning_curves.png", "thetae_bins.png", "core_sensitivity.png")

_VERDICT_LABELS = {
    "val_auroc": "Best val AUROC (§6.4)",
    "core_lr_auc": "Core LR AUC (§6.1)",
    "radial_lr_auc": "Radial LR AUC (§6.1)",
    "core_reliance": "Core reliance (§6.2)",
    "thetae_min_bin_auroc": "θ_E min bin AUROC (§6.3)",
    "thetae_max_spread": "θ_E max AUROC spread (§6.3)",
    "test_auroc": "Test AUROC (§6.4; held out, not used for selection)",
}
_MATRIX_ORDER = ("val_auroc", "core_lr_auc", "radial_lr_auc", "core_reliance",
                 "thetae_min_bin_auroc", "thetae_max_spread", "test_auroc")


# ---------------------------------------------------------------------------
# Finding the runs


FoundRun = RunCandidate   # one run as the report uses it (engine/results/representative.py)


@dataclass(frozen=True)
class Collection:
    """Every run found, the one that stands for each experiment, and what was noticed on the way."""

    runs: dict[str, RunCandidate]   # experiment -> the run that stands for it (engine.results.representative)
    notes: tuple[str, ...]
    looked_in: tuple[str, ...]      # "runs (3 run directories)", "fetched/x (does not exist)"
    choices: Mapping[str, Choice] = field(default_factory=dict)   # experiment -> every run of it, ranked


def _local_hosts(config: Config | None) -> set[str]:
    if config is None:
        return set()
    return {h.name for h in config.hosts.values() if h.transport == "local"}


def _found_run(directory: Path, config: Config | None, order: int = 0) -> RunCandidate:
    view = observe_run(directory)
    metrics = dict(view.metrics or {})
    state, note = view.state.value, view.reason
    host = (view.run_info or {}).get("host")
    # A copy fetched from another machine cannot be checked against this machine's processes.
    if config is not None and isinstance(host, str) and host not in _local_hosts(config):
        written = metrics.get("status") or (view.run_info or {}).get("status") or RunState.PENDING
        state, note = str(written), f"as written on {host}; its process is not checked from here"
    return RunCandidate(view.experiment, host if isinstance(host, str) else None, str(directory), state, metrics,
                        view.run_info, note, view.errors, order)


def collect_runs(roots: Sequence[str | Path], config: Config | None = None) -> Collection:
    """Read every run directory under each of `roots`; the run that stands for each experiment is
    chosen by engine.results.representative's rule, and the report lists the others."""
    notes: list[str] = []
    looked_in: list[str] = []
    found: list[RunCandidate] = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            looked_in.append(f"{path} (does not exist)")
            continue
        if not path.is_dir():
            looked_in.append(f"{path} (not a folder)")
            continue
        run_dirs = run_directories(path)
        hint = ""
        if (path / METRICS_FILE).is_file():
            hint = "; it holds metrics.json itself: pass its parent folder"
        looked_in.append(f"{path} ({len(run_dirs)} run director{'y' if len(run_dirs) == 1 else 'ies'}{hint})")
        for d in run_dirs:
            run = _found_run(d, config, order=len(found))
            found.append(run)
            notes.extend(f"{run.experiment}: {e}" for e in run.errors)
            named = run.metrics.get("experiment")
            if isinstance(named, str) and named != run.experiment:
                notes.append(f"{d}: metrics.json names experiment {named!r}; the folder name "
                             f"{run.experiment!r} is used")
    return collection_from_candidates(found, config, looked_in, notes)


def collection_from_candidates(candidates: Sequence[RunCandidate], config: Config | None,
                               looked_in: Sequence[str], notes: Sequence[str] = ()) -> Collection:
    """A Collection from runs found anywhere (run directories, or lenstui's hosts): the rule picks."""
    choices = choose_all(candidates, config.training.epochs if config is not None else None)
    notes = list(notes)
    for exp_id, choice in choices.items():
        if choice.others:
            notes.append(f"{exp_id} has {len(choice.ranked)} runs: {choice.reason()}")
    runs = {e: c.chosen for e, c in choices.items()}
    if config is not None:
        ids = [e for e in _ordered(runs, config)]
        notes += [f"Warning: {n}" for n in comparison_notes(runs, ids)]
    return Collection(runs, tuple(notes), tuple(looked_in), choices)


def collection_from_results(results: Mapping[str, Mapping[str, Any]]) -> Collection:
    """A Collection from metrics-like dicts: lenstui's status entries (their `state` and `run`
    keys are used) or plain metrics.json contents, one run per experiment."""
    runs = {exp_id: candidate_from_entry(exp_id, entry) for exp_id, entry in results.items()}
    return Collection(runs, (), ("the latest status of every host, as lenstui shows it",),
                      {e: Choice(e, c) for e, c in runs.items()})


def _ordered(runs: Mapping[str, Any], config: Config) -> list[str]:
    return list(config.experiments) + sorted(e for e in runs if e not in config.experiments)


def decision_inputs(collection: Collection) -> dict[str, dict[str, Any]]:
    """Experiment id → metrics with `status` set to the state the report shows and `run` its
    provenance (host, dataset), for `decide`."""
    return {e: {**r.metrics, "status": r.state, "run": dict(r.run_info or {}, host=r.host)}
            for e, r in collection.runs.items() if r.metrics}


# ---------------------------------------------------------------------------
# Formatting helpers


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def verdict_cell(entry: Mapping[str, Any] | None) -> str:
    """'0.612 (WARN)'; a gate-sourced value says so: '0.612 (WARN, gate after 10 epochs)'; a masked
    reading names its radius; a gate that cannot fail on the run's inputs says so."""
    if not entry or entry.get("value") is None:
        return DASH
    words = [entry.get("verdict") or "no verdict"]
    source = entry.get("source") or ""
    if entry.get("reading") == "masked":
        words.append(f"masked at R={entry.get('mask_radius')}")
    if source.startswith("gates["):
        words.append(f"gate after {source.split('=')[1].split(']')[0]} epochs")
    elif source.startswith("history"):
        words.append("best so far")
    elif source == "final_val_auroc_by_thetae":
        words.append("val, best.pt")
    if entry.get("uninformative"):
        words.append("cannot fail on residual inputs")
    return f"{entry['value']:.3f} ({', '.join(words)})"


def epochs_completed(metrics: Mapping[str, Any]) -> int:
    history = metrics.get("history")
    return len(history) if isinstance(history, list) else 0


def _history(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = metrics.get("history")
    return [r for r in history if isinstance(r, Mapping)] if isinstance(history, list) else []


def _settings(exp_id: str, metrics: Mapping[str, Any]) -> str:
    note = settings_note(exp_id, metrics)
    return "plan's settings" if note is None else "**" + note.split(" ran with ", 1)[1] + "**"


def _overrides_text(metrics: Mapping[str, Any]) -> str:
    overrides = metrics.get("overrides")
    if not isinstance(overrides, Mapping):
        return ""
    return "; ".join(f"{k}={v}" for k, v in overrides.items())


def _bin_key(lo: float, hi: float) -> str:
    return f"{lo:.2f}_{hi:.2f}"


def _bins_by_edges(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for record in records:
        edges = record.get("bin")
        if isinstance(edges, (list, tuple)) and len(edges) == 2:
            lo, hi = number(edges[0]), number(edges[1])
            if lo is not None and hi is not None:
                out[_bin_key(lo, hi)] = record
    return out


def _val_bins(metrics: Mapping[str, Any]) -> tuple[str | None, dict[str, Mapping[str, Any]]]:
    """best.pt's val table (end of training) when written, else the latest gate's; and which."""
    final = metrics.get("final_val_auroc_by_thetae")
    if isinstance(final, list) and final:
        return "best.pt", _bins_by_edges(r for r in final if isinstance(r, Mapping))
    gate = latest_gate_with(metrics, "val_auroc_by_thetae")
    if gate is None:
        return None, {}
    return f"gate after {gate.get('after_epochs')} epochs", _bins_by_edges(gate["val_auroc_by_thetae"])


def _test_bins(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    records = metrics.get("test_auroc_by_thetae")
    return _bins_by_edges(r for r in records if isinstance(r, Mapping)) if isinstance(records, list) else {}


def _curve(metrics: Mapping[str, Any], key: str) -> dict[int, float]:
    points = metrics.get(key)
    out = {}
    if isinstance(points, list):
        for p in points:
            if isinstance(p, Mapping) and number(p.get("radius")) is not None:
                value = number(p.get("auroc"))
                if value is not None:
                    out[int(number(p["radius"]))] = value
    return out


def _bin_cell(record: Mapping[str, Any] | None) -> str:
    if record is None:
        return DASH
    count = record.get("count")
    auroc = number(record.get("auroc"))
    if auroc is None:
        why = record.get("note") or "no AUROC"
        return f"{DASH} (n={count}: {why})"
    return f"{auroc:.3f} (n={count})"


# ---------------------------------------------------------------------------
# The CSV


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
            cols += [f"{prefix}_auroc_thetae_{_bin_key(lo, hi)}", f"{prefix}_count_thetae_{_bin_key(lo, hi)}"]
    cols += ["core_gate_reading", "core_lr_auc_judged", *_CONTEXT_KEYS, "radial_uninformative"]
    for split in SPLITS:
        cols += [f"{split}_rows", f"{split}_distinct_positive", f"{split}_distinct_negative"]
    return cols


# The end-of-training gate values shown beside the judged ones (CSV columns and the probes table).
_CONTEXT_KEYS = ("final_mask_radius", "final_masked_core_lr_auc", "final_masked_radial_lr_auc",
                 "final_core_lr_auc_ungrouped", "final_radial_lr_auc_ungrouped",
                 "final_masked_core_lr_auc_ungrouped", "final_raw_robust_core_lr_auc",
                 "final_raw_robust_radial_lr_auc")


def csv_row(run: FoundRun, verdicts: Mapping[str, Mapping[str, Any]], config: Config) -> dict[str, Any]:
    """One experiment's CSV row (keys: csv_columns); missing values are empty cells."""
    m, info = run.metrics, run.run_info or {}
    history = _history(m)
    last = history[-1] if history else {}
    times = [number(r.get("epoch_time_sec")) for r in history]
    gate = (gates_in_order(m) or [{}])[-1]
    th = thetae_summary(m)
    row: dict[str, Any] = {
        "experiment": run.experiment, "status": run.state, "host": info.get("host"),
        "dataset": info.get("dataset"), "code_version": info.get("code_version"),
        "plan_settings": "yes" if settings_note(run.experiment, m) is None else "no",
        "overrides": _overrides_text(m), "epochs_planned": m.get("epochs_planned"),
        "epochs_completed": epochs_completed(m), "best_val_auroc": number(m.get("best_val_auroc")),
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
        curve = _curve(m, key)
        for r in config.metrics.sensitivity_radii:
            row[f"{key}_r{r}"] = curve.get(r)
    for prefix, bins in (("val", _val_bins(m)[1]), ("test", _test_bins(m))):
        for lo, hi in config.metrics.thetae_bin_pairs:
            record = bins.get(_bin_key(lo, hi)) or {}
            row[f"{prefix}_auroc_thetae_{_bin_key(lo, hi)}"] = number(record.get("auroc"))
            row[f"{prefix}_count_thetae_{_bin_key(lo, hi)}"] = record.get("count")
    core = verdicts["core_lr_auc"]
    row["core_gate_reading"] = core.get("reading")
    row["core_lr_auc_judged"] = core.get("value")
    for key in _CONTEXT_KEYS:
        row[key] = number(m.get(key))
    row["radial_uninformative"] = "yes" if verdicts["radial_lr_auc"].get("uninformative") else "no"
    sample = _effective(m)
    for split in SPLITS:
        counts = sample.get(split) or {}
        row[f"{split}_rows"] = counts.get("rows")
        row[f"{split}_distinct_positive"] = counts.get("distinct_positive")
        row[f"{split}_distinct_negative"] = counts.get("distinct_negative")
    return row


def _effective(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    sample = metrics.get("effective_sample")
    return {k: v for k, v in sample.items() if isinstance(v, Mapping)} if isinstance(sample, Mapping) else {}


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """The CSV, written whole (engine/files.py: a reader never sees half)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    atomic_write_text(path, text.getvalue())


# ---------------------------------------------------------------------------
# The Markdown


def _ordered_ids(collection: Collection, config: Config) -> list[str]:
    """The plan's experiments in the file's order, then any other experiment found."""
    return _ordered(collection.runs, config)


def render_decision(decision: Decision) -> list[str]:
    """The §10 section: title, reason, criterion, what to run next, the numbers."""
    lines = ["## Decision (plan §10)", "", f"**{decision.title}** (branch `{decision.branch}`)", "",
             decision.reason, ""]
    if decision.criterion:
        lines.append(f"- Decided by: {decision.criterion}")
    if decision.next_experiments:
        base = f" with the config of {decision.base}" if decision.base else ""
        lines.append(f"- Next: run {', '.join(decision.next_experiments)}{base}")
    elif decision.stop:
        lines.append("- Next: nothing — the plan says STOP")
    else:
        lines.append("- Next: nothing to launch yet")
    if decision.outside_plan:
        lines.append("- **Outside the plan**: no branch of §10 covers these results; a person decides")
    if decision.provisional:
        lines.append("- **Provisional**: see the notes below")
    lines += [f"- Note: {n}" for n in decision.notes]
    lines += [f"- Read: {r}" for r in decision.readings]
    if decision.numbers:
        lines += ["", *_table(("Number", "Value"), ((k, fixed(v, 4))
                                                     for k, v in decision.numbers.items()))]
    return lines + [""]


def render_markdown(collection: Collection, config: Config, decision: Decision,
                    verdicts: Mapping[str, Mapping[str, Mapping[str, Any]]],
                    plots: Sequence[str], plot_note: str | None, generated_at: str) -> str:
    """EXPERIMENT_RESULTS.md as text."""
    ids = _ordered_ids(collection, config)
    runs = collection.runs
    found = [e for e in ids if e in runs]
    lines = [f"# Experiment results — {config.plan_name}", "",
             f"Generated {generated_at} from {config.source} (sha256 {config.sha256[:12]}). "
             f"Runs read from: {'; '.join(collection.looked_in)}.", ""]
    lines += render_decision(decision)

    # The matrix: one column per experiment of the plan (and any other found).
    lines += ["## Results matrix (plan §5, verdicts §6)", "",
              "Each value with its verdict in words. §6.3 names only PASS and FAIL: values between "
              "are WARN. §6.4 is a target, not a band: PASS above it, FAIL otherwise. Every verdict "
              "but the test AUROC reads validation numbers; the test set is held out (§5.6).", ""]
    rules = {name: (verdicts[found[0]][name]["rule"] if found else "") for name in VERDICT_NAMES}
    rows = [["Status", ""] + [_status_cell(runs.get(e)) for e in ids],
            ["Host", ""] + [(runs[e].host or DASH) if e in runs else DASH for e in ids],
            ["Epochs (done/planned)", ""] + [_epochs_cell(runs.get(e)) for e in ids],
            ["Best epoch", ""] + [fixed(runs[e].metrics.get("best_epoch"), 0) if e in runs else DASH
                                  for e in ids]]
    for name in _MATRIX_ORDER:
        rows.append([_VERDICT_LABELS[name], rules[name]]
                    + [verdict_cell(verdicts[e][name]) if e in runs else DASH for e in ids])
    rows.append(["Settings", ""] + [_settings(e, runs[e].metrics) if e in runs else DASH for e in ids])
    lines += _table(["Metric", "Rule"] + ids, rows) + [""]
    warnings = [n[len("Warning: "):] for n in collection.notes if n.startswith("Warning: ")]
    lines += [f"**Warning:** {w}." for w in warnings] + ([""] if warnings else [])
    lines += render_runs(collection, ids)
    lines += render_selection(found, runs, verdicts, config)
    lines += render_probes(found, runs, verdicts, config)
    lines += render_effective_sample(found, runs)

    lines += ["## Gate history (plan §5.2, every "
              f"{config.metrics.gate_every_epochs} epochs on {config.metrics.gate_n_samples} samples)", ""]
    gate_rows = []
    for e in found:
        for gate in gates_in_order(runs[e].metrics):
            gv = gate_verdicts(gate, config.thresholds)
            radius = number(gate.get("mask_radius"))
            masked = f"{fixed(gate.get('masked_core_lr_auc'))} (R={radius:.0f})" if radius else DASH
            gate_rows.append([e, gate.get("after_epochs"), _plain_verdict(gv["core_lr_auc"]), masked,
                              fixed(gate.get("core_lr_auc_ungrouped")), _plain_verdict(gv["radial_lr_auc"]),
                              gate.get("gate_n_samples", DASH), gate.get("note") or ""])
    lines += (_table(("Experiment", "After epochs", "Core LR AUC (unmasked)", "Core, masked at the radius in force",
                      "Core, ungrouped (published method)", "Radial LR AUC", "Samples", "Note"), gate_rows)
              if gate_rows else ["No gate has been evaluated yet."]) + [""]

    lines += render_thetae(found, runs, config) + render_sensitivity(found, runs, config)
    lines += render_learning(found, runs)

    lines += ["## Plots", ""]
    lines += [f"![{p.rsplit('.', 1)[0].replace('_', ' ')}]({p})" for p in plots]
    if plot_note:
        lines.append(plot_note)
    lines.append("")

    lines += render_provenance(found, runs, config)
    notes = list(collection.notes) + ([plot_note] if plot_note else [])
    lines += ["## Notes", ""] + ([f"- {n}" for n in notes] if notes else ["None."]) + [""]
    return "\n".join(lines)


def render_runs(collection: Collection, ids: Sequence[str]) -> list[str]:
    """Every run found of each experiment, the one that stands for it first (engine.results.representative)."""
    lines = ["## Runs of each experiment", "",
             "Where an experiment ran more than once, one rule picks the run that stands for it: completed "
             "or in progress before ended incomplete, the plan's settings before overrides (fewer epochs, "
             "then row limits), completed before in progress, then the newest. Every other run is listed.", ""]
    rows = []
    for e in ids:
        choice = collection.choices.get(e)
        if choice is None:
            continue
        for i, run in enumerate(choice.ranked):
            info = run.run_info or {}
            rows.append([e, "**yes**" if i == 0 else f"no: {choice.reasons[i - 1]}", run.state,
                         run.host or DASH, run.location, run.dataset or DASH, settings_text(run),
                         _epochs_cell(run), time_text(run), info.get("code_version") or DASH])
    if not rows:
        return lines + ["No run yet.", ""]
    return lines + _table(("Experiment", "Stands for it", "State", "Host", "Directory", "Dataset", "Settings",
                           "Epochs", "Updated", "Code version"), rows) + [""]


def _plain_verdict(entry: Mapping[str, Any]) -> str:
    if entry.get("value") is None:
        return DASH
    return f"{entry['value']:.3f} ({entry.get('verdict')})"


def _status_cell(run: FoundRun | None) -> str:
    if run is None:
        return "not run"
    return run.state + (f" ({run.state_note})" if run.state_note else "")


def _epochs_cell(run: FoundRun | None) -> str:
    if run is None:
        return DASH
    planned = run.metrics.get("epochs_planned")
    return f"{epochs_completed(run.metrics)}/{planned if planned is not None else '?'}"


def render_selection(found: list[str], runs: Mapping[str, FoundRun],
                     verdicts: Mapping[str, Mapping[str, Mapping[str, Any]]], config: Config) -> list[str]:
    """The validation numbers the decision reads, one row per run, beside the held-out test column."""
    lines = ["## What the decision reads (validation) beside the held-out test", "",
             "Every number left of the test column is a validation number; the §6 verdicts and the §10 "
             "decision read those only. The test column is held out (§5.6: final evaluation only): shown, "
             "never used to choose a configuration. The Phase-4 run's test evaluation is the plan's final one.",
             ""]
    if not found:
        return lines + ["No run yet.", ""]
    rows = []
    for e in found:
        v, m = verdicts[e], runs[e].metrics
        test = thetae_summary(m, "test")
        test_bins = (f"{fixed(test.min_auroc)} / {fixed(test.max_spread)}" if test.source else DASH)
        rows.append([e, verdict_cell(v["val_auroc"]), verdict_cell(v["core_lr_auc"]), verdict_cell(v["radial_lr_auc"]),
                     verdict_cell(v["core_reliance"]), verdict_cell(v["thetae_min_bin_auroc"]),
                     verdict_cell(v["thetae_max_spread"]), f"{fixed(m.get('test_auroc'))} ({v['test_auroc']['verdict'] or DASH})"
                     if number(m.get("test_auroc")) is not None else DASH, test_bins])
    return lines + _table(("Experiment", "Best val AUROC", "Core gate (judged)", "Radial gate", "Core reliance",
                           "θ_E min bin (val)", "θ_E spread (val)", "Test AUROC (held out)",
                           "Test θ_E min / spread (held out)"), rows) + [""]


def render_probes(found: list[str], runs: Mapping[str, FoundRun],
                  verdicts: Mapping[str, Mapping[str, Mapping[str, Any]]], config: Config) -> list[str]:
    """The shortcut probes side by side: judged, unmasked, masked, ungrouped, and on raw_robust inputs."""
    reading = config.decision.variant_core_gate
    lines = ["## Shortcut probes side by side (plan §5.2, §5.4)", "",
             f"The core gate a verdict judges (`[decision] variant_core_gate = \"{reading}\"`): for a run "
             "that masks the core in training, " + ("the probe on val images masked at its radius (B3: the "
             "radius at its best.pt epoch), the definition of the published \"+R7\" row; the unmasked probe "
             "is the data's shortcut, which B1-B4 share." if reading == "masked" else "the unmasked probe, "
             "which B1-B4 share.") + " Every value is grouped by LRG in the CV folds. *Ungrouped* is the "
             "published method's value (plain StratifiedKFold): in the unpaired view an LRG's ~12 near-identical "
             "rows carry one label, so plain folds let the probe recognise hosts it trained on, and the value "
             "reads high; it is shown for comparison with the published matrix, never judged. *raw_robust* is "
             "the same probe on the same val rows before the radial profile is subtracted: data-level context.",
             ""]
    if not found:
        return lines + ["No run yet.", ""]
    rows, flat = [], []
    for e in found:
        m, core, radial = runs[e].metrics, verdicts[e]["core_lr_auc"], verdicts[e]["radial_lr_auc"]
        radius = number(m.get("final_mask_radius"))
        masked = f"{fixed(m.get('final_masked_core_lr_auc'))} (R={radius:.0f})" if radius else DASH
        rows.append([e, verdict_cell(core), fixed(m.get("final_core_lr_auc")), masked,
                     fixed(m.get("final_core_lr_auc_ungrouped")),
                     fixed(m.get("final_masked_core_lr_auc_ungrouped")) if radius else DASH,
                     verdict_cell(radial), fixed(m.get("final_radial_lr_auc_ungrouped")),
                     f"{fixed(m.get('final_raw_robust_core_lr_auc'))} / {fixed(m.get('final_raw_robust_radial_lr_auc'))}"])
        if radial.get("uninformative"):
            flat.append((e, radial["uninformative"]))
    lines += _table(("Experiment", "Core gate (judged)", "Core, unmasked (the data's shortcut)",
                     "Core, masked at the run's radius", "Core, ungrouped (published method)",
                     "Masked core, ungrouped", "Radial gate", "Radial, ungrouped (published method)",
                     "raw_robust core / radial (context)"), rows) + [""]
    if flat:
        lines += ["**The radial gate cannot fail on residual inputs.** Residual preprocessing subtracts "
                  "each ring's median, so the radial profile the probe reads is ~0 whatever the data hold, "
                  "and a PASS there says nothing about a radial shortcut. The raw_robust column is what the "
                  "same rows carry before that subtraction.", ""]
        by_text: dict[str, list[str]] = {}
        for e, text in flat:
            by_text.setdefault(text, []).append(e)
        lines += [f"- {', '.join(es)}: {text}" for text, es in by_text.items()] + [""]
    return lines


def render_effective_sample(found: list[str], runs: Mapping[str, FoundRun]) -> list[str]:
    """Rows and distinct images per split and label: the effective sample size."""
    lines = ["## Effective sample size", "",
             "Rows per split and label, and how many distinct images they hold (distinct image bytes; "
             "LRGs in brackets). In the unpaired view a negative LRG gives its one control image to each "
             "of its rows, so the negatives hold far fewer distinct images than rows: unbiased, but a "
             "smaller sample than the row count suggests.", ""]
    rows = []
    for e in found:
        for split, counts in _effective(runs[e].metrics).items():
            rows.append([e, split, counts.get("rows", DASH),
                         f"{counts.get('positive', DASH)} / {counts.get('distinct_positive', DASH)} "
                         f"({counts.get('positive_lrgs', DASH)})",
                         f"{counts.get('negative', DASH)} / {counts.get('distinct_negative', DASH)} "
                         f"({counts.get('negative_lrgs', DASH)})"])
    if not rows:
        return lines + ["No run has recorded it yet (written when a run loads its data).", ""]
    return lines + _table(("Experiment", "Split", "Rows", "Lenses: rows / distinct (LRGs)",
                           "Non-lenses: rows / distinct (LRGs)"), rows) + [""]


def render_thetae(found: list[str], runs: Mapping[str, FoundRun], config: Config) -> list[str]:
    """§5.3: AUROC and positives per θ_E bin, validation (latest gate) and test where measured."""
    lines = ["## θ_E stratification (plan §5.3)", "",
             "AUROC of the positives in each bin against all negatives, with the positives' count. "
             "The validation columns are best.pt's, computed at the end of training (what §6.3 and the "
             "decision read); before that, the latest gate's (the weights of that epoch). "
             f"A bin with fewer than {config.metrics.thetae_min_positives} positives has no AUROC and "
             "is left out of the min-bin and spread verdicts.", ""]
    if not found:
        return lines + ["No run yet.", ""]
    pairs = config.metrics.thetae_bin_pairs
    val = {e: _val_bins(runs[e].metrics) for e in found}
    header = ["θ_E bin (arcsec)"] + [f"{e} val ({val[e][0] or 'not measured yet'})" for e in found]
    rows = [[f"[{lo:.2f}, {hi:.2f})"] + [_bin_cell(val[e][1].get(_bin_key(lo, hi))) for e in found]
            for lo, hi in pairs]
    lines += _table(header, rows) + [""]
    test = {e: _test_bins(runs[e].metrics) for e in found}
    with_test = [e for e in found if test[e]]
    if with_test:
        rows = [[f"[{lo:.2f}, {hi:.2f})"] + [_bin_cell(test[e].get(_bin_key(lo, hi))) for e in with_test]
                for lo, hi in pairs]
        lines += ["Test set (§5.6), held out: shown, never used for a verdict or the decision.", ""]
        lines += _table(["θ_E bin (arcsec)"] + [f"{e} test (held out)" for e in with_test], rows) + [""]
    return lines


def render_sensitivity(found: list[str], runs: Mapping[str, FoundRun], config: Config) -> list[str]:
    """§5.5: AUROC with the core masked at each radius; core_reliance below."""
    radius = config.metrics.core_reliance_radius
    lines = ["## Core sensitivity (plan §5.5)", "",
             "AUROC with every image's core masked at radius R; "
             f"core_reliance = AUROC(R=0) − AUROC(R={radius}).", ""]
    curves = {e: _curve(runs[e].metrics, "core_sensitivity") for e in found}
    tests = {e: _curve(runs[e].metrics, "test_core_sensitivity") for e in found}
    cols = [(e, "val", curves[e]) for e in found] + [(e, "test", tests[e]) for e in found if tests[e]]
    if not any(c for _, _, c in cols):
        return lines + ["No run has measured its sensitivity curve yet (end of training).", ""]
    rows = [[f"R={r}"] + [fixed(c.get(r)) for _, _, c in cols] for r in config.metrics.sensitivity_radii]
    rows.append(["core_reliance"] + [fixed(runs[e].metrics.get("core_reliance")) if kind == "val" else DASH
                                     for e, kind, _ in cols])
    return lines + _table(["Mask radius"] + [f"{e} {kind}" + (" (held out)" if kind == "test" else "")
                                             for e, kind, _ in cols], rows) + [""]


def render_learning(found: list[str], runs: Mapping[str, FoundRun]) -> list[str]:
    """§5.1: the last finished epoch of each run and its total training time."""
    rows = []
    for e in found:
        history = _history(runs[e].metrics)
        if not history:
            rows.append([e, 0, DASH, DASH, DASH, DASH, DASH])
            continue
        last = history[-1]
        total = sum(t for t in (number(r.get("epoch_time_sec")) for r in history) if t is not None)
        lr = number(last.get("learning_rate"))
        rows.append([e, len(history), fixed(last.get("train_loss"), 4), fixed(last.get("val_loss"), 4),
                     fixed(last.get("val_auroc")), scientific(lr, 2), f"{total:.0f}"])
    lines = ["## Learning curves (plan §5.1)", "", "The last finished epoch of each run; the curves are in "
             "learning_curves.png.", ""]
    return lines + (_table(("Experiment", "Epochs", "train_loss", "val_loss", "val_auroc",
                            "learning_rate", "Time (s)"), rows) if rows else ["No run yet."]) + [""]


def render_provenance(found: list[str], runs: Mapping[str, FoundRun], config: Config) -> list[str]:
    """Who ran what, where, with which code, data and settings."""
    rows = []
    for e in found:
        run, info = runs[e], runs[e].run_info or {}
        sha = info.get("config_sha256")
        if sha is None:
            config_cell = DASH
        elif sha == config.sha256:
            config_cell = "same as this report's"
        else:
            config_cell = f"**different** ({str(sha)[:12]})"
        data = info.get("dataset") or DASH
        if info.get("data_root"):
            data = f"{data} ({info['data_root']})"
        rows.append([e, info.get("host") or DASH, run.location, info.get("code_version") or DASH,
                     info.get("engine_version") or DASH, data, info.get("device") or DASH, config_cell,
                     info.get("started_at") or DASH, info.get("ended_at") or DASH,
                     DASH if info.get("exit_status") is None else info.get("exit_status"),
                     _settings(e, run.metrics)])
    lines = ["## Run provenance", ""]
    if not rows:
        return lines + ["No run yet.", ""]
    return lines + _table(("Experiment", "Host", "Directory", "Code version", "Engine", "Dataset",
                           "Device", "Config", "Started", "Ended", "Exit", "Settings"), rows) + [""]


# ---------------------------------------------------------------------------
# The plots (matplotlib, imported only here)


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
    ids = [e for e in _ordered_ids(collection, config) if e in runs]
    th = config.thresholds

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for i, e in enumerate(ids):
        history = _history(runs[e].metrics)
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
        bins = _val_bins(m)[1]
        ys = [_nan((bins.get(_bin_key(lo, hi)) or {}).get("auroc")) for lo, hi in pairs]
        if bins:
            ax.plot(range(len(pairs)), ys, "o-", color=f"C{i % 10}", label=f"{e} ({summary.kind})")
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
            curve = _curve(runs[e].metrics, key)
            if curve:
                radii = sorted(curve)
                ax.plot(radii, [curve[r] for r in radii], style, color=f"C{i % 10}", label=f"{e} {kind}")
                drawn = True
    ax.axvline(config.metrics.core_reliance_radius, color="grey", linestyle=":",
               label=f"R={config.metrics.core_reliance_radius} (core_reliance)")
    _finish(ax, "core mask radius R (px)", "AUROC", "Core sensitivity (solid val, dashed test)", drawn)
    _save(fig, plt, out_dir / PLOT_FILES[2])
    return list(PLOT_FILES), None


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


# ---------------------------------------------------------------------------
# Putting it together


@dataclass(frozen=True)
class ReportFiles:
    """What write_report wrote, and the decision it reported."""

    markdown: Path
    csv: Path
    plots: tuple[Path, ...]
    plot_note: str | None
    decision: Decision

    @property
    def summary(self) -> str:
        """One line for a notification: what was written and the decision."""
        plots = f" and {len(self.plots)} plots" if self.plots else " (no plots)"
        return f"{self.markdown}, {self.csv}{plots}; decision: {self.decision.title}"


def write_report(source: Collection | Mapping[str, Mapping[str, Any]], config: Config,
                 out_dir: str | Path = DEFAULT_OUT, plots: bool = True) -> ReportFiles:
    """Write EXPERIMENT_RESULTS.md, experiment_metrics.csv and (unless `plots` is False) the plots.

    `source` is what collect_runs found, or experiment id → metrics-like dict (lenstui's
    status entries) as `decide` takes them.
    """
    collection = source if isinstance(source, Collection) else collection_from_results(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    decision = decide(decision_inputs(collection), config)
    verdicts = {e: compute_verdicts(r.metrics, config.thresholds, config.targets,
                                    variant_core_gate=config.decision.variant_core_gate)
                for e, r in collection.runs.items()}
    if plots:
        drawn, plot_note = write_plots(collection, config, out)
    else:
        drawn, plot_note = [], "Plots were not drawn (--no-plots); the tables above hold every value."
    text = render_markdown(collection, config, decision, verdicts, drawn, plot_note,
                           time.strftime("%Y-%m-%d %H:%M:%S %z"))
    md_path = out / RESULTS_MD
    atomic_write_text(md_path, text)
    ids = [e for e in _ordered_ids(collection, config) if e in collection.runs]
    rows = [csv_row(collection.runs[e], verdicts[e], config) for e in ids]
    csv_path = out / METRICS_CSV
    write_csv(csv_path, rows, csv_columns(config))
    return ReportFiles(md_path, csv_path, tuple(out / p for p in drawn), plot_note, decision)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.report",
        description="Write the plan's results report (§9.2) from run directories.")
    parser.add_argument("--runs-root", action="append", required=True, metavar="DIR",
                        help="a folder holding one run directory per experiment "
                             "(repeat it for each host's copy)")
    parser.add_argument("--config", default=str(default_config_path()), help="experiments.toml")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--no-plots", action="store_true", help="write the Markdown and the CSV only")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    collection = collect_runs(args.runs_root, config)
    if not collection.runs:
        print("report: no run directories found. Looked in: " + "; ".join(collection.looked_in)
              + ". A runs root holds one folder per experiment, e.g. runs/B1/metrics.json.",
              file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        files = write_report(collection, config, args.out, plots=not args.no_plots)
    except ConfigError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except OSError as exc:
        print(f"report: cannot write into {args.out}: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    print(f"wrote {files.markdown}, {files.csv}" + "".join(f", {p}" for p in files.plots))
    if files.plot_note and not args.no_plots:
        print(files.plot_note, file=sys.stderr)
    print(f"decision: {files.decision.title} ({files.decision.branch})")
    for note in collection.notes:
        print(f"note: {note}")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())

