"""The GPU check's report turns two A1 runs (eager and --cuda-graph) into issue 8's verdicts.

The runs here are written by hand in the run directory's format (metrics.json + run.json),
with epoch times chosen so each goal lands on a known side of its target: the report must
compute the engine's own training rate from `train_time_sec`, project the full-data run
from it, and say met / NOT met / not measured accordingly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # bench/ runs from the checkout, not installed
    sys.path.insert(0, str(REPO))

from bench import gpu_check  # noqa: E402
from bench.common import run_summary  # noqa: E402

TRAIN, VAL, TEST = 2_910, 10_024, 8_852   # A1's 10% view in images


def write_run(run_dir: Path, *, train_s: float, val_s: float, precision: str = "bf16",
              best: float = 0.888, test: float = 0.885, gate_s: float = 0.8) -> Path:
    run_dir.mkdir(parents=True)
    # The first epoch carries cuDNN's autotuning (5x slower here); the medians leave it out.
    trains = [train_s * (5 if e == 0 else 1) for e in range(10)]
    history = [{"epoch": e, "train_loss": 0.5, "val_auroc": best, "val_loss": 0.4, "learning_rate": 1e-4,
                "train_time_sec": t, "epoch_time_sec": t + val_s} for e, t in enumerate(trains)]
    gates = [{"after_epochs": a, "core_lr_auc": 0.6, "radial_lr_auc": 0.6, "gate_n_samples": 2000,
              "gate_time_sec": gate_s} for a in (0, 5, 10)]
    (run_dir / "metrics.json").write_text(json.dumps({
        "status": "done", "history": history, "gates": gates, "best_val_auroc": best, "test_auroc": test}))
    (run_dir / "run.json").write_text(json.dumps({
        "device": "cuda", "precision": precision, "exit_status": 0,
        "data": {"train": {"count": TRAIN}, "val": {"count": VAL}, "test": {"count": TEST}}}))
    return run_dir


def verdicts(goals) -> dict[str, bool | None]:
    return {g.name: g.met for g in goals}


def test_the_engines_training_rate_comes_from_the_training_part_of_the_epoch(tmp_path):
    run = run_summary(write_run(tmp_path / "A1", train_s=0.291, val_s=0.025))
    assert run["train_img_s"] == pytest.approx(TRAIN / 0.291)
    assert run["val_img_s"] == pytest.approx(VAL / 0.025)
    assert run["epoch_time_median"] == pytest.approx(0.316)


def test_goals_say_which_step_meets_20k_img_s_and_the_five_minute_run(tmp_path):
    eager = run_summary(write_run(tmp_path / "A1", train_s=TRAIN / 10_000, val_s=VAL / 400_000))
    graph = run_summary(write_run(tmp_path / "A1-graph", train_s=TRAIN / 40_000, val_s=VAL / 400_000,
                                  best=0.880, test=0.850))
    totals = {label: gpu_check.project_full_run(r, {}, None, label)[1]
              for label, r in (("eager", eager), ("--cuda-graph", graph))}
    # 50 x (29,108 / rate + 100,240 / 400k) + 11 gates x 0.8 s
    assert totals["eager"] == pytest.approx(50 * (29_108 / 10_000 + 100_240 / 400_000) + 11 * 0.8)
    assert totals["--cuda-graph"] < totals["eager"]
    v = verdicts(gpu_check.goals(eager, graph, totals))
    assert v["engine training img/s, A1 eager (bf16)"] is False
    assert v["engine training img/s, A1 --cuda-graph (bf16)"] is True
    assert v["projected full-data 50-epoch run, eager"] is True      # 166 s
    assert v["gates on 2,000 samples (median, eager run)"] is True
    assert v["best_val_auroc gap, --cuda-graph vs eager"] is True        # 0.008 apart
    assert v["test_auroc gap, --cuda-graph vs eager"] is False           # 0.035 apart: the graph learns otherwise


def test_a_full_precision_run_or_a_missing_graph_run_is_not_counted_as_met(tmp_path):
    fp32 = run_summary(write_run(tmp_path / "A1", train_s=TRAIN / 50_000, val_s=0.02, precision="fp32"))
    v = verdicts(gpu_check.goals(fp32, {}, {"eager": 100.0}))
    assert v["engine training img/s, A1 eager (fp32, NOT mixed precision)"] is None
    assert v["engine training img/s, A1 --cuda-graph (not run)"] is None
    assert v["projected full-data 50-epoch run, --cuda-graph"] is None
    assert v["best_val_auroc gap, --cuda-graph vs eager"] is None


def test_the_report_prints_the_goals_table_for_both_runs(tmp_path):
    out = tmp_path / "out"
    write_run(out / "A1", train_s=TRAIN / 10_000, val_s=0.025)
    write_run(out / "A1-graph", train_s=TRAIN / 40_000, val_s=0.025)
    assert gpu_check.main(["report", "--out", str(out)]) == 0
    text = (out / "gpu-check.txt").read_text()
    assert "Issue 8's GPU goals" in text
    assert "Projected full-data run, A1 eager" in text and "Projected full-data run, A1 --cuda-graph" in text
    summary = json.loads((out / "gpu-check.json").read_text())
    met = {g["name"]: g["met"] for g in summary["goals"]}
    assert met["engine training img/s, A1 --cuda-graph (bf16)"] is True
    assert set(summary["projected_full_run_s_by_step"]) == {"eager", "--cuda-graph"}
    assert "issue 8's goals: 6 met, 1 NOT met, 0 not measured" in text   # eager misses 20k img/s
