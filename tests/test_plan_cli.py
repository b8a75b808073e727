"""`lenstui plan --json` and its schema; a fleet whose every GPU is busy queues the plan's run, visibly,
and starts it when one frees up (the real app, real tiny trainings on `local`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from lenstui.app import make_app
from lenstui.fleet import Fleet
from lenstui.plan import PLAN_SCHEMA, STATUSES
from lenstui.screens.confirm import ConfirmScreen
from lenstui.screens.plan import PlanScreen

from data_fixtures import write_tiny_dataset
from sshd import local_host_toml, write_config
from sshd import wait_for as sshd_wait_for
from test_app_e2e import TINY, kill_group_of, wait_for

TRAIN_ARGS = ("--epochs", "1", "--limit-train", "16", "--limit-val", "16", "--device", "cpu")
STEP_KEYS = ["1.1", "1.2", "1.3", "1.4", "1.5", "2.1", "2.2", "2.3", "2.4", "3.1", "3.2", "3.3", "3.4",
             "4.1", "4.2", "4.3"]


def local_config(tmp_path: Path, data: Path, limit: int) -> Path:
    table = local_host_toml(tmp_path / "runs") + f"max_runs_per_gpu = {limit}\n"
    config = write_config(tmp_path / "experiments.toml", [table], str(data))
    text = config.read_text()
    for old, new in TINY.items():
        text = text.replace(old, new)
    config.write_text(text)
    return config


def test_plan_json_has_the_documented_schema_and_says_what_blocks_each_step(tmp_path):
    config = local_config(tmp_path, tmp_path / "no-data-yet", 1)
    text = config.read_text()   # real shards, not there: nothing Advance can make, a person copies them
    config.write_text(text.replace('kind = "synthetic"\nroot', 'kind = "shards"\nroot').replace("scale = 0.01\nseed = 1\n", ""))
    done = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["schema"] == PLAN_SCHEMA
    assert set(plan) >= {"plan", "local_code_version", "engine_version", "steps", "decision", "halted", "report",
                         "hosts", "notes"}
    assert [s["key"] for s in plan["steps"]] == STEP_KEYS
    for step in plan["steps"]:
        assert set(step) == {"key", "phase", "title", "status", "detail", "blocked_by", "actions"}
        assert step["status"] in STATUSES
        if step["status"] in ("waiting", "blocked", "failed", "stopped"):
            assert step["blocked_by"], step     # a step that cannot go says by what
    steps = {s["key"]: s for s in plan["steps"]}
    # No dataset on the host: the manifests cannot be built, and the step says what to do.
    assert steps["1.1"]["status"] == "blocked" and "no dataset on local: copy its shards" in steps["1.1"]["blocked_by"]
    assert steps["1.1"]["actions"] == [] and "no dataset at" in steps["1.1"]["detail"]
    assert steps["1.5"]["status"] == "done"            # local runs this folder's engine
    assert steps["2.1"]["status"] == "waiting" and "Phase 1" in steps["2.1"]["blocked_by"]
    assert plan["decision"]["branch"] == "waiting" and plan["hosts"][0]["host"] == "local"
    text = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan"],
                          capture_output=True, text=True, timeout=120).stdout
    assert "2.1  WAITING" in text and "[waits on: Phase 1" in text


@pytest.mark.slow
async def test_every_gpu_busy_queues_the_run_on_screen_and_it_starts_when_one_frees(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_tiny_dataset(tmp_path / "data", n_lrgs={"train": 16, "val": 12, "test": 8})
    config = local_config(tmp_path, data, 1)     # one host, one run at a time
    fleet = Fleet(load_config(config), config)
    app = make_app(config, fleet=fleet, refresh_s=0.5, train_args=TRAIN_ARGS)
    try:
        async with app.run_test(size=(120, 60)) as pilot:
            await wait_for(pilot, lambda: "local" in app.snapshots, timeout=30)
            await pilot.press("p")
            await wait_for(pilot, lambda: app.plan_state() is not None, timeout=60)
            await pilot.press("a")                 # the manifests, then Phase 2: one runs, one waits
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
            text = app.screen.text
            assert "manifests on local" in text and "A1 → local:cpu" in text, text
            assert re.search(r"B1 waits in the queue: every GPU is busy: .*max_runs_per_gpu = 1", text), text
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=10)
            await wait_for(pilot, lambda: "Queue (1 waiting for a GPU with room)" in app.screen.text, timeout=30)
            assert "B1 (plan, step 2.2): every GPU is busy" in app.screen.text
            assert "local:cpu      1/1 runs: A1" in app.screen.text or app.plan_state().step("2.1").status == "done"

            # No key pressed: when A1 ends, the queued B1 starts on the freed slot.
            await wait_for(pilot, lambda: app.plan_state().step("2.2").status in ("running", "done"), timeout=180)
            assert app.plan_state().step("2.1").status == "done"
            assert "Queue (empty)" in app.screen.text
            await wait_for(pilot, lambda: app.plan_state().step("2.2").status == "done", timeout=180)
            b1 = json.loads((tmp_path / "runs" / "B1" / "run.json").read_text())
            a1 = json.loads((tmp_path / "runs" / "A1" / "run.json").read_text())
            assert b1["provenance"]["plan_step"] == "2.2" and b1["started_at"] >= a1["ended_at"]
    finally:
        fleet.close()
        for exp in ("A1", "B1"):
            kill_group_of(tmp_path / "runs" / exp)


def plan_with_baselines_done(tmp_path: Path, reliance: float) -> Path:
    """Local host, tiny data with its manifests built, A1 and B1 done (fixture run directories):
    B1's core gate 0.70 (fails §6.1) and core_reliance `reliance`."""
    from test_snapshots import gate, write_run

    data = write_tiny_dataset(tmp_path / "data")
    config = local_config(tmp_path, data, 3)
    built = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(data), "--config", str(config),
                            "--host", "local"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    verdicts = {"core_lr_auc": {"verdict": "FAIL", "value": 0.70}, "core_reliance": {"verdict": "PASS", "value": reliance}}
    summary = {"best_val_auroc": 0.85, "best_epoch": 4, "final_core_lr_auc": 0.70, "final_radial_lr_auc": 0.50,
               "core_reliance": reliance, "verdicts": verdicts}
    for exp in ("A1", "B1"):
        write_run(tmp_path / "runs", exp, "local", "done", [0.7, 0.8, 0.85, 0.85], [gate(4, 0.70, 0.50)], **summary)
    return config


