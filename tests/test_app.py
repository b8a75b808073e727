"""The control center under `App.run_test()`: every binding, driven by key presses.

Most stories use `FakeFleet`, an in-memory fleet with the real `Fleet` interface
whose runs the test moves forward by hand (epochs, gates, ends), so each
assertion is about what the user sees. `test_real_launch_on_local` launches A1
for real on the `local` host and waits for an epoch to arrive in the table.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Select

from engine.numbers import DASH
from lenstui import cells
from lenstui.app import LensTUI, make_app
from engine.config import load_config
from lenstui.fleet import Fleet, FleetError, HostSnapshot
from lenstui.screens.confirm import ConfirmScreen
from lenstui.screens.cutouts import CutoutScreen
from lenstui.screens.decision import DecisionScreen
from lenstui.screens.detail import DetailScreen
from lenstui.screens.help import HelpScreen
from lenstui.screens.launch import LaunchScreen
from lenstui.widgets.cutout import CutoutImage
from lenstui.widgets.hosts import HostsPanel
from lenstui.widgets.matrix import ExperimentMatrix
from lenstui.widgets.metrics_table import MetricsTable

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "experiments.toml"

@dataclass
class Result:
    message: str


class FakeFleet:
    """The Fleet interface over in-memory hosts; tests edit `runs[host][exp]` to move runs on."""

    def __init__(self, hosts: list[str], gpus: dict[str, list[dict]] | None = None) -> None:
        self.runs: dict[str, dict[str, dict[str, Any]]] = {h: {} for h in hosts}
        self.gpus = gpus or {}
        self.down: dict[str, float] = {}            # host -> since when it is unreachable
        self.block: dict[str, threading.Event] = {}  # host -> poll waits on this event
        self.polls: dict[str, int] = {h: 0 for h in hosts}
        self.launches: list[tuple] = []
        self.aborts: list[tuple] = []
        self.syncs: list[str] = []
        self.log_text = "epoch 0 starting\n"
        self.fail_launch: str | None = None
        self.cutout_requests: list[tuple] = []
        self.real: Any = None

    def hosts(self) -> list[str]:
        return list(self.runs)

    def poll(self, host: str) -> HostSnapshot:
        self.polls[host] += 1
        if host in self.block:
            self.block[host].wait(30)
        if host in self.down:
            return HostSnapshot(host, False, True, self.down[host], "connection refused", None)
        status = {"engine_version": "test", "host": host, "time": time.time(),
                  "gpus": self.gpus.get(host, []), "gpu_source": "none", "gpu_note": "no GPU",
                  "runs": {e: dict(r) for e, r in self.runs[host].items()}}
        return HostSnapshot(host, True, True, None, None, status)

    def launch(self, exp_id, host, gpu="auto", base=None, extra_args=()):
        self.launches.append((exp_id, host, gpu, base, tuple(extra_args)))
        if self.fail_launch:
            raise FleetError(self.fail_launch)
        self.runs[host][exp_id] = {"state": "running", "epochs_planned": 50, "history": [],
                                   "gates": [], "verdicts": {}, "pid": 4242, "pgid": 4242, "gpu": None}
        return Result(f"pid 4242, GPU {gpu}")

    def abort(self, exp_id, host, grace=30):
        self.aborts.append((exp_id, host, grace))
        self.runs[host][exp_id]["state"] = "aborted"
        return Result("SIGTERM sent; stopped after 1.0 s")

    def logs(self, exp_id, host, tail_bytes=20000):
        return self.log_text[-tail_bytes:]

    def sync(self, host):
        self.syncs.append(host)
        return Result("engine synced, code version abc123")

    def cutouts(self, exp_id, host, factor=1):
        self.cutout_requests.append((exp_id, host, factor))
        if self.real is not None:   # a real Fleet for the host, where a test has real data
            return self.real.cutouts(exp_id, host, factor=factor)
        raise FleetError(f"cutouts on {host} failed: {host}: dataset root not found")

    def close(self) -> None:
        pass


def epoch(e: int, auroc: float) -> dict[str, Any]:
    """The history row after e+1 epochs (rows count epochs from 1)."""
    return {"epoch": e + 1, "train_loss": 0.69 - 0.01 * e, "val_auroc": auroc, "val_loss": 0.7 - 0.01 * e,
            "learning_rate": 1e-4, "epoch_time_sec": 12.5}


def gate(after: int, core: float, radial: float) -> dict[str, Any]:
    bins = [{"bin": [0.5, 0.75], "auroc": 0.71, "count": 80, "note": None},
            {"bin": [0.75, 1.0], "auroc": None, "count": 12, "note": "fewer than 50 positives"}]
    return {"after_epochs": after, "core_lr_auc": core, "radial_lr_auc": radial,
            "gate_n_samples": 2000, "val_auroc_by_thetae": bins}


def with_lambda_enabled(tmp_path: Path) -> Path:
    """The shipped plan with host `lambda` enabled (the fake fleet answers for it)."""
    text = PLAN.read_text()
    assert "[hosts.lambda]\nenabled = false" in text
    config = tmp_path / "experiments.toml"
    config.write_text(text.replace("[hosts.lambda]\nenabled = false", "[hosts.lambda]\nenabled = true"))
    return config


def app_with(fleet: FakeFleet, config: Path = PLAN, **kwargs) -> LensTUI:
    return make_app(config, fleet=fleet, refresh_s=kwargs.pop("refresh_s", 0.1), **kwargs)


def record_notes(app: LensTUI) -> list[tuple[str, str]]:
    """Capture (severity, message) of every notification the app raises."""
    notes: list[tuple[str, str]] = []
    real = app.notify

    def notify(message, *, title="", severity="information", **kw):
        notes.append((severity, f"{title}: {message}"))
        return real(message, title=title, severity=severity, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return notes


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    """Let the app run until `condition()` holds (polls arrive from threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def cell(app: LensTUI, exp_id: str, column: str) -> str:
    """A matrix cell's text (the configuration cells too, which 80 columns do not show)."""
    value = app.matrix.cells(exp_id).get(column) if column not in app.matrix.column_keys \
        else app.matrix.get_cell(exp_id, column)
    return getattr(value, "plain", str(value))


# ---------------------------------------------------------------------------
# Main screen


async def test_main_screen_shows_plan_hosts_and_no_gpu():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        assert app.matrix.shown_ids == ["A1", "B1", "B2", "B3", "B4", "FULL"]
        assert cell(app, "A1", "mode") == "paired" and cell(app, "B1", "mode") == "unpaired"
        assert cell(app, "B2", "mask") == "R=5 p=0.5"
        assert cell(app, "B3", "mask") == "sched 7/5/3"
        assert cell(app, "FULL", "mask") == "from B1"
        assert cell(app, "A1", "status") == "not run"
        hosts = app.query_one(HostsPanel).text
        assert "local  connected" in hosts and "no GPU (CPU)" in hosts
        for name in ("lambda", "lambda2", "lambda3"):
            assert f"{name}  not configured" in hosts
        assert fleet.polls.get("lambda") is None, "a disabled host is never contacted"


async def test_gpu_lines_and_disconnected_host(tmp_path):
    config = with_lambda_enabled(tmp_path)
    gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization": 97, "memory_used_mib": 20480,
           "memory_total_mib": 81559, "temperature_c": 64, "power_w": 300, "processes": []}
    fleet = FakeFleet(["local", "lambda"], gpus={"lambda": [gpu]})
    fleet.runs["lambda"]["B1"] = {"state": "running", "epochs_planned": 50, "history": [epoch(0, 0.8)],
                                  "gpu": "0", "gates": [], "verdicts": {}}
    app = app_with(fleet, config, host="lambda")
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: "lambda" in app.snapshots)
        text = app.query_one(HostsPanel).text
        assert "GPU0 H100   97%" in text and "97%" in text and "20.0/80G" in text
        assert "64°C" in text and "B1" in text
        assert cell(app, "B1", "host") == "lambda" and cell(app, "B1", "epoch") == "1/50"
        app.matrix.select("B2")
        await pilot.press("l")
        assert app.screen.query_one("#host", Select).value == "lambda", "make_app(host=...) preselects"
        app.screen.query_one("#gpu", Select).value = "0"
        await pilot.press("enter")
        assert "B2 on lambda (GPU 0)" in app.screen.text
        await pilot.press("y")
        await wait_for(pilot, lambda: fleet.launches)
        assert fleet.launches == [("B2", "lambda", "0", None, ())]
        fleet.down["lambda"] = time.time() - 125
        await wait_for(pilot, lambda: "disconnected since" in app.query_one(HostsPanel).text)
        assert "(2m)" in app.query_one(HostsPanel).text
        assert "connection refused" in app.query_one(HostsPanel).text


