"""The report's EXPERIMENT_RESULTS.md: the decision, the results matrix with every verdict in words,
the runs of each experiment, what the decision reads beside the held-out test, the shortcut
probes, the effective sample, the gate history, the θ_E and sensitivity tables, the learning
curves, provenance and notes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from engine.config import Config
from engine.numbers import DASH, fixed, number, scientific
from engine.results.decision import Decision, settings_note
from engine.results.reading import (bin_key, curve_of, effective, epochs_text, gates_in_order, history_of, plan_order_of,
                                    test_bins, val_bins)
from engine.results.representative import RunCandidate, settings_text, time_text
from engine.results.uncertainty import edge_words, pair, range_words, seeds_of
from engine.results.verdicts import VERDICT_NAMES, gate_verdicts, thetae_summary

if TYPE_CHECKING:
    from engine.results.report import Collection

FoundRun = RunCandidate   # one run as the report uses it (engine/results/representative.py)


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

def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")

def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines

def verdict_cell(entry: Mapping[str, Any] | None) -> str:
    """'0.612 (WARN)'; a gate-sourced value says so: '0.612 (WARN, gate after 10 epochs)'; a masked
    reading names its radius; a gate that cannot fail on the run's inputs says so. With its
    uncertainty: '0.048 (WARN; 95% 0.041–0.056: crosses 0.05)', and over seed replicates
    '0.048 ± 0.004 (WARN, 3 seeds; 95% 0.041–0.056, over seeds 0.038–0.058: crosses 0.05)'."""
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
    seeds = seeds_of({"v_seeds": entry.get("seeds")}, "v")
    value = f"{entry['value']:.3f}"
    if seeds is not None:
        value += f" ± {seeds.sd:.3f}"
        words.append(f"{seeds.n} seeds")
    sure = []
    lrgs = pair(entry.get("interval"))
    if lrgs is not None:
        sure.append(f"95% {range_words(*lrgs)}")
    if seeds is not None:
        sure.append(f"{'over seeds' if sure else '95% over seeds'} {range_words(seeds.low, seeds.high)}")
    tail = ("; " + ", ".join(sure)) if sure else ""
    if entry.get("crosses"):
        tail += f": {edge_words(entry['crosses'])}"
    return f"{value} ({', '.join(words)}{tail})"


def replicates_cell(run: FoundRun | None, planned: int = 1) -> str:
    """'3/3 seeds done' for a replicated experiment, '1 run' otherwise (replicates.pooled's record)."""
    if run is None:
        return DASH
    rec = run.metrics.get("replicates")
    if not isinstance(rec, Mapping):
        return "1 run"
    n = max(int(rec.get("n") or 1), planned)
    if n <= 1:
        return "1 run"
    pooled = " (mean ± sd)" if rec.get("pooled") else ""
    return f"{rec.get('done', 0)}/{n} seeds done{pooled}"

def _settings(exp_id: str, metrics: Mapping[str, Any]) -> str:
    note = settings_note(exp_id, metrics)
    return "plan's settings" if note is None else "**" + note.split(" ran with ", 1)[1] + "**"

def _bin_cell(record: Mapping[str, Any] | None) -> str:
    if record is None:
        return DASH
    count = record.get("count")
    auroc = number(record.get("auroc"))
    if auroc is None:
        why = record.get("note") or "no AUROC"
        return f"{DASH} (n={count}: {why})"
    return f"{auroc:.3f} (n={count})"


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
    if decision.too_close:
        lines.append("- **Too close to call**: the tree decided on the point estimates, but an interval "
                     "puts another branch within reach")
        lines += [f"  - {t}" for t in decision.too_close]
        lines += [f"  - To settle it: {t}" for t in decision.settle]
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
    ids = plan_order_of(collection, config)
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
                                  for e in ids],
            ["Replicates", "seeds behind each value"] + [replicates_cell(runs.get(e), _planned(config, e)) for e in ids]]
    for name in _MATRIX_ORDER:
        rows.append([_VERDICT_LABELS[name], rules[name]]
                    + [verdict_cell(verdicts[e][name]) if e in runs else DASH for e in ids])
    rows.append(["Settings", ""] + [_settings(e, runs[e].metrics) if e in runs else DASH for e in ids])
    lines += _table(["Metric", "Rule"] + ids, rows) + [""]
    warnings = [n[len("Warning: "):] for n in collection.notes if n.startswith("Warning: ")]
    lines += [f"**Warning:** {w}." for w in warnings] + ([""] if warnings else [])
    lines += render_runs(collection, ids)
    lines += render_replicates(collection, ids)
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