def test_advance_proposes_the_three_variants_together_when_the_tree_says_so(tmp_path):
    config = plan_with_baselines_done(tmp_path, reliance=0.02)
    done = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan", "run", "--",
                           "--epochs", "1"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    # Not on a terminal and no --yes: it says what it would do, where, and starts nothing.
    assert done.returncode == 3, done.stdout + done.stderr
    for exp, step in (("B2", "3.1"), ("B3", "3.2"), ("B4", "3.3")):
        assert re.search(rf"{exp} → local:cpu  \[differs from the plan: --epochs 1 .*\]  \(step {step}\)", done.stdout)
    assert "add --yes" in done.stderr
    # A1 and B1 ran 4 epochs: the decision that chose B2-B4 is provisional, and Advance says so first.
    assert re.search(r"Caution: .*provisional", done.stdout), done.stdout
    assert not any((tmp_path / "runs" / e).exists() for e in ("B2", "B3", "B4"))


def test_a_stop_halts_plan_run_auto_and_says_why(tmp_path):
    config = plan_with_baselines_done(tmp_path, reliance=0.10)
    done = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan", "run", "--auto"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 3
    assert "the plan stops here: STOP: model is exploiting shortcut" in done.stderr
    assert "2.4  STOPPED" in done.stdout and "a person decides" in done.stdout
    assert not (tmp_path / "runs" / "FULL").exists()