async def test_slow_host_never_freezes_the_screen(tmp_path):
    config = with_lambda_enabled(tmp_path)
    fleet = FakeFleet(["local", "lambda"])
    fleet.block["lambda"] = threading.Event()
    app = app_with(fleet, config)
    try:
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: fleet.polls["local"] >= 5)
            assert fleet.polls["lambda"] == 1, "one poll in flight per host, never a pile"
            assert "lambda  connecting…" in app.query_one(HostsPanel).text
            await pilot.press("slash", "B", "2", "enter")  # the keyboard still answers
            assert app.matrix.shown_ids == ["B2"]
            fleet.block["lambda"].set()
            await wait_for(pilot, lambda: "lambda  connected" in app.query_one(HostsPanel).text)
    finally:
        fleet.block["lambda"].set()


# ---------------------------------------------------------------------------
# Launch and abort


async def test_launch_with_confirm_then_epochs_arrive_live():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        await pilot.press("l")
        assert isinstance(app.screen, LaunchScreen)
        assert app.screen.query_one("#host", Select).value == "local"
        await pilot.press("enter")                       # Continue (focused)
        assert isinstance(app.screen, ConfirmScreen)
        words = app.screen.text
        assert "A1 on local (GPU auto)" in words and "paired, residual" in words
        assert "dataset synthetic-demo" in words
        await pilot.press("y")
        await wait_for(pilot, lambda: cell(app, "A1", "status") == "running")
        assert fleet.launches == [("A1", "local", "auto", None, ())]
        assert any("A1 launched on local" in n for _, n in notes)
        assert cell(app, "A1", "epoch") == "0/50"
        fleet.runs["local"]["A1"]["history"] = [epoch(0, 0.712)]
        await wait_for(pilot, lambda: cell(app, "A1", "epoch") == "1/50")
        assert cell(app, "A1", "val") == "0.712"
        assert app.query_one(MetricsTable).row_texts[0]["val_auroc"] == "0.7120"
        fleet.runs["local"]["A1"]["history"].append(epoch(1, 0.801))
        await wait_for(pilot, lambda: cell(app, "A1", "val") == "0.801")
        assert cell(app, "A1", "best") == "0.801"
        assert len(app.query_one(MetricsTable).row_texts) == 2


async def test_launch_cancel_at_either_step_launches_nothing():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        await pilot.press("l", "escape")
        assert not isinstance(app.screen, LaunchScreen)
        await pilot.press("l", "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, (ConfirmScreen, LaunchScreen))
        assert fleet.launches == []


async def test_launch_with_extra_args_and_gpu_choice_and_failure(tmp_path):
    fleet = FakeFleet(["local"])
    fleet.fail_launch = "B2 is already running on local (pid 77); abort it first"
    app = app_with(fleet, train_args=("--epochs", "2"))
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        app.matrix.select("B2")
        await pilot.press("l")
        extra = app.screen.query_one("#extra", Input)
        assert extra.value == "--epochs 2"
        extra.value = "--epochs 2 --limit-train 64"
        await pilot.press("enter")   # focus is on the arguments: enter continues
        assert "arguments: --epochs 2 --limit-train 64" in app.screen.text
        await pilot.press("y")
        await wait_for(pilot, lambda: any(s == "error" for s, _ in notes))
        assert fleet.launches == [("B2", "local", "auto", None, ("--epochs", "2", "--limit-train", "64"))]
        assert any("already running on local" in n for s, n in notes if s == "error")


async def test_relaunch_says_what_the_engine_will_do():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "done", "history": [epoch(0, 0.9)]}
    fleet.runs["local"]["B2"] = {"state": "aborted", "history": [epoch(0, 0.9)], "resumable": True}
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B2", "status") == "aborted")
        app.matrix.select("B1")
        await pilot.press("l")
        dialog = app.screen
        assert "B1 is already done on local: the engine refuses unless --fresh" in dialog.text
        assert dialog.query_one("#next").disabled, "a launch the engine refuses is not offered"
        await pilot.press("enter")
        assert app.screen is dialog, "enter does not go on to a refused launch"
        dialog.query_one("#extra", Input).value = "--fresh"
        await pilot.pause()
        assert not dialog.query_one("#next").disabled
        await pilot.press("escape")
        app.matrix.select("B2")
        await pilot.press("l", "enter")
        assert "B2 aborted on local: it resumes from last.pt" in app.screen.text


