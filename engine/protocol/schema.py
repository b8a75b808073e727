"""What metrics.json and run.json hold: every key, its type and its meaning, in one place.

The engine writes these documents (engine/training, engine/protocol/launch.py); the status
probe, the verdicts, the decision tree, the report and lenstui read them. The TypedDicts below
are the one list of their keys: the writers build them, the readers annotate what they read
with them, and tests/test_train.py checks that a real run writes no key that is not here.

Epochs count from 1 everywhere (schema 2): history row `epoch` N is the Nth epoch, after which
N epochs are done; `best_epoch` likewise. A schema-1 document is upgraded when read
(rundir.upgrade_metrics). Every verdict reads validation numbers only; the `test_*` keys are the
held-out test set (§5.6), shown and never used for selection. Torch-free and NumPy-free.
"""

from __future__ import annotations

from typing import Any, TypedDict

SCHEMA_VERSION = 2   # 2: epochs count from 1 (history "epoch", best_epoch); 1 counted from 0

# The plan's per-epoch metric names (§5.1), in the plan's order.
EPOCH_METRICS = ("train_loss", "val_auroc", "val_loss", "learning_rate", "epoch_time_sec")


class EpochRow(TypedDict, total=False):
    """One finished epoch (§5.1), `history[i]`."""

    epoch: int                 # counted from 1
    train_loss: float
    val_auroc: float | None
    val_loss: float
    learning_rate: float       # the rate the epoch trained with
    epoch_time_sec: float      # training + validation
    train_time_sec: float      # the training part alone
    mask_radius: int           # masking experiments: the radius and probability in force
    mask_p: float


# A 95% interval over LRGs, [low, high] (engine/data/bootstrap.py); None where the value has none.
# Written beside each value a verdict or §10 reads, as `<key>_ci95` (or `ci95` inside a bin or a
# curve point). A file written before issue 19 has none: every reader treats a missing one as "no
# interval", never as an error.
Interval = list[float]


class _ThetaEBinValue(TypedDict):
    bin: list[float]           # [low, high): low inclusive, high exclusive, arcsec
    auroc: float | None        # None when the bin has too few positives (`note` says)
    count: int                 # positives in the bin
    note: str | None


class ThetaEBin(_ThetaEBinValue, total=False):
    """AUROC of one θ_E bin's positives against all negatives (§5.3)."""

    ci95: Interval | None      # end of training only (the epoch gates' tables have none)


class _SensitivityValue(TypedDict):
    radius: int
    auroc: float | None


class SensitivityPoint(_SensitivityValue, total=False):
    """AUROC with every image's core masked at `radius` pixels (§5.5; radius 0: no mask)."""

    ci95: Interval | None


class BootstrapSplit(TypedDict, total=False):
    """How one split's intervals were drawn (metrics.json `bootstrap[split]`)."""

    unit: str                  # "LRG": an LRG's rows are resampled together
    method: str                # "percentile"
    level: float               # 0.95
    draws: int
    seed: int
    rows: int
    lrgs: int
    device: str
    seconds: float             # the split's whole evaluation with its intervals


class GateRecord(TypedDict, total=False):
    """The shortcut gates and the θ_E table of one evaluation during training (§5.2, §5.3), `gates[i]`."""

    after_epochs: int                    # 0: before the first epoch
    core_lr_auc: float | None            # grouped by LRG, unmasked images
    radial_lr_auc: float | None
    gate_n_samples: int
    core_lr_auc_ungrouped: float | None  # the published method (plain StratifiedKFold): context only
    radial_lr_auc_ungrouped: float | None
    radial_feature_max_abs: float | None # ~1e-4 on residual inputs: the radial probe cannot see anything
    mask_radius: int                     # masking experiments: the radius the model trained under so far
    masked_core_lr_auc: float | None
    masked_radial_lr_auc: float | None
    masked_core_lr_auc_ungrouped: float | None
    masked_radial_lr_auc_ungrouped: float | None
    note: str                            # why a gate has no value
    gate_time_sec: float
    val_auroc_by_thetae: list[ThetaEBin]
    # Only in the end-of-training gate record (gate_record(intervals=True)), copied to final_*_ci95.
    core_lr_auc_ci95: Interval | None
    radial_lr_auc_ci95: Interval | None
    masked_core_lr_auc_ci95: Interval | None
    masked_radial_lr_auc_ci95: Interval | None


class Verdict(TypedDict, total=False):
    """One §6 verdict (engine/results/verdicts.py), `verdicts[name]`."""

    verdict: str | None        # PASS, WARN, FAIL; None when there is no value yet
    value: float | None
    rule: str                  # the band in words, with its plan section
    source: str | None         # the key (or gates[after_epochs=N].key) the value came from
    note: str | None
    # The two gate verdicts also carry what a reader needs beside the value they judge:
    reading: str               # "masked" or "unmasked"
    mask_radius: int | None
    unmasked_value: float | None
    unmasked_source: str
    ungrouped_value: float | None
    ungrouped_source: str
    raw_robust_value: float | None
    raw_robust_source: str | None
    uninformative: str | None  # why this gate cannot fail on the run's inputs
    # How sure the value is (engine/results/uncertainty.py; docs/DECISIONS.md "Uncertainty"):
    interval: Interval | None  # its 95% interval over LRGs (`<source>_ci95`), None when it has none
    interval_source: str | None
    seeds: dict[str, Any] | None   # over seed replicates: n, mean, sd, values, ci95 (the mean's t interval)
    crosses: list[float]       # the band edges (or the §6.4 target) either interval holds values on both sides of
    uncertain: str | None      # "crosses 0.05", or None


