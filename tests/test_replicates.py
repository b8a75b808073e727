"""Issue 19, seed replicates end to end: `lenstui launch B1 --seeds 42,43` starts two real trainings, each
in a run directory of its own; the report and the matrix show their mean ± sd and how many are done;
the detail view lists them. Plus the naming rules and the pooling, case by case."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.protocol import rundir
from engine.protocol.rundir import parse_run_name, parse_seeds, run_name, run_name_problem, seed_args
from engine.results.replicates import group_of, pooled
from engine.results.report import METRICS_CSV, RESULTS_MD
from engine.results.representative import RunCandidate, choose
from engine.synthetic.twin import write_dataset
from lenstui.app import make_app
from lenstui.screens.detail import DetailScreen

from sshd import local_host_toml, write_config
from test_app import cell, wait_for

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "experiments.toml")


# ---------------------------------------------------------------------------
# Naming: a replicate's directory is never an experiment's


def test_a_replicates_name_says_its_experiment_and_seed_and_the_plans_seed_is_the_experiment_itself():
    assert run_name("B1", 42, plan_seed=42) == "B1" and run_name("B1", None, 42) == "B1"
    assert run_name("B1", 43, plan_seed=42) == "B1@seed43"
    assert parse_run_name("B1@seed43") == ("B1", 43) and parse_run_name("B1") == ("B1", None)
    assert run_name_problem("B1@seed43") is None and run_name_problem("B1") is None
    assert "plain non-negative integer" in run_name_problem("B1@seedx")
    assert run_name_problem("B1@seed043") is not None          # one spelling per seed
    assert run_name_problem("../B1@seed4") is not None
    assert seed_args(42, 42) == [] and seed_args(44, 42) == ["--seed", "44"]
    assert parse_seeds("42, 43,43,44") == [42, 43, 44]
    with pytest.raises(ValueError, match="non-negative integers"):
        parse_seeds("42,-1")
    # '@' is not allowed in an experiment id: no config can name an experiment like a replicate.
    from engine.config import id_problem
    assert id_problem("B1@seed43") is not None


def test_the_config_says_how_many_replicates_each_experiment_runs(tmp_path):
    text = (ROOT / "experiments.toml").read_text().replace("replicates = 1", "replicates = 3")
    text = text.replace('[experiments.B1]\n', '[experiments.B1]\nreplicates = 2\n')
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.experiments["A1"].replicates == 3 and config.experiments["B1"].replicates == 2
    path.write_text(text.replace("replicates = 3", "replicates = 0"))
    with pytest.raises(Exception, match="replicates"):
        load_config(path)


def done_run(seed: int, rel: float, auc: float, host: str = "local", ci=(0.02, 0.08)) -> RunCandidate:
    metrics = {"status": "done", "seed": seed, "overrides": {"seed": seed} if seed != 42 else {},
               "epochs_planned": 50, "best_val_auroc": auc, "core_reliance": rel, "core_reliance_ci95": list(ci),
               "final_core_lr_auc": 0.70, "final_radial_lr_auc": 0.5, "updated_at": "2026-02-07T10:00:00+0000"}
    return RunCandidate("B1", host, "x", "done", metrics, {"host": host, "dataset": "d"},
                        name=run_name("B1", seed, 42))


def test_pooled_replicates_are_their_mean_with_the_sd_and_the_verdicts_recomputed():
    runs = [done_run(42, 0.040, 0.90), done_run(43, 0.050, 0.92), done_run(44, 0.060, 0.94)]
    aborted = RunCandidate("B1", "local", "x", "aborted", {"seed": 45, "overrides": {"seed": 45}}, {"host": "local",
                           "dataset": "d"}, name="B1@seed45")
    group = group_of(choose([*runs, aborted], 50), plan_seed=42, planned=3)
    assert [c.run_name for c in group.members] == ["B1", "B1@seed43", "B1@seed44"]
    assert [c.run_name for c in group.ended] == ["B1@seed45"]
    assert group.count_words() == "3/3" and group.words() == "3 of 3 seeds done (42, 43, 44)"
    m = pooled(group, CONFIG)
    assert m["core_reliance"] == pytest.approx(0.05)
    assert m["core_reliance_seeds"]["sd"] == pytest.approx(statistics.stdev([0.04, 0.05, 0.06]))
    assert m["core_reliance_ci95"] == pytest.approx([0.02, 0.08])
    assert m["best_val_auroc"] == pytest.approx(0.92)
    v = m["verdicts"]["core_reliance"]
    assert v["verdict"] == "WARN" and v["seeds"]["n"] == 3 and v["crosses"] == [0.03, 0.05]
    assert m["replicates"]["done"] == 3 and m["replicates"]["pooled"] is True
    one = pooled(group_of(choose(runs[:1], 50), 42, 1), CONFIG)
    assert one["core_reliance"] == 0.04 and "core_reliance_seeds" not in one


def test_a_replicate_with_other_overrides_is_not_pooled_with_the_plans_run():
    smoke = done_run(43, 0.5, 0.6)
    smoke.metrics["overrides"] = {"seed": 43, "epochs": 2, "limit_train": 64}
    group = group_of(choose([done_run(42, 0.04, 0.9), smoke], 50), plan_seed=42)
    assert [c.run_name for c in group.members] == ["B1"]


# ---------------------------------------------------------------------------
# The real thing: two seeds of B1 trained on a tiny synthetic set through the CLI


def lenstui(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenstui.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("seeds")
    data = tmp / "synth"
    write_dataset(data, rows={"train": 96, "val": 96, "test": 48}, seed=7)
    config = write_config(tmp / "experiments.toml", [local_host_toml(tmp / "runs")], str(data))
    text = config.read_text()
    for old, new in {"gate_n_samples = 2000": "gate_n_samples = 40", "gate_cv_folds = 5": "gate_cv_folds = 2",
                     "sample_fraction = 0.10": "sample_fraction = 1.0", "replicates = 1": "replicates = 2"}.items():
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    done = lenstui("--config", str(config), "launch", "B1", "--host", "local", "--gpu", "cpu", "--seeds", "plan",
                   "--", "--epochs", "1", "--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "B1 launched on local" in done.stdout and "B1@seed43 launched on local" in done.stdout
    runs = tmp / "runs"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        states = [rundir.observe_run(runs / n).state for n in ("B1", "B1@seed43")]
        if all(s.terminal for s in states):
            break
        time.sleep(2)
    for name in ("B1", "B1@seed43"):
        assert rundir.read_metrics(runs / name).data["status"] == "done", (runs / name / "stdout.log").read_text()[-3000:]
    return config, runs


@pytest.mark.slow
def test_each_seed_trains_in_its_own_directory_with_intervals_over_lrgs(two_seeds):
    _, runs = two_seeds
    plan, other = (rundir.read_metrics(runs / n).data for n in ("B1", "B1@seed43"))
    assert (plan["seed"], plan["run_name"], other["seed"], other["run_name"]) == (42, "B1", 43, "B1@seed43")
    assert other["overrides"]["seed"] == 43 and "seed" not in plan["overrides"]
    for m in (plan, other):
        low, high = m["core_reliance_ci95"]
        assert low <= m["core_reliance"] <= high
        low, high = m["best_val_auroc_ci95"]
        assert low <= m["best_val_auroc"] <= high
        assert m["bootstrap"]["val"]["unit"] == "LRG" and m["bootstrap"]["val"]["draws"] == 1000
        assert "interval" in m["verdicts"]["core_reliance"]
    info = json.loads((runs / "B1@seed43" / "run.json").read_text())
    assert info["experiment"] == "B1" and info["run_name"] == "B1@seed43"


@pytest.mark.slow
def test_the_report_shows_mean_and_sd_over_seeds_and_the_interval_bounds(two_seeds, tmp_path):
    config, runs = two_seeds
    out = tmp_path / "planb"
    done = subprocess.run([sys.executable, "-m", "engine.report", "--runs-root", str(runs), "--config", str(config),
                           "--out", str(out), "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rel = [rundir.read_metrics(runs / n).data["core_reliance"] for n in ("B1", "B1@seed43")]
    md = (out / RESULTS_MD).read_text()
    assert "| Replicates | seeds behind each value |" in md and "2/2 seeds done (mean ± sd)" in md
    assert "## Seed replicates" in md and "B1@seed43" in md
    assert f"{statistics.mean(rel):.3f} ± {statistics.stdev(rel):.3f} (n=2" in md
    row = next(r for r in csv.DictReader((out / METRICS_CSV).open()) if r["experiment"] == "B1")
    assert float(row["core_reliance"]) == pytest.approx(statistics.mean(rel), abs=1e-9)
    assert float(row["core_reliance_seeds_sd"]) == pytest.approx(statistics.stdev(rel), abs=1e-9)
    assert row["replicates_done"] == "2" and row["replicates_planned"] == "2" and row["replicate_seeds"] == "42 43"
    assert float(row["core_reliance_lower"]) < float(row["core_reliance_upper"])
    assert float(row["val_auroc_lower"]) <= float(row["best_val_auroc"]) <= float(row["val_auroc_upper"])


@pytest.mark.slow
async def test_the_matrix_shows_mean_sd_and_the_count_and_the_detail_lists_the_seeds(two_seeds):
    config, runs = two_seeds
    auc = [rundir.read_metrics(runs / n).data["best_val_auroc"] for n in ("B1", "B1@seed43")]
    app = make_app(config, refresh_s=0.5)
    try:
        async with app.run_test(size=(140, 50)) as pilot:
            await wait_for(pilot, lambda: cell(app, "B1", "status") == "done 2/2", timeout=30)
            assert cell(app, "B1", "best") == f"{statistics.mean(auc):.3f}±{statistics.stdev(auc):.3f}"
            assert "±" in cell(app, "B1", "reliance")
            app.action_detail("B1")
            await pilot.pause(0.2)
            detail = app.screen
            assert isinstance(detail, DetailScreen)
            analysis = str(detail.query_one("#analysis").render())
            assert "Seed replicates of B1 (2 of 2 seeds done (42, 43))" in analysis
            assert "B1@seed43" in analysis and "mean over done seeds: val AUROC" in analysis
            assert "95% " in analysis                        # the intervals over LRGs beside the values
            first = detail.run_name                          # the run that stands for B1 (the newer seed)
            assert first in ("B1", "B1@seed43")
            other = "B1" if first == "B1@seed43" else "B1@seed43"
            await pilot.press("h")                           # the next run of B1: its other seed
            assert detail.run_name == other
            log = (runs / other / "stdout.log").read_text()
            await wait_for(pilot, lambda: detail.log_text and detail.log_text in log, timeout=20)
            assert ("--seed 43" in detail.log_text) == (other == "B1@seed43")
            assert str(detail.query_one("#detail-title").render()).startswith(f"{other} on local")
            await pilot.press("h")
            assert detail.run_name == first
    finally:
        app.fleet.close()


# ---------------------------------------------------------------------------
# The decision panel: too close to call, and the replicates that would settle it


async def test_the_decision_panel_says_too_close_to_call_and_r_offers_the_missing_seeds():
    from textual.widgets import Input, Select

    from lenstui.screens.confirm import ConfirmScreen
    from lenstui.screens.decision import DecisionScreen
    from lenstui.screens.launch import LaunchScreen
    from test_app import FakeFleet, app_with, smoke_done

    fleet = FakeFleet(["local"])
    fleet.runs["local"]["A1"] = smoke_done()
    b1 = smoke_done(core=0.70, rel=0.0503)          # the synthetic twin's B1: FAIL, WARN within reach
    b1.update(overrides={}, epochs_planned=50, final_core_lr_auc_ci95=[0.68, 0.72], core_reliance_ci95=[0.046, 0.055])
    fleet.runs["local"]["B1"] = b1
    app = app_with(fleet)
    async with app.run_test(size=(120, 50)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "done")
        await pilot.press("d")
        screen = app.screen
        assert isinstance(screen, DecisionScreen)
        assert screen.decision.branch == "stop_shortcut" and screen.decision.too_close_to_call
        assert "too close to call" in screen.text
        assert "core_reliance 0.0503, 95% 0.046–0.055: crosses 0.05" in screen.text
        assert [(e, n, h, a) for e, n, h, a in screen.replicates] == [
            ("B1", "B1@seed43", "local", ("--seed", "43")), ("B1", "B1@seed44", "local", ("--seed", "44"))]
        assert "r: the launch dialog for each of B1@seed43 on local, B1@seed44 on local" in screen.text
        await pilot.press("r")
        dialogs = []
        while isinstance(app.screen, LaunchScreen):
            dialogs.append((app.screen.exp_id, app.screen.query_one("#host", Select).value,
                            app.screen.query_one("#extra", Input).value))
            await pilot.press("enter")
        assert dialogs == [("B1", "local", "--seed 43"), ("B1", "local", "--seed 44")]
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: len(fleet.launches) == 2)
        assert [l[4] for l in fleet.launches] == [("--seed", "43"), ("--seed", "44")]


async def test_a_decision_well_inside_its_branch_offers_no_replicates():
    from lenstui.screens.decision import DecisionScreen
    from test_app import FakeFleet, app_with, smoke_done

    fleet = FakeFleet(["local"])
    fleet.runs["local"]["A1"] = smoke_done()
    b1 = smoke_done(core=0.70, rel=0.09)
    b1.update(final_core_lr_auc_ci95=[0.68, 0.72], core_reliance_ci95=[0.07, 0.11])
    fleet.runs["local"]["B1"] = b1
    app = app_with(fleet)
    async with app.run_test(size=(120, 50)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "done")
        await pilot.press("d")
        screen = app.screen
        assert isinstance(screen, DecisionScreen) and not screen.decision.too_close_to_call
        assert "too close to call" not in screen.text and screen.replicates == []
        await pilot.press("r")
        assert isinstance(app.screen, DecisionScreen)