async def test_full_run_asks_for_its_base():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        app.matrix.select("FULL")
        await pilot.press("l")
        base = app.screen.query_one("#base", Select)
        assert base.value == "B1"
        base.value = "B3"
        await pilot.press("enter")
        assert "FULL on local (GPU auto): unpaired, residual, masking sched 7/5/3" in app.screen.text
        await pilot.press("y")
        await wait_for(pilot, lambda: fleet.launches)
        assert fleet.launches == [("FULL", "local", "auto", "B3", ())]


async def test_abort_confirms_run_host_epoch():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "running", "epochs_planned": 50, "pgid": 999,
                                 "history": [epoch(0, 0.7), epoch(1, 0.75), epoch(2, 0.8)]}
    app = app_with(fleet)
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "running")
        app.matrix.select("A1")
        await pilot.press("a")                       # A1 is not running: nothing to abort
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("nothing to abort" in n for _, n in notes)
        app.matrix.select("B1")
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        words = app.screen.text
        assert "Run: B1" in words and "Host: local" in words and "Epoch: 3/50" in words
        await pilot.press("n")
        assert fleet.aborts == []
        await pilot.press("a", "y")
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "aborted")
        assert fleet.aborts == [("B1", "local", 30)]


# ---------------------------------------------------------------------------
# Filter, detail, palette, help, decision, quit


async def test_filter_and_escape():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B3"] = {"state": "failed", "history": [epoch(0, 0.6)], "epochs_planned": 50}
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B3", "status") == "failed")
        await pilot.press("slash")
        assert app.focused is app.query_one("#filter", Input)
        await pilot.press(*"R=")
        assert app.matrix.shown_ids == ["B2", "B4"]
        await pilot.press("backspace", "backspace", *"unpaired")
        assert app.matrix.shown_ids == ["B1", "B2", "B3", "B4", "FULL"], "FULL takes B1's data mode"
        await pilot.press(*" failed")
        assert app.matrix.shown_ids == ["B3"]
        await pilot.press("enter")
        assert app.focused is app.matrix
        await pilot.press("escape")
        assert app.matrix.shown_ids == ["A1", "B1", "B2", "B3", "B4", "FULL"]
        assert not app.query_one("#filter").display


