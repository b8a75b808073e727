"""Screenshots of the main screen, the detail screen and the decision panel, compared as SVG.

The runs are fixture run directories (fixed metrics.json and run.json) read by the real
`engine.protocol.status.run_status`, served by `DirFleet`: a Fleet whose hosts' status answers are
fixed apart from those runs (fixed time, fixed GPU, no disconnection clocks). Only ended
runs are used, so no liveness check of a pid can differ between machines. Regenerate with
`pytest tests/test_snapshots.py --snapshot-update` and look at the SVGs before committing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine import files

from engine.protocol import rundir
from engine.protocol.rundir import run_directories
from engine.protocol.status import run_status
from lenstui.app import LensTUI, make_app
from lenstui.fleet import HostSnapshot
from lenstui.screens.decision import DecisionScreen
from lenstui.screens.detail import DetailScreen
from lenstui.screens.launch import LaunchScreen

from sshd import write_config

SIZE = (120, 34)
NARROW = (80, 24)    # the smallest terminal lenstui promises to work in: every panel reachable
FIXED_TIME = 1_790_000_000.0
LOG = "".join(f"epoch {e + 1}/4: train_loss {0.69 - 0.05 * e:.3f} val_auroc {0.70 + 0.05 * e:.3f}\n" for e in range(4))
LOG += "B1: done: best val AUROC 0.850 at epoch 4\n"
GPU = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization": 0, "memory_used_mib": 512,
       "memory_total_mib": 81559, "temperature_c": 31, "power_w": 70, "processes": []}


class DirFleet:
    """The Fleet interface over run directories on this machine, with fixed host facts."""

    def __init__(self, runs_roots: dict[str, Path], gpus: dict[str, list[dict[str, Any]]]) -> None:
        self.runs_roots = runs_roots
        self.gpus = gpus

    def hosts(self) -> list[str]:
        return list(self.runs_roots)

    def poll(self, host: str) -> HostSnapshot:
        runs = {d.name: run_status(d) for d in run_directories(self.runs_roots[host])}
        status = {"engine_version": "test", "host": host, "time": FIXED_TIME, "runs_root": "/srv/runs",
                  "runs_root_exists": True, "gpus": self.gpus.get(host, []), "gpu_source": "nvml",
                  "gpu_note": None, "runs": runs}
        return HostSnapshot(host, True, True, None, None, status)

    def logs(self, exp_id: str, host: str, tail_bytes: int = 20000) -> str:
        return LOG[-tail_bytes:]

    def close(self) -> None:
        pass


def history_row(e: int, auroc: float) -> dict[str, Any]:
    """The row of the (e+1)-th epoch: epochs count from 1."""
    return {"epoch": e + 1, "train_loss": round(0.69 - 0.05 * e, 4), "val_auroc": auroc,
            "val_loss": round(0.70 - 0.04 * e, 4), "learning_rate": 1e-4, "epoch_time_sec": 12.5}


def gate(after: int, core: float, radial: float) -> dict[str, Any]:
    bins = [{"bin": [0.5, 0.75], "auroc": 0.71, "count": 80, "note": None},
            {"bin": [0.75, 1.0], "auroc": 0.78, "count": 64, "note": None},
            {"bin": [1.0, 1.5], "auroc": None, "count": 12, "note": "fewer than 50 positives"}]
    return {"after_epochs": after, "core_lr_auc": core, "radial_lr_auc": radial, "gate_n_samples": 2000,
            "val_auroc_by_thetae": bins}


def write_run(root: Path, exp_id: str, host: str, status: str, aurocs: list[float],
              gates: list[dict[str, Any]], **summary: Any) -> None:
    """A finished run directory: metrics.json and run.json with fixed times and a dead pid."""
    d = root / exp_id
    d.mkdir(parents=True)
    m = rundir.new_metrics(exp_id, 4, {"epochs": 4})
    m.update(status=status, history=[history_row(e, a) for e, a in enumerate(aurocs)], gates=gates,
             updated_at="2026-09-21T10:00:00+0000", **summary)
    files.atomic_write_json(d / rundir.METRICS_FILE, m)
    files.atomic_write_json(d / rundir.RUN_FILE, {
        "experiment": exp_id, "host": host, "pid": 4242, "pgid": 4242, "pid_start_ticks": 1,
        "command": ["python", "-m", "engine.train", "--experiment", exp_id, "--host", host, "--epochs", "4"],
        "engine_version": "test",
        "code_version": "abc123", "dataset": "lab", "device": "cuda:0", "overrides": {"epochs": 4},
        "started_at": "2026-09-21T09:00:00+0000", "ended_at": "2026-09-21T10:00:00+0000",
        "exit_status": 0 if status == "done" else 143, "status": status})


def fixture_app(tmp_path: Path) -> LensTUI:
    """Hosts local (CPU) and gpu1 (one idle H100): A1 and B1 done on gpu1, B2 aborted on local."""
    hosts = ['[hosts.local]\ntransport = "local"\nwork_dir = "/srv/lenstui"\npython = "python3"\n'
             'runs_root = "/srv/runs"\ndataset = "lab"\n',
             '[hosts.gpu1]\ntransport = "ssh"\nssh_host = "gpu1"\nwork_dir = "/srv/lenstui"\n'
             'python = "python3"\nruns_root = "/srv/runs"\ndataset = "lab"\n']
    config = write_config(tmp_path / "experiments.toml", hosts)
    roots = {"local": tmp_path / "local-runs", "gpu1": tmp_path / "gpu1-runs"}
    verdicts = {"core_lr_auc": {"verdict": "FAIL", "value": 0.70, "rule": "PASS < 0.60"},
                "radial_lr_auc": {"verdict": "PASS", "value": 0.50, "rule": "PASS < 0.55"},
                "core_reliance": {"verdict": "PASS", "value": 0.02, "rule": "PASS < 0.03"}}
    summary = {"best_val_auroc": 0.85, "best_epoch": 4, "final_core_lr_auc": 0.70, "final_radial_lr_auc": 0.50,
               "core_reliance": 0.02, "verdicts": verdicts,
               "final_val_auroc_by_thetae": [{"bin": [0.5, 0.75], "auroc": 0.83, "count": 80, "note": None},
                                             {"bin": [0.75, 1.0], "auroc": 0.86, "count": 64, "note": None},
                                             {"bin": [1.0, 1.5], "auroc": None, "count": 12, "note": "too few"}],
               "core_sensitivity": [{"radius": 3, "auroc": 0.84}, {"radius": 5, "auroc": 0.83}]}
    write_run(roots["gpu1"], "A1", "gpu1", "done", [0.72, 0.78, 0.82, 0.85],
              [gate(0, 0.66, 0.51), gate(4, 0.70, 0.50)], **summary)
    write_run(roots["gpu1"], "B1", "gpu1", "done", [0.70, 0.76, 0.81, 0.85],
              [gate(0, 0.68, 0.52), gate(4, 0.70, 0.50)], **summary)
    write_run(roots["local"], "B2", "local", "aborted", [0.66, 0.71], [gate(0, 0.58, 0.50)])
    fleet = DirFleet(roots, {"gpu1": [GPU]})
    # A poll every hour: the screenshot shows the first poll, never a half-redrawn second one.
    return make_app(config, fleet=fleet, refresh_s=3600)


async def charts_drawn(pilot) -> None:
    """Wait until every chart on the screen has loaded Plotext and drawn (widgets/plots.py)."""
    from lenstui.widgets.plots import Chart

    deadline = time.monotonic() + 20
    while not all(chart.ready for chart in pilot.app.screen.query(Chart)):
        assert time.monotonic() < deadline, "a chart was never drawn"
        await pilot.pause(0.05)
    await pilot.pause()


async def polled(pilot) -> None:
    """Wait until every host has answered, then let the layout settle."""
    app = pilot.app
    deadline = time.monotonic() + 10
    while set(app.snapshots) != {"local", "gpu1"}:
        assert time.monotonic() < deadline, "the fixture fleet did not answer"
        await pilot.pause(0.05)
    await pilot.pause()
    await pilot.pause()   # the second host's answer re-lays the hosts panel out


def test_main_screen(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        await polled(pilot)
        pilot.app.matrix.select("B1")  # the selected run's table and curves show B1
        await charts_drawn(pilot)

    assert snap_compare(fixture_app(tmp_path), terminal_size=SIZE, run_before=run_before)


def test_detail_screen(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        await polled(pilot)
        pilot.app.matrix.select("B1")
        await pilot.press("enter")
        screen = pilot.app.screen
        assert isinstance(screen, DetailScreen)
        deadline = time.monotonic() + 10
        while not screen.log_text.endswith("at epoch 4\n"):
            assert time.monotonic() < deadline, "the log did not arrive"
            await pilot.pause(0.05)
        await charts_drawn(pilot)

    assert snap_compare(fixture_app(tmp_path), terminal_size=SIZE, run_before=run_before)


def test_decision_panel(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        await polled(pilot)
        await pilot.press("d")
        assert isinstance(pilot.app.screen, DecisionScreen)
        await pilot.pause()

    assert snap_compare(fixture_app(tmp_path), terminal_size=SIZE, run_before=run_before)


# -- 80×24: every panel there, nothing cut ----------------------------------------------------


def test_main_screen_80x24(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        await polled(pilot)
        pilot.app.matrix.select("B2")
        await pilot.pause()

    assert snap_compare(fixture_app(tmp_path), terminal_size=NARROW, run_before=run_before)


def test_launch_dialog_80x24(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        await polled(pilot)
        pilot.app.matrix.select("B2")          # aborted on local: a relaunch, pre-filled
        await pilot.press("l")
        assert isinstance(pilot.app.screen, LaunchScreen)
        await pilot.pause()

    assert snap_compare(fixture_app(tmp_path), terminal_size=NARROW, run_before=run_before)


def test_detail_screen_80x24(snap_compare, tmp_path):
    async def run_before(pilot) -> None:
        await polled(pilot)
        pilot.app.matrix.select("B1")
        await pilot.press("enter")
        screen = pilot.app.screen
        assert isinstance(screen, DetailScreen)
        deadline = time.monotonic() + 10
        while not screen.log_text.endswith("at epoch 4\n"):
            assert time.monotonic() < deadline, "the log did not arrive"
            await pilot.pause(0.05)
        await charts_drawn(pilot)
        await pilot.press("pagedown")           # down the page: the end-of-training θ_E table
        await pilot.pause()

    assert snap_compare(fixture_app(tmp_path), terminal_size=NARROW, run_before=run_before)
