"""The results report (§9.2) on fixture run directories written the way the engine writes them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import files

from engine.protocol import rundir
from engine.config import load_config
from engine.results.decision import decide
from engine.results.report import METRICS_CSV, RESULTS_MD, collect_runs, decision_inputs, write_report
from engine.results.report_csv import csv_columns
from engine.results.report_plots import PLOT_FILES
from engine.results.verdicts import compute_verdicts

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "experiments.toml"
CONFIG = load_config(CONFIG_PATH)
BINS = CONFIG.metrics.thetae_bin_pairs
RADII = CONFIG.metrics.sensitivity_radii


def dead_pid() -> int:
    """The pid of a process that has exited (so a 'running' run on it is lost)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def write_run(root: Path, exp: str, *, core: float, rel: float, radial: float = 0.51, best: float = 0.95,
              epochs: int = 50, planned: int = 50, status: str = "done", host: str = "local",
              overrides: dict | None = None, finished: bool = True, updated_at: str | None = None,
              test_auroc: float | None = None, pid: int | None = None, gate_note: str | None = None,
              dataset: str = "synthetic-demo") -> Path:
    """A run directory as engine.train leaves it: metrics.json and run.json, written atomically."""
    d = rundir.run_dir(root, exp)
    d.mkdir(parents=True)
    m = rundir.new_metrics(exp, planned, overrides or {})
    m["status"] = status
    m["history"] = [{"epoch": e + 1, "train_loss": 0.69 - 0.5 * e / planned, "val_auroc": best - 0.2 * (1 - e / max(epochs, 1)),
                     "val_loss": 0.7 - 0.4 * e / planned, "learning_rate": 1e-4 * (1 - e / planned),
                     "epoch_time_sec": 31.5} for e in range(epochs)]
    bins = [{"bin": list(b), "auroc": None if i == 5 else round(best - 0.10 + 0.02 * i, 4),
             "count": 30 if i == 5 else 700 - 50 * i,
             "note": "30 positives < 50: no AUROC" if i == 5 else None} for i, b in enumerate(BINS)]
    m["gates"] = [{"after_epochs": k, "core_lr_auc": core, "radial_lr_auc": radial, "gate_n_samples": 2000,
                   "val_auroc_by_thetae": bins} for k in range(0, epochs + 1, 5)]
    if gate_note:
        m["gates"][-1].update(core_lr_auc=None, radial_lr_auc=None, note=gate_note)
    if finished:
        curve = [{"radius": r, "auroc": round(best - rel * min(r, 7) / 7 - 0.001 * max(r - 7, 0), 4)} for r in RADII]
        m.update(best_val_auroc=best, best_epoch=epochs, final_core_lr_auc=core, final_radial_lr_auc=radial,
                 core_sensitivity=curve, core_reliance=rel)
    if test_auroc is not None:
        m.update(test_auroc=test_auroc, test_auroc_by_thetae=bins,
                 test_core_sensitivity=[{"radius": r, "auroc": test_auroc - 0.001 * r} for r in RADII])
    m["verdicts"] = compute_verdicts(m, CONFIG.thresholds, CONFIG.targets)
    m["updated_at"] = updated_at or "2026-02-07T10:00:00+0000"
    files.atomic_write_json(d / rundir.METRICS_FILE, m)
    rundir.write_run_info(d, {
        "experiment": exp, "host": host, "pid": pid or dead_pid(), "pgid": 1, "pid_start_ticks": 1,
        "cmdline": f"python -m engine.train --experiment {exp}", "command": ["python", "-m", "engine.train"],
        "engine_version": "0.1.0", "code_version": "abc1234", "dataset": dataset,
        "data_root": "data/synthetic-demo", "config_sha256": CONFIG.sha256, "overrides": overrides or {},
        "device": "cpu", "started_at": "2026-02-07T09:00:00+0000",
        "ended_at": None if status == "running" else "2026-02-07T10:00:00+0000",
        "exit_status": 0 if status == "done" else None, "status": status})
    return d


def report_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def section(md: str, title: str) -> str:
    """The text of one '## title' section."""
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 3)
    return md[start:end if end != -1 else None]


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] > 300 and img.size[1] > 200