async def test_detail_shows_epochs_bins_gates_log_and_back():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B2"] = {
        "state": "running", "epochs_planned": 50, "history": [epoch(0, 0.7), epoch(1, 0.76)],
        "gates": [gate(0, 0.70, 0.50)], "verdicts": {}, "errors": []}
    fleet.log_text = "".join(f"line {i}\n" for i in range(500))
    app = app_with(fleet)
    async with app.run_test(size=(100, 50)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B2", "status") == "running")
        app.matrix.select("B2")
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        detail = app.screen
        await wait_for(pilot, lambda: "line 499" in detail.log_text)
        assert len(detail.query_one(MetricsTable).row_texts) == 2
        analysis = str(detail.query_one("#analysis").render())
        assert "[0.50,0.75)" in analysis and "0.710" in analysis and "n=80" in analysis
        assert "n=12, too few for an AUROC" in analysis
        assert "0.700 FAIL" in analysis and "0.500 PASS" in analysis  # core FAIL, radial PASS
        fleet.runs["local"]["B2"]["history"].append(epoch(2, 0.81))
        fleet.log_text += "epoch 2 done\n"
        await wait_for(pilot, lambda: len(detail.query_one(MetricsTable).row_texts) == 3)
        await wait_for(pilot, lambda: detail.log_text.endswith("epoch 2 done\n"))
        assert [line for line in detail.query_one("#log").lines if line][-2:] == ["line 499", "epoch 2 done"]
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_detail_shows_a_variants_masked_gate_beside_the_unmasked_one_and_the_held_out_test():
    from engine.config import load_config
    from engine.results.verdicts import compute_verdicts

    b3 = {"state": "done", "epochs_planned": 50, "history": [epoch(0, 0.90), epoch(1, 0.93)], "best_epoch": 1,
          "best_val_auroc": 0.93, "gates": [gate(50, 0.71, 0.50)], "errors": [],
          "inputs": {"preprocessing": "residual"}, "final_gate_n_samples": 10000,
          "final_core_lr_auc": 0.71, "final_core_lr_auc_ungrouped": 0.83, "final_radial_lr_auc": 0.50,
          "final_radial_lr_auc_ungrouped": 0.61, "final_radial_feature_max_abs": 1.2e-4, "final_mask_radius": 7,
          "final_masked_core_lr_auc": 0.55, "final_masked_core_lr_auc_ungrouped": 0.66,
          "final_raw_robust_core_lr_auc": 0.86, "final_raw_robust_radial_lr_auc": 0.93, "core_reliance": 0.01,
          "final_val_auroc_by_thetae": [{"bin": [0.5, 0.75], "auroc": 0.88, "count": 300, "note": None}],
          "test_auroc": 0.80, "test_auroc_by_thetae": [{"bin": [0.5, 0.75], "auroc": 0.6, "count": 300, "note": None}]}
    config = load_config(PLAN)
    b3["verdicts"] = compute_verdicts(b3, config.thresholds, config.targets)
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B3"] = b3
    app = app_with(fleet)
    async with app.run_test(size=(140, 60)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B3", "status") == "done")
        app.matrix.select("B3")
        await pilot.press("enter")
        detail = app.screen
        analysis = str(detail.query_one("#analysis").render())
        assert "Val AUROC by θ_E (end of training, best.pt)" in analysis and "0.880" in analysis
        assert "0.550 PASS masked R=7" in analysis
        assert "unmasked (the data's shortcut) 0.710" in analysis
        assert "ungrouped (published method, leaks LRG identity) 0.660" in analysis
        assert "raw_robust inputs 0.930" in analysis
        assert "cannot fail on residual inputs" in analysis
        assert "Test AUROC 0.800 (held out, not used for selection)" in analysis


async def test_an_experiment_run_on_two_hosts_shows_plus_one_and_h_switches_the_detail(tmp_path):
    fleet = FakeFleet(["local", "lambda"])
    fleet.runs["local"]["A1"] = {"state": "done", "epochs_planned": 2, "history": [epoch(0, 0.70), epoch(1, 0.74)],
                                 "gates": [], "verdicts": {}, "errors": []}
    fleet.runs["lambda"]["A1"] = {"state": "running", "epochs_planned": 50, "history": [epoch(0, 0.81)],
                                  "gates": [], "verdicts": {}, "errors": []}
    logs = {"local": "local run log\n", "lambda": "lambda run log\n"}
    fleet.logs = lambda exp_id, host, tail_bytes=20000: logs[host]
    app = app_with(fleet, with_lambda_enabled(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        # The live run is the one shown; the other host's run is counted, not hidden.
        await wait_for(pilot, lambda: cell(app, "A1", "host") == "lambda +1")
        assert cell(app, "A1", "status") == "running"
        assert cell(app, "B1", "host") == DASH
        app.matrix.select("A1")
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, DetailScreen) and detail.host == "lambda"
        await wait_for(pilot, lambda: detail.log_text == "lambda run log\n")
        await pilot.press("h")
        assert detail.host == "local"
        await wait_for(pilot, lambda: detail.log_text == "local run log\n")
        await wait_for(pilot, lambda: len(detail.query_one(MetricsTable).row_texts) == 2)
        assert "A1 on local" in str(detail.query_one("#detail-title").render())
        await pilot.press("h")
        assert detail.host == "lambda"
        await wait_for(pilot, lambda: len(detail.query_one(MetricsTable).row_texts) == 1)


async def test_main_screen_keys_do_nothing_on_other_screens():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "running", "history": [epoch(0, 0.7)]}
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "running")
        app.matrix.select("B1")
        await pilot.press("enter", "slash", "l", "d")
        assert isinstance(app.screen, DetailScreen) and len(app.screen_stack) == 2
        await pilot.press("a")                      # the detail view's own abort: this run
        assert isinstance(app.screen, ConfirmScreen) and "Host: local" in app.screen.text
        await pilot.press("q", "question_mark", "l")  # a dialog is answered first
        assert isinstance(app.screen, ConfirmScreen) and len(app.screen_stack) == 3
        await pilot.press("n", "escape")
        assert len(app.screen_stack) == 1 and fleet.aborts == [] and fleet.launches == []


async def test_detail_of_a_run_never_launched_says_so():
    app = app_with(FakeFleet(["local"]))
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        await pilot.press("enter")
        assert not isinstance(app.screen, DetailScreen)
        assert any("has not run on any host yet" in n for _, n in notes)


async def test_palette_runs_actions_and_help_opens():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        await pilot.press("ctrl+p")
        await pilot.press(*"Help")
        await wait_for(pilot, lambda: "Help" in str(app.screen.query("OptionList").first().get_option_at_index(0).prompt)
                       if app.screen.query("OptionList") else False)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.press(*"Launch: B4")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        assert app.screen.exp_id == "B4"
        await pilot.press("escape", "ctrl+p", *"Filter experiments")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.focused is app.query_one("#filter", Input))


async def test_question_mark_opens_help():
    app = app_with(FakeFleet(["local"]))
    async with app.run_test() as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_sync_without_remote_hosts_says_why():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await pilot.press("s")
        assert any("No enabled remote host to sync" in n for _, n in notes)
        assert fleet.syncs == []


async def test_sync_pushes_to_every_enabled_remote_host(tmp_path):
    fleet = FakeFleet(["local", "lambda"])
    app = app_with(fleet, with_lambda_enabled(tmp_path))
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: any(n.startswith("Synced") for _, n in notes))
        assert fleet.syncs == ["lambda"]
        assert ("information", "Synced: lambda: engine synced, code version abc123") in notes


async def test_report_writes_results_beside_the_config(tmp_path):
    config = tmp_path / "experiments.toml"
    config.write_text(PLAN.read_text())
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "done", "epochs_planned": 2, "history": [epoch(0, 0.8), epoch(1, 0.9)],
                                 "best_val_auroc": 0.9, "final_core_lr_auc": 0.58, "final_radial_lr_auc": 0.5,
                                 "core_reliance": 0.01, "gates": [gate(0, 0.58, 0.5)], "overrides": {"epochs": 2}}
    app = app_with(fleet, config)
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "done")
        await pilot.press("r")
        await wait_for(pilot, lambda: any(n.startswith(("Report:", "Report failed")) and "wrote" in n
                                          or "failed" in n for _, n in notes if n.startswith("Report")),
                       timeout=60)
    results = (tmp_path / "planb" / "EXPERIMENT_RESULTS.md").read_text()
    assert "B1" in results and "NOT the plan's settings" in results
    assert (tmp_path / "planb" / "experiment_metrics.csv").read_text().count("\n") >= 2
    assert any(s == "information" and "decision:" in n for s, n in notes)


