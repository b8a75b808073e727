"""The benchmarks run: each in its tiny --quick mode, on real parts, in its own process.

No timing is asserted (speed belongs in bench/, and this machine is shared); what is
asserted is that each script completes, measures something, and that the checks built
into them hold: the proposed augmentation gives the very batches engine.training.augment gives,
our renderer agrees with lenstronomy, the app polled its hosts while idle, and the GPU
check runs from the repository without textual or paramiko.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny synthetic dataset shared by the benchmarks (the quick mode's sizes)."""
    if str(REPO) not in sys.path:   # bench/ is run from the checkout, not installed
        sys.path.insert(0, str(REPO))
    from bench.common import BENCH_SEED, QUICK_ROWS
    from engine.synthetic.twin import write_dataset

    root = tmp_path_factory.mktemp("bench") / "data"
    write_dataset(root, rows=QUICK_ROWS, seed=BENCH_SEED)
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"   # two cores shared by many: one thread each
    return env


def run_bench(module: str, tmp_path: Path, data: Path | None, *extra: str) -> dict:
    """Run `python -m <module> --quick`, fail with its output if it fails, return its JSON."""
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", module, "--quick", "--work", str(tmp_path / "work"), "--json", str(out), *extra]
    if data is not None:
        argv += ["--data-root", str(data)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, f"{module} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "goal:" in done.stdout or "**" in done.stdout, "the tables were printed"
    return json.loads(out.read_text())


def test_datapath_measures_every_pipeline_and_ours_matches_the_old_path(tmp_path, tiny_data):
    result = run_bench("bench.bench_datapath", tmp_path, tiny_data)
    v = result["values"]
    # The bench raises if any batch of ours' first epoch differs from the old (before) path's.
    assert v["naive_samples_per_s"] > 0 and v["ours_samples_per_s"] > 0 and v["before_samples_per_s"] > 0
    assert v["examples"] == 96, "the paired view of 48 train rows"
    assert [g["name"] for g in result["goals"]][:2] == ["ours / naive per epoch (engine.training.augment today)",
                                                         "ours samples/s (engine.training.augment today)"]
    assert result["machine"]["cpu_model"] and result["machine"]["loadavg_1_5_15"]


def test_train_measures_step_and_eval_throughput(tmp_path):
    result = run_bench("bench.bench_train", tmp_path, None)
    (row,) = result["values"]["results"]
    assert (row["stem"], row["variant"], row["precision"]) == ("stock", "base", "fp32")
    assert row["train_img_s"] > 0 and row["eval_img_s"]["2048"] > 0
    assert row["epoch_full_s"] > row["epoch_10pct_s"] > 0


def test_synth_renders_what_lenstronomy_renders(tmp_path):
    pytest.importorskip("lenstronomy")
    result = run_bench("bench.bench_synth", tmp_path, None)
    v = result["values"]
    assert v["ours_stamps_per_s"] > 0 and all(r > 0 for r in v["lenstronomy_stamps_per_s"].values())
    assert v["errors"]["ours"] < 0.01, "our arcs match lenstronomy's (supersampled) to 1% of the peak"
    assert v["errors"]["1"] > v["errors"]["3"], "lenstronomy without supersampling is the less accurate"
    assert v["write_rows_per_s"] > 0


def test_gates_status_and_idle_tui(tmp_path, tiny_data):
    result = run_bench("bench.bench_gates_status", tmp_path, tiny_data)
    v = result["values"]
    assert 0 < v["gate_core_lr_auc_2k"] < 1 and 0 < v["gate_radial_lr_auc_2k"] < 1
    assert v["gate_100k_projected_s"] > v["gate_big_s"] > 0
    assert v["status_in_process_ms"] > 0 and v["status_subprocess_ms"] > 0
    tui = v["tui"]
    assert tui["polls"] >= 1, "the app kept polling its hosts while idle"
    assert 0 <= tui["cpu_percent"] < 100 and tui["wall_s"] >= 1.9


def test_stampcache_builds_the_scaled_origin_data_on_one_and_on_every_core(tmp_path):
    result = run_bench("bench.bench_stampcache", tmp_path, None, "--jobs", "2")
    v = result["values"]
    assert v["identical"] is True and v["entries"] == 2 * 2 * 324 and v["jobs"] == 2
    assert v["one_core_s"] > 0 and v["all_cores_s"] > 0 and v["speedup"] > 0


def test_run_all_collects_goals(tmp_path):
    pytest.importorskip("lenstronomy")
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--only", "synth", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True,
                          timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "synth.json").read_text())["bench"] == "bench_synth"
    assert "ours / lenstronomy" in (out / "summary.txt").read_text()


GUARD = """
import sys

class _NotOnTheGpuHost:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("textual", "paramiko"):
            raise ImportError(f"{name} is not installed on the GPU host")
        return None

sys.meta_path.insert(0, _NotOnTheGpuHost())
"""


@pytest.mark.slow
def test_gpu_check_rehearses_on_cpu_without_textual_or_paramiko(tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    env = _env()
    env.update(PYTHONPATH=str(guard), PYTHON=sys.executable, OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path))
    for module in ("textual", "paramiko"):
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "not installed on the GPU host" in probe.stderr, "the guard is live"

    done = subprocess.run(["bash", "bench/gpu.sh", "--cpu-smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    summary = json.loads((out / "gpu-check.json").read_text())
    assert summary["ok"] and set(summary["steps"]) == {"env", "synth", "cache", "train_A1", "bench_train"}
    blocked = summary["env"]["blocked_modules"]
    assert blocked["textual"] is False and blocked["paramiko"] is False, "the script ran without them"
    a1 = summary["a1"]
    assert a1["status"] == "done" and a1["epochs_done"] == 1 and a1["test_auroc"] is not None
    assert a1["phases"]["epochs"] is not None and a1["phases"]["test"] is not None
    assert summary["projected_full_run_s"] > 0
    assert len(summary["goals"]) == 7 and "Issue 8's GPU goals" in (out / "gpu-check.txt").read_text()
    assert "projected full-data 50-epoch run" in (out / "gpu-check.txt").read_text()
    assert (out / "A1" / "metrics.json").exists() and (out / "gpu-samples.csv").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("gpu-check.")]
    assert leftovers == [], "the script removed its work folder"
