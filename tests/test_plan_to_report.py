"""Issues 5 and 14 end to end: real A1 + B1 + B2 + B3 + B4 trainings on synthetic data become a report
whose decision matches its numbers, with the masked and unmasked core probes side by side, the held-out
test column and the radial gate's note."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.results.decision import decide
from engine.results.report import METRICS_CSV, RESULTS_MD
from engine.results.report_plots import PLOT_FILES
from engine.protocol.rundir import read_metrics
from engine.synthetic.twin import write_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A1, B1 and the masking variants trained for real (2 epochs, tiny data, recorded as overrides)."""
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
    for exp in ("A1", "B1", "B2", "B3", "B4"):
        done = subprocess.run([sys.executable, "-m", "engine.train", "--experiment", exp, "--config", str(config),
                               "--data-root", str(data), "--runs-root", str(runs), "--epochs", "2", "--device", "cpu"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for checkpoint in runs.glob("*/*.pt"):   # ~175 MB a run, read by no test here: the suite's disk peak
        checkpoint.unlink()
    return config, runs


def test_a_real_a1_b1_run_gives_a_report_whose_decision_matches_the_numbers(trained, tmp_path):
    config_path, runs = trained
    out = tmp_path / "planb"
    done = subprocess.run([sys.executable, "-m", "engine.report", "--runs-root", str(runs), "--config",
                           str(config_path), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    metrics = {exp: read_metrics(runs / exp).data for exp in ("A1", "B1", "B2", "B3", "B4")}
    assert all(m["status"] == "done" for m in metrics.values())
    decision = decide(metrics, load_config(config_path))
    md = (out / RESULTS_MD).read_text()
    assert decision.title in md and decision.branch != "waiting"
    # The numbers that chose the branch are B1's own, and appear in the report.
    assert f"{metrics['B1']['final_core_lr_auc']:.3f}" in md
    assert f"{metrics['B1']['core_reliance']:.3f}" in md
    assert "NOT the plan's settings" in md and "epochs=2" in md

    rows = {r["experiment"]: r for r in csv.DictReader((out / METRICS_CSV).open())}
    assert set(rows) == {"A1", "B1", "B2", "B3", "B4"}
    for exp in ("A1", "B1", "B2", "B3", "B4"):
        assert float(rows[exp]["test_auroc"]) == pytest.approx(metrics[exp]["test_auroc"], abs=1e-6)
        assert float(rows[exp]["best_val_auroc"]) == pytest.approx(metrics[exp]["best_val_auroc"], abs=1e-6)
    for name in PLOT_FILES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_variants_are_shown_masked_beside_unmasked_with_the_test_held_out(trained, tmp_path):
    config_path, runs = trained
    out = tmp_path / "planb"
    done = subprocess.run([sys.executable, "-m", "engine.report", "--runs-root", str(runs), "--config",
                           str(config_path), "--out", str(out), "--no-plots"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    md = (out / RESULTS_MD).read_text()
    metrics = {exp: read_metrics(runs / exp).data for exp in ("A1", "B1", "B2", "B3", "B4")}
    b1_core = metrics["B1"]["final_core_lr_auc"]
    probes = md.split("## Shortcut probes side by side")[1].split("\n## ")[0]
    for exp, radius in (("B2", 5), ("B3", 7), ("B4", 3)):    # B3: 2 epochs, both in its R=7 step
        m = metrics[exp]
        assert m["final_core_lr_auc"] == b1_core                 # the variants share B1's val images
        assert m["final_mask_radius"] == radius
        row = next(line for line in probes.splitlines() if line.startswith(f"| {exp} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        masked = m["final_masked_core_lr_auc"]
        if masked is not None:
            assert cells[1].startswith(f"{masked:.3f} (") and f"masked at R={radius}" in cells[1]
        assert cells[2] == f"{b1_core:.3f}"
        assert cells[3].endswith(f"(R={radius})")
    assert "The radial gate cannot fail on residual inputs" in probes
    selection = md.split("## What the decision reads")[1].split("\n## ")[0]
    assert "Test AUROC (held out)" in selection
    for exp in ("B2", "B3", "B4"):
        assert f"{metrics[exp]['test_auroc']:.3f}" in selection
    assert "## Effective sample size" in md and "| B1 | val |" in md
    decision = decide(metrics, load_config(config_path))
    assert decision.title in md and "- Read: validation numbers only" in md
    for name, value in decision.numbers.items():              # the numbers it followed, printed
        assert f"| {name} | {'–' if value is None else f'{value:.4f}'} |" in md