async def test_notifications_on_end_fail_and_gate_fail():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["A1"] = {"state": "running", "history": [epoch(0, 0.9)], "gates": [gate(0, 0.5, 0.5)]}
    fleet.runs["local"]["B1"] = {"state": "running", "history": [], "gates": []}
    app = app_with(fleet)
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "A1", "status") == "running")
        assert notes == [], "what was already so at start-up is not news"
        fleet.runs["local"]["B1"]["gates"] = [gate(0, 0.71, 0.52)]
        await wait_for(pilot, lambda: any("Gate FAIL" in n for _, n in notes))
        assert any("B1 on local: gate after 0 epochs FAIL: core_lr_auc 0.710" in n for _, n in notes)
        fleet.runs["local"]["A1"].update(state="done", best_val_auroc=0.93)
        fleet.runs["local"]["B1"]["state"] = "failed"
        await wait_for(pilot, lambda: len(notes) >= 3)
        assert ("information", "Run done: A1 on local finished: best val AUROC 0.930") in notes
        assert any(s == "error" and "B1 on local failed" in n for s, n in notes)
        fleet.runs["local"]["B2"] = {"state": "running", "history": []}
        await wait_for(pilot, lambda: cell(app, "B2", "status") == "running")
        fleet.runs["local"]["B2"].update(state="lost", reason="process 77 is gone")
        await wait_for(pilot, lambda: any("B2 on local is lost: process 77 is gone" in n for _, n in notes))


async def test_quit_with_live_runs_asks_first():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "running", "history": []}
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "running")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        assert "keep going on their hosts: B1 on local" in app.screen.text
        await pilot.press("n")
        assert app.is_running
        await pilot.press("q", "y")
        await pilot.pause(0.2)
    assert app.return_code == 0


async def test_decision_panel_launches_next_phase():
    decision = pytest.importorskip("engine.results.decision")
    fleet = FakeFleet(["local"])
    done = {"state": "done", "epochs_planned": 50, "history": [epoch(0, 0.93)], "best_val_auroc": 0.93,
            "final_core_lr_auc": 0.70, "final_radial_lr_auc": 0.50, "core_reliance": 0.02,
            "gates": [gate(50, 0.70, 0.50)],
            "verdicts": {"core_lr_auc": {"verdict": "FAIL", "value": 0.70, "rule": "PASS < 0.60"},
                         "core_reliance": {"verdict": "PASS", "value": 0.02, "rule": "PASS < 0.03"}}}
    fleet.runs["local"]["A1"] = dict(done)
    fleet.runs["local"]["B1"] = dict(done)
    app = app_with(fleet)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "done")
        expected = decision.decide(app.results(), app.config)
        await pilot.press("d")
        assert isinstance(app.screen, DecisionScreen)
        assert expected.title in app.screen.text
        assert "Read: validation numbers only" in app.screen.text
        assert expected.next_experiments, "B1 core AUC > 0.65 with low reliance: test the masking variants"
        for i, exp_id in enumerate(expected.next_experiments):   # the launch dialog for each, in turn
            await pilot.press("l" if i == 0 else "enter")
            assert isinstance(app.screen, LaunchScreen) and app.screen.exp_id == exp_id
            assert f"Launch {exp_id} ({i + 1} of {len(expected.next_experiments)})" in app.screen.text
            assert "Proposed by the decision panel" in app.screen.text
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen)
        for exp_id in expected.next_experiments:
            assert f"{exp_id} on local" in app.screen.text
        await pilot.press("y")
        await wait_for(pilot, lambda: len(fleet.launches) == len(expected.next_experiments))
        assert [l[0] for l in fleet.launches] == list(expected.next_experiments)


async def test_cutouts_of_a_remote_run_are_asked_of_its_host_and_its_refusal_is_shown(tmp_path):
    config = with_lambda_enabled(tmp_path)
    fleet = FakeFleet(["local", "lambda"])
    fleet.runs["lambda"]["B1"] = {"state": "running", "history": [epoch(0, 0.8)]}
    app = app_with(fleet, config)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "running")
        app.matrix.select("B1")
        await pilot.press("enter", "c")
        assert isinstance(app.screen, CutoutScreen)
        await wait_for(pilot, lambda: app.screen.error is not None)
        assert fleet.cutout_requests[0][:2] == ("B1", "lambda"), "the host the run is on reads its data"
        assert app.screen.error == "Cannot load cutouts: cutouts on lambda failed: lambda: dataset root not found"


@pytest.mark.slow
async def test_cutouts_from_the_local_dataset_raw_and_preprocessed(tmp_path):
    config = tiny_plan(tmp_path)
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "running", "history": [epoch(0, 0.8)]}
    fleet.real = Fleet(load_config(config), config)   # engine.data.cutouts runs on the local host's data
    app = app_with(fleet, config)
    async with app.run_test(size=(140, 50)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "running")
        app.matrix.select("B1")
        await pilot.press("enter", "c")
        screen = app.screen
        assert isinstance(screen, CutoutScreen)
        await wait_for(pilot, lambda: screen.panels or screen.error, timeout=60)
        assert screen.error is None
        titles = [title for title, _ in screen.panels]
        assert [t.split()[0] for t in titles] == ["positive", "positive", "negative", "negative"]
        assert all("raw | residual" in t for t in titles) and "θ_E=" in titles[0]
        raw, done = screen.panels[0][1]
        assert len(raw) == len(done) == 32, "63 pixel rows in 32 half-block rows at full size"
        assert raw[16].text == done[16].text == "▀" * 63
        colours = {seg.style.color.triplet for strip in raw for seg in strip}
        assert len(colours) > 20, "an image, not a flat patch"
        await wait_for(pilot, lambda: len(screen.query(CutoutImage)) == 8)
        await pilot.pause()
        assert screen.query(CutoutImage).first().region.size == (63, 32)
        await pilot.press("escape")
        assert isinstance(app.screen, DetailScreen)


async def test_idle_polls_redraw_nothing(monkeypatch):
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["A1"] = {"state": "running", "history": [epoch(0, 0.7)], "gates": [gate(0, 0.5, 0.5)]}
    app = app_with(fleet)
    updates: list[tuple] = []
    real = ExperimentMatrix.update_cell
    monkeypatch.setattr(ExperimentMatrix, "update_cell",
                        lambda self, *a, **k: (updates.append(a), real(self, *a, **k))[1])
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "A1", "status") == "running")
        await pilot.pause(0.2)
        updates.clear()
        polls = fleet.polls["local"]
        await wait_for(pilot, lambda: fleet.polls["local"] >= polls + 5)
        assert updates == [], "nothing changed, so no cell was touched"
        fleet.runs["local"]["A1"]["history"].append(epoch(1, 0.75))
        await wait_for(pilot, lambda: cell(app, "A1", "val") == "0.750")
        assert {u[1] for u in updates} == {"epoch", "val", "best"}