def _planned(config: Config, exp_id: str) -> int:
    exp = config.experiments.get(exp_id)
    return exp.replicates if exp is not None else 1


# The values the replicates table shows, seed by seed (metrics.json keys).
_REPLICATE_KEYS = (("best_val_auroc", "Best val AUROC"), ("core_reliance", "Core reliance"),
                   ("final_core_lr_auc", "Core LR AUC"), ("test_auroc", "Test AUROC (held out)"))


def render_replicates(collection: Collection, ids: Sequence[str]) -> list[str]:
    """Each replicated experiment's seeds: every run's value, then the mean ± sd beside the width of
    one run's interval over LRGs (engine/results/replicates.py)."""
    groups = [g for e in ids if (g := collection.groups.get(e)) is not None and g.is_replicated]
    if not groups:
        return []
    lines = ["## Seed replicates", "",
             "Runs of one experiment that differ only by their training seed. Where two or more are done, "
             "every value above is their mean (± their standard deviation). *95% over LRGs* is one run's "
             "bootstrap interval with the LRGs resampled (the model fixed): how much a value depends on "
             "which validation LRGs were drawn. The seed spread is how much it depends on training.", ""]
    rows = []
    for g in groups:
        for c in g.members:
            rows.append([g.experiment, c.run_name, str(c.metrics.get("seed", DASH)), c.state, c.host or DASH]
                        + [_with_interval(c.metrics, k) for k, _ in _REPLICATE_KEYS])
        pooled_metrics = collection.runs[g.experiment].metrics
        rows.append([g.experiment, f"**mean ± sd** ({g.count_words()} done)", DASH, DASH, DASH]
                    + [_mean_sd(pooled_metrics, k) for k, _ in _REPLICATE_KEYS])
        for c in g.ended:
            rows.append([g.experiment, c.run_name, str(c.metrics.get("seed", DASH)), f"{c.state} (left out)",
                         c.host or DASH] + [DASH] * len(_REPLICATE_KEYS))
    return lines + _table(["Experiment", "Run", "Seed", "State", "Host"] + [label for _, label in _REPLICATE_KEYS],
                          rows) + [""]


def _with_interval(metrics: Mapping[str, Any], key: str) -> str:
    value = number(metrics.get(key))
    if value is None:
        return DASH
    lrgs = pair(metrics.get(f"{key}_ci95"))
    return f"{value:.3f}" + (f" (95% {range_words(*lrgs)})" if lrgs else "")


def _mean_sd(metrics: Mapping[str, Any], key: str) -> str:
    seeds = seeds_of(metrics, key)
    if seeds is None:
        return fixed(metrics.get(key))
    lrgs = pair(metrics.get(f"{key}_ci95"))
    width = f"; LRG interval width {lrgs[1] - lrgs[0]:.3f}" if lrgs else ""
    return f"{seeds.mean:.3f} ± {seeds.sd:.3f} (n={seeds.n}{width})"


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
    return epochs_text(run.metrics)

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
        for split, counts in effective(runs[e].metrics).items():
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
    val = {e: val_bins(runs[e].metrics) for e in found}
    header = ["θ_E bin (arcsec)"] + [f"{e} val ({val[e][0] or 'not measured yet'})" for e in found]
    rows = [[f"[{lo:.2f}, {hi:.2f})"] + [_bin_cell(val[e][1].get(bin_key(lo, hi))) for e in found]
            for lo, hi in pairs]
    lines += _table(header, rows) + [""]
    test = {e: test_bins(runs[e].metrics) for e in found}
    with_test = [e for e in found if test[e]]
    if with_test:
        rows = [[f"[{lo:.2f}, {hi:.2f})"] + [_bin_cell(test[e].get(bin_key(lo, hi))) for e in with_test]
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
    curves = {e: curve_of(runs[e].metrics, "core_sensitivity") for e in found}
    tests = {e: curve_of(runs[e].metrics, "test_core_sensitivity") for e in found}
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
        history = history_of(runs[e].metrics)
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