async def test_a_silent_hosts_gpus_are_held_until_the_user_declares_it_gone(tmp_path):
    from lenstui.fleet import HostSnapshot
    from test_snapshots import PlanDirFleet, fixture_app

    app = fixture_app(tmp_path)

    class SilentGpu1(PlanDirFleet):
        def poll(self, host):
            if host == "gpu1":
                return HostSnapshot.down("gpu1", 1_790_000_000.0, "no answer within 30 s")
            return super().poll(host)

    app.fleet = SilentGpu1(app.fleet.runs_roots, app.fleet.gpus, tmp_path / "experiments.toml")
    app.fleet.config = app.config
    async with app.run_test(size=(120, 60)) as pilot:
        await wait_for(pilot, lambda: {"local", "gpu1"} <= set(app.snapshots), timeout=10)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.code_version is not None, timeout=10)
        await pilot.pause()
        assert "gpu1           not answering: its GPUs are held for its runs" in app.screen.text
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen) and "Declare gpu1 gone?" in app.screen.text
        await pilot.press("y")
        await pilot.pause()
        assert app.gone == {"gpu1"} and "its GPUs are held" not in app.screen.text


def test_advance_launches_every_planned_seed_of_a_baseline_as_its_own_run(tmp_path):
    # `replicates = 2`: A1 and B1 each want the plan's seed and the next; the plan's seed is the
    # experiment's own run directory, the other a replicate's (<id>@seed<N>), both through the scheduler.
    data = write_tiny_dataset(tmp_path / "data")
    config = local_config(tmp_path, data, 4)
    text = config.read_text()
    config.write_text(re.sub(r"^replicates = 1$", "replicates = 2", text, count=1, flags=re.M)
                      if re.search(r"^replicates = 1$", text, flags=re.M)
                      else text.replace("[training]\n", "[training]\nreplicates = 2\n", 1))
    plan_seed = load_config(config).training.seed
    built = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(data), "--config", str(config),
                            "--host", "local"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    done = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan", "run", "--",
                           "--epochs", "1"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 3, done.stdout + done.stderr
    for name, step in (("A1", "2.1"), (f"A1@seed{plan_seed + 1}", "2.1"), ("B1", "2.2"),
                       (f"B1@seed{plan_seed + 1}", "2.2")):
        assert re.search(rf"^\s*{re.escape(name)} → local:cpu .*\(step {step}\)", done.stdout, flags=re.M), done.stdout
    assert f"--seed {plan_seed + 1}" in done.stdout
    table = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan"],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert f"with 2 seeds ({plan_seed}, {plan_seed + 1})" in table.stdout, table.stdout

    # Started for real: each seed in its own directory, the replicate with its seed.
    started = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan", "run", "--yes",
                              "--", *TRAIN_ARGS], capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
    runs = tmp_path / "runs"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        for name in ("A1", f"A1@seed{plan_seed + 1}", "B1", f"B1@seed{plan_seed + 1}"):
            info = sshd_wait_for(lambda: json.loads((runs / name / "run.json").read_text())
                                 if (runs / name / "run.json").exists() else None, timeout=120)
            assert info.get("run_name", name) == name and info["provenance"]["requested_by"] == "plan"
            assert ("--seed" in info["command"]) == ("@seed" in name), info["command"]
    finally:
        for name in ("A1", f"A1@seed{plan_seed + 1}", "B1", f"B1@seed{plan_seed + 1}"):
            kill_group_of(runs / name)


def shortcut_demo_config(tmp_path: Path) -> Path:
    """The shipped experiments.toml, its `synthetic-shortcut` dataset (priors as shipped) at scale 0.05
    under tmp_path, on the `local` host."""
    text = (Path(__file__).resolve().parents[1] / "experiments.toml").read_text()
    start = text.index("[datasets.synthetic-shortcut]")
    end = text.index("\n[", start + 1)
    block = (text[start:end].replace('root = "data/synthetic-shortcut"', f'root = "{tmp_path}/sc"')
             .replace('unpaired_manifest = "data/synthetic-shortcut/lens-catalogue"',
                      f'unpaired_manifest = "{tmp_path}/sc/lens-catalogue"')
             .replace("scale = 0.1", "scale = 0.05"))
    assert "lens_host_luminosity_weight" in block and f'{tmp_path}/sc"' in block, block
    text = text[:start] + block + text[end:]
    start = text.index("\n[hosts.local]\n")
    end = text.index("\n[", start + 5)
    repo = Path(__file__).resolve().parents[1]   # this checkout's engine: nothing to sync
    local = (f'\n[hosts.local]\ntransport = "local"\nwork_dir = "{repo}"\npython = "{sys.executable}"\n'
             f'runs_root = "{tmp_path}/runs"\ndataset = "synthetic-shortcut"\n')
    config = tmp_path / "experiments.toml"
    config.write_text(text[:start] + local + text[end:])
    return config