async def test_mouse_click_selects_and_opens_detail():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B2"] = {"state": "running", "history": [epoch(0, 0.7)]}
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B2", "status") == "running")
        await pilot.click("#matrix", offset=(3, 3))     # header, A1, B1, B2: the fourth line
        assert app.matrix.selected_id == "B2"
        await pilot.click("#matrix", offset=(3, 3))     # a second click on the selected row
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert app.screen.exp_id == "B2"


async def test_works_in_80x24_and_large_terminal():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["A1"] = {"state": "running", "history": [epoch(i, 0.7 + i / 100) for i in range(5)],
                                 "epochs_planned": 50}
    for size in ((80, 24), (200, 60)):
        app = app_with(fleet)
        async with app.run_test(size=size) as pilot:
            await wait_for(pilot, lambda: cell(app, "A1", "status") == "running")
            await pilot.pause(0.2)  # let the layout settle on this size
            for selector in ("#experiments", "#hosts", "#selected"):
                region = app.query_one(selector).region
                assert region.height >= 3 and region.width > 0, (size, selector, region)
                assert region.bottom <= size[1] and region.right <= size[0]
            assert app.matrix.region.height >= 7, "all six experiments and the header are visible"
            assert app.matrix.virtual_size.width <= app.matrix.region.width, "every column shown fits"
            if size[0] < 120:
                assert app.matrix.column_keys == [k for k, _ in cells.NARROW_MATRIX_COLUMNS]
                assert "(paired · residual · masking none)" in app.query_one("#selected").border_title
            hosts, experiments = app.query_one("#hosts").region, app.query_one("#experiments").region
            selected, curves = app.query_one("#selected").region, app.query_one("#selected-curves")
            assert hosts.y >= experiments.bottom and selected.y >= experiments.bottom
            if size[0] >= 120:  # wide: the full-width matrix, then the run (with curves) beside the hosts
                assert experiments.width == size[0] and hosts.x >= selected.right
                assert curves.display and curves.region.height >= 6
            else:
                assert hosts.y >= selected.bottom and not curves.display


# ---------------------------------------------------------------------------
# Issue 2: a real launch on the real `local` host, watched from the app


def tiny_plan(tmp_path: Path) -> Path:
    """The real plan with `local` training this tree's engine on a tiny dataset in tmp_path."""
    from data_fixtures import write_tiny_dataset
    from sshd import local_host_toml, write_config

    data = write_tiny_dataset(tmp_path / "data", n_lrgs={"train": 16, "val": 12, "test": 8})
    config = write_config(tmp_path / "experiments.toml", [local_host_toml(tmp_path / "runs")], str(data))
    text = config.read_text()
    for old, new in {"gate_n_samples = 2000": "gate_n_samples = 40", "gate_cv_folds = 5": "gate_cv_folds = 2"}.items():
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    return config


def stop_run(run_dir: Path) -> None:
    """Kill a run this test started if it is still alive (never leave a process behind)."""
    for name in ("run.json", "launch.json"):
        try:
            pgid = json.loads((run_dir / name).read_text()).get("pgid")
        except (OSError, ValueError):
            continue
        if isinstance(pgid, int) and pgid > 1:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
async def test_real_launch_on_local_shows_epochs_live(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: keep the tiny run polite
    config = tiny_plan(tmp_path)
    train_args = ("--epochs", "5", "--device", "cpu")  # long enough to quit while it trains
    first = make_app(config, refresh_s=0.5, train_args=train_args)
    second = make_app(config, refresh_s=0.5)  # a later session: it finds the run by itself
    try:
        async with first.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: "local" in first.snapshots)
            assert "no GPU (CPU)" in first.query_one(HostsPanel).text
            await pilot.press("l", "enter")
            assert "A1 on local (GPU auto)" in first.screen.text
            await pilot.press("y")
            await wait_for(pilot, lambda: cell(first, "A1", "status") == "running", timeout=60)
            await wait_for(pilot, lambda: cell(first, "A1", "epoch") in ("1/5", "2/5", "3/5"), timeout=180)
            assert float(cell(first, "A1", "val")) >= 0.0, "an epoch arrived, with its val AUROC"
            await pilot.press("q")                    # quit while it trains: it keeps going
            assert "keep going on their hosts: A1 on local" in first.screen.text
            await pilot.press("y")
        assert first.return_code == 0
        async with second.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: cell(second, "A1", "status") in ("running", "done"), timeout=30)
            await wait_for(pilot, lambda: cell(second, "A1", "status") == "done", timeout=180)
            assert cell(second, "A1", "epoch") == "5/5"
            verdicts = {f"{a}/{b}" for a in ("PASS", "WARN", "FAIL") for b in ("PASS", "WARN", "FAIL")}
            assert cell(second, "A1", "gates") in verdicts
            await pilot.press("enter")
            detail = second.screen
            assert isinstance(detail, DetailScreen)
            await wait_for(pilot, lambda: "A1: done" in detail.log_text, timeout=20)
            assert len(detail.query_one(MetricsTable).row_texts) == 5
    finally:
        first.fleet.close()
        second.fleet.close()
        stop_run(tmp_path / "runs" / "A1")


# ---------------------------------------------------------------------------
# Issue 15: which run stands for an experiment; launch and relaunch; the way back


def smoke_done(core: float = 0.55, rel: float = 0.01, dataset: str = "synthetic-demo") -> dict[str, Any]:
    """A finished 2-epoch smoke run with the end-of-training values the decision reads."""
    return {"state": "done", "epochs_planned": 2, "history": [epoch(0, 0.80), epoch(1, 0.85)],
            "best_val_auroc": 0.85, "final_core_lr_auc": core, "final_radial_lr_auc": 0.50, "core_reliance": rel,
            "gates": [gate(0, core, 0.50)], "verdicts": {}, "overrides": {"epochs": 2, "limit_train": 256},
            "run": {"dataset": dataset, "command": ["python", "-m", "engine.train", "--experiment", "X",
                                                    "--epochs", "2", "--limit-train", "256"]}}