@pytest.fixture
def phase1_runs(tmp_path) -> Path:
    """A1 and B1 done (B1: core 0.612 WARN, reliance 0.021 → ACCEPTABLE), B2 a shortened (7-epoch), aborted try."""
    runs = tmp_path / "runs"
    write_run(runs, "A1", core=0.554, rel=0.012, best=0.962)
    write_run(runs, "B1", core=0.612, rel=0.021, best=0.951)
    write_run(runs, "B2", core=0.70, rel=0.01, epochs=7, planned=7, overrides={"epochs": 7}, status="aborted",
              finished=False, gate_note="gate not computed: the gate sample has one class")
    return runs


def test_cli_writes_every_artifact_and_the_decision_matches_the_numbers(phase1_runs, tmp_path):
    out = tmp_path / "planb"
    done = report_cli("--runs-root", str(phase1_runs), "--config", str(CONFIG_PATH), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "decision: ACCEPTABLE: use B1 config with monitoring (acceptable_b1)" in done.stdout
    md = (out / RESULTS_MD).read_text()

    for title in ("Decision (plan §10)", "Results matrix", "Gate history", "θ_E stratification",
                  "Core sensitivity", "Learning curves", "Plots", "Run provenance", "Notes"):
        assert f"## {title}" in md, title
    # The decision is the one decide() gives on the same numbers, with its reason.
    expected = decide(decision_inputs(collect_runs([phase1_runs], CONFIG)), CONFIG)
    assert expected.branch == "acceptable_b1"
    decision = section(md, "Decision")
    assert f"**{expected.title}** (branch `acceptable_b1`)" in decision
    assert expected.reason in decision
    assert "B1 has core LR AUC 0.612 and core_reliance 0.021" in decision
    assert "Next: run FULL with the config of B1" in decision

    matrix = section(md, "Results matrix")
    b1_row = next(line for line in matrix.splitlines() if line.startswith("| Core LR AUC"))
    assert b1_row.split(" | ")[1:4] == ["PASS < 0.60, WARN 0.60–0.65, FAIL > 0.65 (§6.1)", "0.554 (PASS)", "0.612 (WARN)"]
    assert "0.021 (PASS)" in matrix and "0.951 (PASS)" in matrix
    # B2 ran 7 epochs and never finished: its gate value is shown as such, its settings flagged.
    assert "0.700 (FAIL, gate after 0 epochs)" in matrix      # its gate after 5 epochs has no value
    assert "| B2 | 5 | – | – | – | – | 2000 | gate not computed: the gate sample has one class |" in section(md, "Gate history")
    assert "**NOT the plan's settings: epochs=7**" in matrix
    assert "**NOT the plan's settings: epochs=7**" in section(md, "Run provenance")
    assert "not run" in matrix                                   # B3, B4, FULL

    thetae = section(md, "θ_E stratification")
    assert "| [0.50, 0.75) | 0.862 (n=700)" in thetae
    assert "– (n=30: 30 positives < 50: no AUROC)" in thetae
    sens = section(md, "Core sensitivity")
    assert "| R=0 | 0.962 | 0.951 |" in sens and "| core_reliance | 0.012 | 0.021 |" in sens

    provenance = section(md, "Run provenance")
    assert "abc1234" in provenance and "synthetic-demo (data/synthetic-demo)" in provenance
    assert "same as this report's" in provenance

    with open(out / METRICS_CSV, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == csv_columns(CONFIG)
        rows = list(reader)
    assert [r["experiment"] for r in rows] == ["A1", "B1", "B2"]
    b1 = rows[1]
    assert (b1["final_core_lr_auc"], b1["core_lr_auc_verdict"], b1["core_reliance_verdict"]) == ("0.612", "WARN", "PASS")
    assert (b1["epochs_completed"], b1["plan_settings"], b1["core_sensitivity_r0"]) == ("50", "yes", "0.951")
    assert b1["val_auroc_thetae_0.50_0.75"] == "0.851" and b1["val_count_thetae_2.50_3.00"] == "30"
    assert b1["val_auroc_thetae_2.50_3.00"] == "" and b1["test_auroc"] == ""
    b2 = rows[2]
    assert (b2["status"], b2["plan_settings"], b2["overrides"], b2["final_core_lr_auc"]) == ("aborted", "no", "epochs=7", "")

    for name in PLOT_FILES:
        assert_png(out / name)
        assert f"]({name})" in md


def test_no_runs_is_exit_2_and_says_where_it_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "nowhere"
    done = report_cli("--runs-root", str(empty), "--runs-root", str(missing), "--config", str(CONFIG_PATH),
                      "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"{empty} (0 run directories)" in done.stderr and f"{missing} (does not exist)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_config_is_exit_2_with_the_file_named(phase1_runs, tmp_path):
    done = report_cli("--runs-root", str(phase1_runs), "--config", str(tmp_path / "none.toml"),
                      "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "none.toml" in done.stderr and "Traceback" not in done.stderr


def test_without_matplotlib_the_tables_are_still_written_and_the_report_says_why(phase1_runs, tmp_path):
    blocker = tmp_path / "no_mpl" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    out = tmp_path / "planb"
    done = report_cli("--runs-root", str(phase1_runs), "--config", str(CONFIG_PATH), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert "matplotlib is not installed" in done.stderr
    md = (out / RESULTS_MD).read_text()
    assert "matplotlib is not installed" in section(md, "Plots")
    assert (out / METRICS_CSV).is_file()
    assert not any((out / name).exists() for name in PLOT_FILES)


def test_the_same_experiment_on_two_hosts_uses_the_newest_and_says_so(tmp_path):
    old, new = tmp_path / "lambda", tmp_path / "lambda2"
    write_run(old, "A1", core=0.55, rel=0.01)
    write_run(old, "B1", core=0.70, rel=0.08, host="lambda", updated_at="2026-02-07T09:00:00+0000")
    write_run(new, "B1", core=0.58, rel=0.01, host="lambda2", updated_at="2026-02-07T11:30:00+0100")
    collection = collect_runs([old, new], CONFIG)
    assert collection.runs["B1"].location == str(new / "B1")
    note = next(n for n in collection.notes if n.startswith("B1 has 2 runs"))
    assert "done on lambda2 (the plan's settings) stands for B1; not done on lambda" in note
    assert "newer (2026-02-07" in note
    files = write_report(collection, CONFIG, tmp_path / "planb", plots=False)
    assert files.decision.branch == "success_b1"
    md = files.markdown.read_text()
    assert note in section(md, "Notes") and "**SUCCESS: use B1 config" in md
    runs = section(md, "Runs of each experiment")
    assert f"| B1 | **yes** | done | lambda2 | {new / 'B1'} |" in runs
    assert f"| B1 | no: newer (" in runs and f"| done | lambda | {old / 'B1'} |" in runs


def test_done_beats_aborted_the_longer_run_beats_the_smoke_run_and_mixed_datasets_are_said(tmp_path):
    """The issue-15 case: A1 done on local (a smoke run on the demo data) and aborted on lambda
    (another dataset); B1 a 2-epoch smoke run on local and a finished 20-epoch run on lambda."""
    local, lam = tmp_path / "local", tmp_path / "lambda"
    smoke = {"epochs": 2, "limit_train": 256}
    write_run(local, "A1", core=0.55, rel=0.01, epochs=2, planned=2, overrides=smoke,
              updated_at="2026-02-07T12:00:00+0000")
    write_run(lam, "A1", core=0.55, rel=0.01, epochs=3, planned=20, overrides={"epochs": 20}, status="aborted",
              finished=False, host="lambda", dataset="v5_cosmos_paired", updated_at="2026-02-07T13:00:00+0000")
    write_run(local, "B1", core=0.70, rel=0.08, epochs=2, planned=2, overrides=smoke,
              updated_at="2026-02-07T14:00:00+0000")
    write_run(lam, "B1", core=0.58, rel=0.01, epochs=20, planned=20, overrides={"epochs": 20}, host="lambda",
              dataset="v5_cosmos_paired", updated_at="2026-02-07T11:00:00+0000")
    collection = collect_runs([local, lam], CONFIG)
    a1, b1 = collection.runs["A1"], collection.runs["B1"]
    assert (a1.host, a1.state) == ("local", "done"), "an aborted run never stands for one that finished"
    assert (b1.host, b1.epochs_planned) == ("lambda", 20), "20 epochs are closer to the plan than a smoke run"
    files = write_report(collection, CONFIG, tmp_path / "planb", plots=False)
    md = files.markdown.read_text()
    warning = next(n for n in collection.notes if "different datasets" in n)
    assert "A1 synthetic-demo (on local), B1 v5_cosmos_paired (on lambda)" in warning
    assert warning[len("Warning: "):] in section(md, "Results matrix")
    assert "None." not in section(md, "Notes")
    assert any("different datasets" in n for n in files.decision.notes) and files.decision.provisional
    runs = section(md, "Runs of each experiment")
    assert "| A1 | no: a run that completed or is in progress comes before one that ended incomplete | aborted | " \
           "lambda |" in runs
    assert "| B1 | no: fewer than the plan's epochs" not in runs
    assert "| B1 | no: fewer epochs than the plan (epochs=20) is closer to the plan than a smoke run " \
           "(epochs=2, limit_train=256) | done | local |" in runs
    matrix = section(md, "Results matrix")
    assert "| Host |  | local | lambda | – |" in matrix


def test_a_shortcut_b1_reports_stop_and_nothing_to_launch(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "A1", core=0.554, rel=0.012)
    write_run(runs, "B1", core=0.694, rel=0.071, radial=0.50)
    files = write_report(collect_runs([runs], CONFIG), CONFIG, tmp_path / "planb", plots=False)
    assert files.decision.branch == "stop_shortcut"
    decision = section(files.markdown.read_text(), "Decision")
    assert "**STOP: model is exploiting shortcut**" in decision
    assert "Next: nothing — the plan says STOP" in decision
    assert "0.694" in decision and "0.071" in decision


def test_run_states_lost_locally_but_as_written_for_a_fetched_copy(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "A1", core=0.55, rel=0.01, status="running", epochs=7, finished=False, host="local")
    write_run(runs, "B1", core=0.55, rel=0.01, status="running", epochs=12, finished=False, host="lambda")
    collection = collect_runs([runs], CONFIG)
    assert collection.runs["A1"].state == "lost"          # its process is gone from this machine
    b1 = collection.runs["B1"]
    assert b1.state == "running" and "as written on lambda" in b1.state_note
    files = write_report(collection, CONFIG, tmp_path / "planb", plots=False)
    assert files.decision.branch == "waiting"
    assert "B1 has no final_core_lr_auc yet (status running, epoch 12/50 on lambda)" in files.decision.reason
    assert "A1 ended with no final_core_lr_auc (status lost, epoch 7/50 on local): relaunch it" in files.decision.reason
    md = files.markdown.read_text()
    assert "running (as written on lambda; its process is not checked from here)" in md


def test_test_set_metrics_get_their_own_tables_and_columns(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "B1", core=0.58, rel=0.01, test_auroc=0.874)
    files = write_report(collect_runs([runs], CONFIG), CONFIG, tmp_path / "planb", plots=False)
    md = files.markdown.read_text()
    assert "0.874 (FAIL)" in section(md, "Results matrix")
    thetae = section(md, "θ_E stratification")
    assert "Test set (§5.6), held out" in thetae and "| θ_E bin (arcsec) | B1 test (held out) |" in thetae
    assert "| B1 val | B1 test (held out) |" in section(md, "Core sensitivity")
    assert "0.874 (FAIL)" in section(md, "What the decision reads")
    with open(files.csv, newline="") as f:
        row = next(csv.DictReader(f))
    # θ_E verdicts read validation bins; the test bins have their own columns.
    assert (row["test_auroc"], row["test_auroc_verdict"]) == ("0.874", "FAIL")
    assert row["thetae_source"] == "gates[after_epochs=50].val_auroc_by_thetae"
    assert row["test_core_sensitivity_r15"] == str(0.874 - 0.015)


def test_the_control_center_writes_the_report_from_status_entries(phase1_runs, tmp_path):
    from engine.protocol.status import run_status

    entries = {d.name: run_status(d) for d in sorted(phase1_runs.iterdir())}
    files = write_report(entries, CONFIG, tmp_path / "planb", plots=False)
    assert files.decision.branch == "acceptable_b1"
    assert files.summary.endswith("(no plots); decision: ACCEPTABLE: use B1 config with monitoring")
    md = files.markdown.read_text()
    assert "0.612 (WARN)" in section(md, "Results matrix")
    assert "B1 on local (lenstui status)" in section(md, "Run provenance")
    with open(files.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["experiment"], r["status"], r["final_core_lr_auc"]) for r in rows] == \
        [("A1", "done", "0.554"), ("B1", "done", "0.612"), ("B2", "aborted", "")]
