"""Issue 5 end to end: a real A1 + B1 training on synthetic data becomes a report whose decision matches its numbers."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.decision import decide
from engine.report import METRICS_CSV, PLOT_FILES, RESULTS_MD
from engine.rundir import read_metrics
from engine.synth import write_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A1 and B1 trained for real (2 epochs, tiny data, recorded as overrides)."""
    tmp = tmp_path_factory.mktemp("plan")
    data = tmp / "synth"
    write_dataset(data, rows={"train": 96, "val": 96, "test": 96}, seed=7)
    text = (ROOT / "experiments.toml").read_text()
    for key, value in {"gate_every_epochs": 1, "gate_n_samples": 40, "thetae_min_positives": 3,
                       "batch_size": 32, "sample_fraction": 1.0}.items():
        text, n = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert n == 1, key
    config = tmp / "tiny.toml"
    config.write_text(text)
    runs = tmp / "runs"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    for exp in ("A1", "B1"):
        done = subprocess.run([sys.executable, "-m", "engine.train", "--experiment", exp, "--config", str(config),
                               "--data-root", str(data), "--runs-root", str(runs), "--epochs", "2", "--device", "cpu"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return config, runs


def test_a_real_a1_b1_run_gives_a_report_whose_decision_matches_the_numbers(trained, tmp_path):
    config_path, runs = trained
    out = tmp_path / "planb"
    done = subprocess.run([sys.executable, "-m", "engine.report", "--runs-root", str(runs), "--config",
                           str(config_path), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    metrics = {exp: read_metrics(runs / exp).data for exp in ("A1", "B1")}
    assert all(m["status"] == "done" for m in metrics.values())
    decision = decide(metrics, load_config(config_path))
    md = (out / RESULTS_MD).read_text()
    assert decision.title in md and decision.branch != "waiting"
    # The numbers that chose the branch are B1's own, and appear in the report.
    assert f"{metrics['B1']['final_core_lr_auc']:.3f}" in md
    assert f"{metrics['B1']['core_reliance']:.3f}" in md
    assert "NOT the plan's settings" in md and "epochs=2" in md

    rows = {r["experiment"]: r for r in csv.DictReader((out / METRICS_CSV).open())}
    assert set(rows) == {"A1", "B1"}
    for exp in ("A1", "B1"):
        assert float(rows[exp]["test_auroc"]) == pytest.approx(metrics[exp]["test_auroc"], abs=1e-6)
        assert float(rows[exp]["best_val_auroc"]) == pytest.approx(metrics[exp]["best_val_auroc"], abs=1e-6)
    for name in PLOT_FILES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