async def test_done_on_one_host_and_aborted_on_another_the_done_run_stands_everywhere(tmp_path):
    config = tmp_path / "experiments.toml"
    config.write_text(with_lambda_enabled(tmp_path).read_text())
    fleet = FakeFleet(["local", "lambda"])
    fleet.runs["local"]["A1"] = smoke_done()
    fleet.runs["local"]["B1"] = smoke_done(core=0.55, rel=0.01)
    fleet.runs["lambda"]["A1"] = {"state": "aborted", "epochs_planned": 20, "history": [epoch(0, 0.7)],
                                  "overrides": {"epochs": 20}, "resumable": True,
                                  "run": {"dataset": "v5_cosmos_paired", "command": ["python", "-m", "engine.train",
                                                                                      "--epochs", "20"]}}
    app = app_with(fleet, config)
    notes = record_notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: cell(app, "A1", "host") == "local +1")
        assert cell(app, "A1", "status") == "done", "an aborted run never hides a finished one"
        assert "also aborted on lambda (epochs=20)" in app.query_one("#selected").border_title
        await pilot.press("d")
        decision = app.screen
        assert isinstance(decision, DecisionScreen)
        words = decision.text
        assert "A1: done on local, epoch 2/2 (epochs=2, limit_train=256); 1 other run" in words
        assert "B1: done on local" in words
        assert "relaunch" not in words, "A1 is complete: nothing asks for it again"
        assert "The decision read runs shorter than the plan: A1 (epochs=2, limit_train=256 on local)" in words
        assert decision.plan and all(exp != "A1" for exp, *_ in decision.plan)
        await pilot.press("escape", "r")
        await wait_for(pilot, lambda: any(n.startswith("Report:") and "wrote" in n for _, n in notes), timeout=60)
    md = (tmp_path / "planb" / "EXPERIMENT_RESULTS.md").read_text()
    runs = md[md.index("## Runs of each experiment"):]
    assert "| A1 | **yes** | done | local |" in runs and "| aborted | lambda |" in runs
    assert "the runs compared used different datasets" not in md, "only the chosen runs are compared"


async def test_a_host_that_disconnects_keeps_its_running_run_visible_as_last_seen(tmp_path):
    fleet = FakeFleet(["local", "lambda"])
    fleet.runs["local"]["B1"] = smoke_done()
    fleet.runs["lambda"]["B1"] = {"state": "running", "epochs_planned": 20, "overrides": {"epochs": 20},
                                  "history": [epoch(e, 0.7 + e / 100) for e in range(5)], "gates": []}
    app = app_with(fleet, with_lambda_enabled(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "host") == "lambda +1")
        assert (cell(app, "B1", "status"), cell(app, "B1", "epoch")) == ("running", "5/20")
        seen = app.last_seen["lambda"][0]
        fleet.down["lambda"] = time.time()
        await wait_for(pilot, lambda: "disconnected" in app.query_one(HostsPanel).text)
        await pilot.pause(0.3)
        clock = time.strftime("%H:%M", time.localtime(app.last_seen["lambda"][0]))
        assert app.last_seen["lambda"][0] >= seen
        assert cell(app, "B1", "status") == f"running? as of {clock}", "not the old local run"
        assert (cell(app, "B1", "host"), cell(app, "B1", "epoch")) == ("lambda +1", "5/20")
        app.matrix.select("B1")
        await pilot.press("enter")
        title = str(app.screen.query_one("#detail-title").render())
        assert f"B1 on lambda  running? as of {clock}  epoch 5/20" in title


async def test_relaunch_prefills_the_recorded_arguments_and_says_when_they_differ():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B2"] = {"state": "aborted", "epochs_planned": 30, "history": [epoch(0, 0.7)],
                                 "resumable": True, "overrides": {"epochs": 30},
                                 "run": {"command": ["/p/python", "-m", "engine.train", "--experiment", "B2",
                                                     "--host", "local", "--config", "/x/experiments.toml",
                                                     "--epochs", "30"]}}
    app = app_with(fleet, train_args=("--epochs", "50"))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B2", "status") == "aborted")
        app.matrix.select("B2")
        await pilot.press("l")
        dialog = app.screen
        assert dialog.query_one("#extra", Input).value == "--epochs 30", "the run's own arguments, not --epochs 50"
        assert "B2 on local: aborted at epoch 1/30, started with --epochs 30" in dialog.text
        assert not dialog.query_one("#next").disabled
        dialog.query_one("#extra", Input).value = "--epochs 50"
        await pilot.pause()
        assert dialog.query_one("#next").disabled
        assert ("B2 aborted on local resumes from last.pt only with the arguments it was started with (--epochs 30); "
                "these differ (--epochs: was 30, now 50)") in dialog.text
        dialog.query_one("#extra", Input).value = "--epochs 30"
        await pilot.press("enter", "y")
        await wait_for(pilot, lambda: fleet.launches)
        assert fleet.launches == [("B2", "local", "auto", None, ("--epochs", "30"))]


