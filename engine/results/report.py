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
Seed replicates (engine/results/replicates.py): the runs of one experiment that differ only by
their seed are grouped with the run that stands for it; with two or more done, every value the
verdicts, the decision and the tables read is their mean, with its seed spread beside it, and the
matrix says how many replicates stand behind each column.
Every verdict's value is shown with its 95% interval over LRGs (and, with replicates, over seeds),
and the edges they cross; the CSV gives the bounds in `<name>_lower`/`<name>_upper` columns.
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
    <split>_rows, <split>_distinct_positive, <split>_distinct_negative for train, val, test,
    replicates_done, replicates_planned, replicate_seeds ("42 43 44"),
    <name>_lower, <name>_upper (the 95% interval over LRGs), <name>_seeds_n, <name>_seeds_sd,
    <name>_seeds_lower, <name>_seeds_upper (over seed replicates), <name>_crosses ("0.05") for each
    engine.results.verdicts.VERDICT_NAMES

Torch-free and NumPy-free at import; matplotlib is imported only to draw.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.config import Config, ConfigError, default_config_path, load_config
from engine.files import atomic_write_text
from engine.protocol import exitcodes
from engine.protocol.rundir import METRICS_FILE, RunState, observe_run, run_directories
from engine.results.decision import Decision, decide
from engine.results.reading import plan_order, plan_order_of
from engine.results.report_csv import csv_columns, csv_row, write_csv
from engine.results.report_markdown import render_markdown
from engine.results.report_plots import write_plots
from engine.results.replicates import ReplicateGroup, groups_of, pooled
from engine.results.representative import Choice, RunCandidate, candidate_from_entry, choose_all, comparison_notes
from engine.results.verdicts import compute_verdicts

DEFAULT_OUT = "planb"   # plan §9.2; lenstui writes it beside experiments.toml
RESULTS_MD = "EXPERIMENT_RESULTS.md"
METRICS_CSV = "experiment_metrics.csv"


# ---------------------------------------------------------------------------
# Finding the runs


FoundRun = RunCandidate   # one run as the report uses it (engine/results/representative.py)


@dataclass(frozen=True)
class Collection:
    """Every run found, the one that stands for each experiment, and what was noticed on the way."""

    runs: dict[str, RunCandidate]   # experiment -> the run that stands for it (engine.results.representative),
                                    # its metrics pooled over its done seed replicates (replicates.pooled)
    notes: tuple[str, ...]
    looked_in: tuple[str, ...]      # "runs (3 run directories)", "fetched/x (does not exist)"
    choices: Mapping[str, Choice] = field(default_factory=dict)   # experiment -> every run of it, ranked
    groups: Mapping[str, ReplicateGroup] = field(default_factory=dict)   # experiment -> its seed replicates


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
                        view.run_info, note, view.errors, order, name=view.name)


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
    groups = groups_of(choices, config)
    for exp_id, choice in choices.items():
        group = groups[exp_id]
        if len(group.members) > 1:
            notes.append(f"{exp_id}: {len(group.members)} seed replicates stand for it together ({group.words()}); "
                         "with two or more done, every value is their mean (Seed replicates)")
        others = [o for o in choice.others if not any(o is m for m in group.members)]
        if others:
            notes.append(f"{exp_id} has {len(choice.ranked)} runs: {choice.reason()}")
    runs = {e: replace(c.chosen, metrics=pooled(groups[e], config)) for e, c in choices.items()}
    for e, group in groups.items():
        notes += [f"{e}: {n}" for n in runs[e].metrics["replicates"]["notes"]]
        if group.ended:
            notes.append(f"{e}: seed replicates that ended incomplete are left out of its mean: "
                         + ", ".join(runs[e].metrics["replicates"]["ended_incomplete"]))
    if config is not None:
        ids = [e for e in plan_order(runs, config)]
        notes += [f"Warning: {n}" for n in comparison_notes(runs, ids)]
    return Collection(runs, tuple(notes), tuple(looked_in), choices, groups)


def collection_from_results(results: Mapping[str, Mapping[str, Any]]) -> Collection:
    """A Collection from metrics-like dicts: lenstui's status entries (their `state` and `run`
    keys are used) or plain metrics.json contents, one run per experiment."""
    runs = {exp_id: candidate_from_entry(exp_id, entry) for exp_id, entry in results.items()}
    return Collection(runs, (), ("the latest status of every host, as lenstui shows it",),
                      {e: Choice(e, c) for e, c in runs.items()})


def decision_inputs(collection: Collection) -> dict[str, dict[str, Any]]:
    """Experiment id → metrics with `status` set to the state the report shows and `run` its
    provenance (host, dataset), for `decide`."""
    return {e: {**r.metrics, "status": r.state, "run": dict(r.run_info or {}, host=r.host)}
            for e, r in collection.runs.items() if r.metrics}


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
    ids = [e for e in plan_order_of(collection, config) if e in collection.runs]
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