def test_the_shortcut_demo_drive_reaches_phase_3_by_the_trees_own_reading(tmp_path):
    # The data has the core shortcut (B1's core gate fails), the model need not take it (wide, bright
    # arcs outside R = 7 px): §10 reads TEST MASKING VARIANTS from B1's own numbers, and Advance
    # proposes B2-B4 together. Real synth, real data check, real (1-epoch) A1 and B1.
    config = shortcut_demo_config(tmp_path)
    made = subprocess.run([sys.executable, "-m", "engine.synth", "--config", str(config), "--dataset",
                           "synthetic-shortcut"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    cli = [sys.executable, "-m", "lenstui.cli", "--config", str(config), "--host", "local", "plan", "run"]
    runs = tmp_path / "runs"
    try:
        first = subprocess.run([*cli, "--yes", "--", "--epochs", "1", "--limit-train", "256", "--limit-val", "512",
                                "--device", "cpu"], capture_output=True, text=True, timeout=300,
                               stdin=subprocess.DEVNULL)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "A1 → local:cpu" in first.stdout and "B1 → local:cpu" in first.stdout
        for exp in ("A1", "B1"):
            sshd_wait_for(lambda exp=exp: (json.loads((runs / exp / "metrics.json").read_text()).get("status")
                                           if (runs / exp / "metrics.json").exists() else None) == "done",
                          timeout=400, interval=1.0)
        b1 = json.loads((runs / "B1" / "metrics.json").read_text())
        assert b1["final_core_lr_auc"] > 0.65 and b1["core_reliance"] < 0.05, \
            (b1["final_core_lr_auc"], b1["core_reliance"])
        second = subprocess.run(cli, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert second.returncode == 3, second.stdout + second.stderr   # not asked on a terminal: shown only
        for exp, step in (("B2", "3.1"), ("B3", "3.2"), ("B4", "3.3")):
            assert re.search(rf"{exp} → local:cpu.*\(step {step}\)", second.stdout), second.stdout
        table = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "--host", "local",
                                "plan"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert "TEST MASKING VARIANTS" in table.stdout, table.stdout
    finally:
        for exp in ("A1", "B1"):
            kill_group_of(runs / exp)


def test_a_done_run_missing_seeds_that_are_not_wanted_never_reads_running(tmp_path):
    # replicates = 2 and B2 done by hand with one seed while §10 says STOP: nothing runs, so B2's
    # step must not read RUNNING (it is not needed, or waits), and Advance launches no seed of it.
    from test_snapshots import gate, write_run

    config = plan_with_baselines_done(tmp_path, reliance=0.10)
    config.write_text(config.read_text().replace("[training]\n", "[training]\nreplicates = 2\n", 1)
                      if not re.search(r"^replicates = ", config.read_text(), flags=re.M)
                      else re.sub(r"^replicates = \d+$", "replicates = 2", config.read_text(), count=1, flags=re.M))
    assert load_config(config).experiments["B2"].replicates == 2
    write_run(tmp_path / "runs", "B2", "local", "done", [0.7, 0.8], [gate(2, 0.70, 0.50)], best_val_auroc=0.8,
              best_epoch=2, core_reliance=0.02)
    done = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "plan", "--json"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    steps = {s["key"]: s for s in json.loads(done.stdout)["steps"]}
    assert steps["3.1"]["status"] not in ("running", "ready"), steps["3.1"]