async def test_the_launch_dialog_takes_typed_arguments_and_fits_80x24():
    fleet = FakeFleet(["local"])
    app = app_with(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        await pilot.press("l")
        dialog = app.screen
        assert app.focused is dialog.query_one("#extra", Input), "typing goes into the arguments"
        await pilot.press(*"--epochs 3", "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: fleet.launches)
        assert fleet.launches == [("A1", "local", "auto", None, ("--epochs", "3"))]
        await pilot.press("l")
        dialog = app.screen
        await pilot.pause()
        box = dialog.query_one("VerticalScroll")
        title = dialog.query_one(".title")
        assert title.region.y >= 0 and box.region.bottom <= 24, "the whole dialog, its title too, is on screen"
        assert "local has no GPU" in dialog.text


async def test_a_launch_that_fails_within_seconds_says_so_with_the_engines_reason():
    fleet = FakeFleet(["local"])
    fleet.fail_launch = ("launch on local: B2 ended 3 s after the launch (exit 2): runs/B2 was started with other "
                         "settings (epochs: was 30, now 50)")
    app = app_with(fleet)
    notes = record_notes(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: "local" in app.snapshots)
        app.matrix.select("B2")
        await pilot.press("l", "enter", "y")
        await wait_for(pilot, lambda: any(s == "error" for s, _ in notes))
        assert ("error", "Launch failed: B2 on local: " + fleet.fail_launch) in notes
        assert not any(n.startswith("Launched") for _, n in notes)
        # A failure the engine reports later (the launch returned before it took over) reads the same.
        fleet.fail_launch = None
        fleet.runs["local"]["B3"] = {"state": "pending", "history": [], "launched_at": "t1"}
        await wait_for(pilot, lambda: cell(app, "B3", "status") == "pending")
        fleet.runs["local"]["B3"] = {"state": "failed", "history": [], "launched_at": "t1",
                                     "launch_failure": "dataset 'synthetic-demo' of host 'local': not found"}
        await wait_for(pilot, lambda: any("B3 on local: dataset" in n for _, n in notes))
        assert ("error", "Launch failed: B3 on local: dataset 'synthetic-demo' of host 'local': not found") in notes
        assert not any("Run failed" in n for _, n in notes)


async def test_the_decision_never_proposes_a_launch_the_engine_refuses():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["A1"] = smoke_done()
    fleet.runs["local"]["B1"] = smoke_done(core=0.55, rel=0.01)           # SUCCESS: next FULL, base B1
    fleet.runs["local"]["FULL"] = {"state": "running", "epochs_planned": 50, "history": [epoch(0, 0.8)]}
    app = app_with(fleet)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: cell(app, "FULL", "status") == "running")
        fleet.runs["local"]["FULL"]["state"] = "done"  # a FULL of another base, done here: relaunch refused
        await wait_for(pilot, lambda: cell(app, "FULL", "status") == "done")
        await pilot.press("d")
        screen = app.screen
        assert (screen.decision.branch, screen.decision.next_experiments) == ("success_b1", ("FULL",))
        assert screen.plan == [], "FULL is done on the only host: the engine would refuse it there"
        assert "FULL: done on local; the engine refuses to start it again there without --fresh" in screen.text
        await pilot.press("l")
        assert isinstance(app.screen, DecisionScreen), "nothing to launch, so no dialog"


async def test_the_decision_relaunches_an_incomplete_run_where_it_is_through_the_dialog(tmp_path):
    fleet = FakeFleet(["local", "lambda"])
    fleet.runs["lambda"]["B1"] = {"state": "aborted", "epochs_planned": 20, "history": [epoch(0, 0.7)],
                                  "overrides": {"epochs": 20}, "resumable": True,
                                  "run": {"command": ["python", "-m", "engine.train", "--experiment", "B1",
                                                      "--host", "lambda", "--epochs", "20"]}}
    app = app_with(fleet, with_lambda_enabled(tmp_path))
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "aborted")
        await pilot.press("d")
        screen = app.screen
        assert ("B1", "lambda", "auto", None) in screen.plan, "it resumes where it is, not on local"
        assert "B1 ended with no final_core_lr_auc (status aborted, epoch 1/20 on lambda): relaunch it" in screen.text
        await pilot.press("l")
        dialogs = []
        while isinstance(app.screen, LaunchScreen):
            dialogs.append((app.screen.exp_id, app.screen.query_one("#host", Select).value,
                            app.screen.query_one("#extra", Input).value))
            await pilot.press("enter")
        assert ("B1", "lambda", "--epochs 20") in dialogs
        assert isinstance(app.screen, ConfirmScreen)


async def test_escape_and_a_key_joined_into_alt_key_still_close_the_help_and_backspace_goes_back():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B1"] = {"state": "running", "history": []}
    app = app_with(fleet)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: cell(app, "B1", "status") == "running")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("alt+q")          # escape, q through nested tmux
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Quit lenstui?" in app.screen.text, "the help closed, then q asked to quit"
        await pilot.press("backspace")
        assert not isinstance(app.screen, ConfirmScreen) and app.is_running
        app.matrix.select("B1")
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("backspace")
        assert not isinstance(app.screen, DetailScreen)
        await pilot.press("d", "alt+d")     # escape, d: back to the matrix, and the decision again
        await pilot.pause(0.2)
        assert isinstance(app.screen, DecisionScreen) and len(app.screen_stack) == 2


async def test_every_panel_of_the_detail_view_is_reachable_at_80x24():
    fleet = FakeFleet(["local"])
    fleet.runs["local"]["B2"] = {
        "state": "done", "epochs_planned": 2, "history": [epoch(0, 0.7), epoch(1, 0.76)],
        "gates": [gate(0, 0.70, 0.50)], "errors": [], "final_val_auroc_by_thetae": gate(2, 0.6, 0.5)["val_auroc_by_thetae"],
        "verdicts": {"core_lr_auc": {"verdict": "FAIL", "value": 0.70, "rule": "PASS < 0.60"}}}
    fleet.log_text = "".join(f"line {i}\n" for i in range(50))
    app = app_with(fleet)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: cell(app, "B2", "status") == "done")
        app.matrix.select("B2")
        await pilot.press("enter")
        detail = app.screen
        await wait_for(pilot, lambda: "line 49" in detail.log_text)
        grid = detail.query_one("#detail-grid")
        assert app.focused is grid, "the page scrolls from the start"
        analysis = str(detail.query_one("#analysis").render())
        assert "Val AUROC by θ_E (end of training, best.pt)" in analysis and "Verdicts (§6)" in analysis
        for _ in range(10):
            await pilot.press("pagedown")
        await pilot.pause()
        log_box = detail.query_one("#log-box").region
        assert 0 < log_box.y and log_box.bottom <= 24, "PageDown reaches the log tail"
        await pilot.press("home")
        seen = []
        for _ in range(5):
            await pilot.press("tab")
            await pilot.pause()
            seen.append(app.focused.id)
            region = app.focused.region
            assert region.height > 0 and region.y < 23, (app.focused.id, region)
        assert {"epochs", "analysis-box", "log"} <= set(seen), seen