class Metrics(TypedDict, total=False):
    """metrics.json: the run's metrics, status and verdicts, rewritten atomically every epoch."""

    # Written at the start (rundir.new_metrics) and kept up to date.
    schema_version: int
    experiment: str
    run_name: str                        # the run directory's name: the experiment id, or <id>@seed<N>
    seed: int                            # the training seed (a replicate differs from the plan's run by it)
    status: str                          # rundir.RunState's word
    epochs_planned: int
    overrides: dict[str, Any]            # what this run changed from experiments.toml
    inputs: dict[str, str]               # data_mode, preprocessing, sample, masking (verdicts read it)
    history: list[EpochRow]
    gates: list[GateRecord]
    verdicts: dict[str, Verdict]
    updated_at: str                      # files.TIME_FORMAT
    bad_rows: dict[str, dict[str, Any]]  # per split: count, of, limit, failed_cutouts, rows
    effective_sample: dict[str, dict[str, int]]   # per split: rows, distinct images, LRGs per label
    best_val_auroc: float | None         # the best so far, live; best.pt's at the end
    best_epoch: int | None
    # Written at the end of training with best.pt, on the whole val split (engine/training/evaluate.py).
    final_core_lr_auc: float | None
    final_radial_lr_auc: float | None
    final_core_lr_auc_ungrouped: float | None
    final_radial_lr_auc_ungrouped: float | None
    final_gate_n_samples: int | None
    final_radial_feature_max_abs: float | None
    final_gate_note: str | None
    final_core_lr_auc_ci95: Interval | None        # 95% over LRGs of the fixed out-of-fold scores
    final_radial_lr_auc_ci95: Interval | None
    final_mask_radius: int | None        # masking experiments: the radius in force at best.pt's epoch
    final_masked_core_lr_auc: float | None
    final_masked_radial_lr_auc: float | None
    final_masked_core_lr_auc_ungrouped: float | None
    final_masked_radial_lr_auc_ungrouped: float | None
    final_masked_core_lr_auc_ci95: Interval | None
    final_masked_radial_lr_auc_ci95: Interval | None
    final_raw_robust_core_lr_auc: float | None     # the same val rows with raw_robust inputs: context
    final_raw_robust_radial_lr_auc: float | None
    final_raw_robust_core_lr_auc_ungrouped: float | None
    final_raw_robust_radial_lr_auc_ungrouped: float | None
    final_raw_robust_gate_n_samples: int | None
    final_raw_robust_note: str | None
    final_val_auroc_by_thetae: list[ThetaEBin]     # what §6.3 reads
    final_val_thetae_min_bin_auroc_ci95: Interval | None   # per draw over the bins with a value
    final_val_thetae_max_spread_ci95: Interval | None
    core_sensitivity: list[SensitivityPoint]
    core_reliance: float | None                    # AUROC(R=0) − AUROC(R=core_reliance_radius)
    core_reliance_ci95: Interval | None            # the paired difference on the same draws
    best_val_auroc_ci95: Interval | None           # best.pt's val AUROC, at the end of training
    # The test set, once, with best.pt (held out: §5.6).
    test_auroc: float | None
    test_auroc_ci95: Interval | None
    test_auroc_by_thetae: list[ThetaEBin]
    test_thetae_min_bin_auroc_ci95: Interval | None
    test_thetae_max_spread_ci95: Interval | None
    test_core_sensitivity: list[SensitivityPoint]
    bootstrap: dict[str, BootstrapSplit]           # per split ("val", "test"): how the intervals were drawn


class RunInfo(TypedDict, total=False):
    """run.json: who ran what, where, with which code and settings (one writer: engine.train)."""

    experiment: str
    run_name: str                        # as in metrics.json (rundir.run_name)
    seed: int
    host: str                            # the host's name in experiments.toml
    hostname: str
    pid: int
    pgid: int
    pid_start_ticks: int | None          # with pid: the process's identity (rundir.is_same_process)
    cmdline: str
    command: list[str]                   # engine.train's argv (a relaunch repeats its arguments)
    engine_version: str
    code_version: str                    # engine/protocol/codeversion.py
    dataset: str | None                  # None: --data-root
    data_root: str
    config: str
    config_sha256: str
    overrides: dict[str, Any]
    device: str
    precision: str                       # fp32, bf16 or fp16
    torch_version: str
    resumed_from_epoch: int | None
    training_step: str                   # eager, compile or cuda_graph
    started_at: str
    ended_at: str | None
    exit_status: int | None
    status: str
    data: dict[str, dict[str, Any]]      # per split: manifest, counts, cache
    provenance: dict[str, Any] | None    # --provenance: who asked (lenstui's plan: step, host, gpu, decision)


# The keys every status entry carries (None until written), so a reader may index them.
STATUS_KEYS = ("best_val_auroc", "best_epoch", "final_core_lr_auc", "final_radial_lr_auc",
               "core_sensitivity", "core_reliance", "test_auroc", "test_auroc_by_thetae",
               "test_core_sensitivity", "overrides", "updated_at", "bad_rows")
# The run.json keys a status entry passes on (under `run`): provenance for the views and the rule.
RUN_SUMMARY_KEYS = ("host", "run_name", "seed", "command", "engine_version", "code_version", "dataset",
                    "data_root", "device", "started_at", "ended_at", "exit_status", "overrides", "config_sha256",
                    "launched_at", "provenance")


def undeclared(document: dict[str, Any], schema: type) -> list[str]:
    """The keys of `document` that `schema` (one of the TypedDicts above) does not declare."""
    return sorted(set(document) - set(schema.__annotations__))
