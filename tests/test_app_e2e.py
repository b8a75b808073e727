"""End to end from the keyboard: two real sshd hosts and `local`, a real tiny run launched and aborted.

The app runs under `App.run_test()` with the real `Fleet`; hosts h1 and h2 are OpenSSH
servers on loopback (tests/sshd.py) whose work dirs hold a copy of the real engine, so
the run is a real `engine.train` on a tiny dataset, started over SSH and stopped by
SIGTERM to its process group. Every step is a key press, every check is on screen text.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import Select

from engine.config import load_config
from lenstui.app import make_app
from lenstui.fleet import Fleet
from lenstui.screens.confirm import ConfirmScreen
from lenstui.screens.launch import LaunchScreen
from lenstui.widgets.hosts import HostsPanel

from data_fixtures import write_tiny_dataset
from sshd import SshLab, install_engine, local_host_toml, running_lab, write_config

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

# Long enough to abort mid-run, small enough for seconds per epoch on one thread.
TRAIN_ARGS = ("--epochs", "30", "--limit-train", "16", "--limit-val", "16", "--device", "cpu")
# The plan's gate settings shrunk for a tiny dataset (the gate before training runs quickly).
# The whole tiny dataset, not a 10% sample of it: 10% of its 24 unpaired val rows is one row, and
# the origin's unpaired rules (engine.data.views.unpaired_origin) can leave such a split one-class.
TINY = {"gate_n_samples = 2000": "gate_n_samples = 40", "gate_cv_folds = 5": "gate_cv_folds = 2",
        "sample_fraction = 0.10": "sample_fraction = 1.0"}


def one_thread_python(path: Path) -> Path:
    """A host `python` running this interpreter with one torch thread (SSH sessions do not inherit env)."""
    path.write_text(f'#!/bin/sh\nOMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


def lab_config(tmp_path: Path, lab: SshLab, data_root: Path) -> Path:
    """The real plan with hosts local, h1, h2; the ssh hosts run the real engine from their work dirs."""
    python = one_thread_python(tmp_path / "python1")
    hosts = [local_host_toml(tmp_path / "runs")]
    for server in lab.servers.values():
        install_engine(server.work_dir, standin=False)
        hosts.append(f'[hosts.{server.name}]\ntransport = "ssh"\nssh_host = {json.dumps(server.name)}\n'
                     f'work_dir = {json.dumps(str(server.work_dir))}\npython = {json.dumps(str(python))}\n'
                     f'runs_root = {json.dumps(str(server.runs_root))}\ndataset = "lab"\n')
    config = write_config(tmp_path / "experiments.toml", hosts, str(data_root))
    text = config.read_text()
    for old, new in TINY.items():
        assert old in text, f"experiments.toml has no `{old}` line any more"
        text = text.replace(old, new)
    config.write_text(text)
    for server in lab.servers.values():  # what `s` (sync) would push: the engine reads it on the host
        (server.work_dir / "experiments.toml").write_text(text)
    return config


def kill_group_of(run_dir: Path) -> None:
    """SIGKILL a run this test started if it is still alive (never leave a process behind)."""
    for name in ("run.json", "launch.json"):
        try:
            pgid = json.loads((run_dir / name).read_text()).get("pgid")
        except (OSError, ValueError):
            continue
        if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgid(0):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def wait_for(pilot, condition, timeout: float) -> None:
    """Let the app run until `condition()` holds (polls arrive from worker threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.1)


def epochs_done(text: str) -> int:
    """Finished epochs in an epoch cell such as "3/30" (0 for anything else)."""
    head = text.split("/")[0]
    return int(head) if head.isdigit() else 0


def cell(app, exp_id: str, column: str) -> str:
    value = app.matrix.get_cell(exp_id, column)
    return getattr(value, "plain", str(value))


@pytest.fixture
def lab(tmp_path: Path):
    """Two OpenSSH servers on loopback (h1, h2); skipped only when sshd is not installed."""
    with running_lab(tmp_path / "lab") as lab:
        yield lab


async def test_launch_on_ssh_host_watch_epochs_and_abort_from_the_keyboard(tmp_path, lab, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_tiny_dataset(tmp_path / "data", n_lrgs={"train": 16, "val": 12, "test": 8})
    config = lab_config(tmp_path, lab, data)
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    app = make_app(config, fleet=fleet, refresh_s=0.5, train_args=TRAIN_ARGS)
    run_dir = lab.servers["h2"].runs_root / "B1"
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: {"local", "h1", "h2"} <= set(app.snapshots), timeout=30)
            hosts = app.query_one(HostsPanel).text
            for name in ("local", "h1", "h2"):
                assert f"{name}  connected" in hosts, hosts

            await pilot.press("down")                      # A1 -> B1
            assert app.matrix.selected_id == "B1"
            await pilot.press("l")
            dialog = app.screen
            assert isinstance(dialog, LaunchScreen)
            await pilot.press("shift+tab", "shift+tab")    # from the arguments up to the host list
            assert app.focused is dialog.query_one("#host", Select)
            await pilot.press("enter", "down", "down", "enter")   # local -> h1 -> h2
            assert dialog.query_one("#host", Select).value == "h2"
            await pilot.press("ctrl+s")                    # Continue
            confirm = app.screen
            assert isinstance(confirm, ConfirmScreen)
            assert "B1 on h2 (GPU auto): unpaired" in confirm.text
            assert "arguments: " + " ".join(TRAIN_ARGS) in confirm.text
            await pilot.press("y")

            await wait_for(pilot, lambda: cell(app, "B1", "status") == "running", timeout=60)
            assert cell(app, "B1", "host") == "h2"
            await wait_for(pilot, lambda: epochs_done(cell(app, "B1", "epoch")) >= 1, timeout=60)
            epochs_seen = epochs_done(cell(app, "B1", "epoch"))
            assert 1 <= epochs_seen < 30 and cell(app, "B1", "epoch").endswith("/30")
            assert float(cell(app, "B1", "val")) >= 0.0, "an epoch arrived with its val AUROC"

            await pilot.press("a")
            confirm = app.screen
            assert isinstance(confirm, ConfirmScreen)
            assert "Run: B1" in confirm.text and "Host: h2" in confirm.text
            await pilot.press("y")
            await wait_for(pilot, lambda: cell(app, "B1", "status") == "aborted", timeout=45)
            assert cell(app, "B1", "host") == "h2"
            assert not (lab.servers["h1"].runs_root / "B1").exists(), "only the chosen host ran it"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "aborted" and len(metrics["history"]) >= epochs_seen
    finally:
        fleet.close()
        kill_group_of(run_dir)
