"""SIGKILL to a real training process in the middle of an epoch: seen as lost at once, resumed from last.pt.

The story: B1 trains on `local`; the kernel's OOM killer (or a careless `kill -9`) takes the
training process mid-epoch. The very next status poll says `lost`, never `running`. A
relaunch takes the run directory's lock again (the kernel released it), resumes from
last.pt having lost at most the epoch in progress, and metrics.json's history runs on
without a gap or a duplicate; stdout.log keeps both starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from engine import files

from engine.protocol import rundir
from engine.config import load_config
from engine.training.checkpoint import load_checkpoint
from lenstui.fleet import Fleet

from .conftest import TRAIN_ARGS, epochs_of, local_host, metrics, poll_until, tiny_config, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]
EPOCHS = 3


def test_sigkill_mid_epoch_is_lost_within_one_poll_and_a_relaunch_resumes_from_last_pt(tmp_path, synth_root):
    runs = tmp_path / "runs"
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs)], synth_root)
    fleet = Fleet(load_config(config), config)
    run = runs / "B1"
    args = ("--epochs", str(EPOCHS), *TRAIN_ARGS)
    try:
        first = fleet.launch("B1", "local", extra_args=args)
        poll_until(fleet, "local", "B1", lambda e: e["state"] == "running" and len(e["history"]) >= 1, timeout=180)
        time.sleep(0.5)  # into the next epoch (2 batches of 8, a few seconds here)
        os.kill(first.pid, signal.SIGKILL)  # no handler runs: nothing is saved, nothing is said
        wait_for(lambda: rundir.process_identity(first.pid) is None, timeout=10)

        entry = fleet.poll("local").status["runs"]["B1"]  # the very next refresh
        assert entry["state"] == "lost", entry
        assert f"process {first.pid} is gone" in entry["reason"]
        before = metrics(run)
        assert before["status"] == "running"  # the files say running; only the probe knows better
        done_at_kill = load_checkpoint(run / rundir.LAST_CKPT)["epoch"]
        assert 1 <= done_at_kill < EPOCHS, "the run finished before it could be killed mid-run"
        # Each epoch writes last.pt, then metrics.json: a kill between the two leaves metrics.json
        # one epoch behind, and the resume takes the history from last.pt. Never further apart.
        assert len(before["history"]) in (done_at_kill, done_at_kill - 1)

        second = fleet.launch("B1", "local", extra_args=args)  # the kernel released the dead run's lock
        assert second.pid != first.pid
        # Until the new process writes run.json the entry still describes the killed one: wait for
        # an end of *this* start (test_a_relaunch_is_never_shown_lost covers the moment in between).
        end = poll_until(fleet, "local", "B1", lambda e: e["pid"] == second.pid and e["state"] in ("done", "failed", "lost"),
                         timeout=300, interval=1.0)
    finally:
        fleet.close()
    log = (run / rundir.LOG_FILE).read_text()
    assert end["state"] == "done", log[-3000:]

    info = rundir.read_run_info(run).data
    assert info["resumed_from_epoch"] == done_at_kill  # only the epoch in progress was lost
    after = metrics(run)
    assert epochs_of(after) == list(range(1, EPOCHS + 1))   # continuous: no gap, no epoch twice
    assert after["history"][:len(before["history"])] == before["history"]  # what was written before is kept
    assert [g["after_epochs"] for g in after["gates"]] == [0]  # the gate before training is not redone
    assert after["status"] == "done" and after["test_auroc"] is not None

    # stdout.log keeps both starts: two launch headers, the first start, the resume, and the
    # lines the killed process wrote before it died.
    assert log.count("lenstui launch of B1 on") == 2
    assert log.count(" B1 start ") == 1
    assert log.count(f" B1 resumed from epoch {done_at_kill} ") == 1
    assert log.index(" B1 start ") < log.index("epoch   1/3") < log.index(" B1 resumed from epoch ")


def test_a_relaunch_is_never_shown_lost_while_the_new_process_starts(tmp_path):
    """Between a relaunch and the new process's run.json, the run is starting: pending or running, not lost."""
    from .conftest import standin_work

    work, runs = standin_work(tmp_path / "work"), tmp_path / "runs"
    # A host whose Python takes a while to start (torch imports, a conda activation): the window is real.
    slow = tmp_path / "slow-python"
    slow.write_text(f"#!/bin/sh\nsleep 2\nexec {sys.executable} \"$@\"\n")
    slow.chmod(0o755)
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs, work, python=slow)])
    fleet = Fleet(load_config(config), config)
    try:
        first = fleet.launch("B1", "local", extra_args=["--epoch-seconds", "0.2"])
        poll_until(fleet, "local", "B1", lambda e: e["state"] == "running" and e["history"], timeout=30)
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: rundir.process_identity(first.pid) is None, timeout=10)
        os.killpg(first.pgid, signal.SIGKILL)  # its grandchild outlives it; not what this test is about
        assert fleet.poll("local").status["runs"]["B1"]["state"] == "lost"

        # The launch waits until the new process writes run.json (engine.launch --wait): poll
        # beside it, from the moment launch.json names the new process.
        relaunch = threading.Thread(target=fleet.launch, args=("B1", "local"),
                                    kwargs={"extra_args": ["--epoch-seconds", "0.2"]})
        relaunch.start()
        new_pid = wait_for(lambda: (pid := (files.read_json(runs / "B1" / rundir.LAUNCH_FILE).data or {})
                                    .get("pid")) != first.pid and pid, timeout=30)
        seen = []
        while rundir.read_run_info(runs / "B1").data.get("pid") != new_pid:
            entry = fleet.poll("local").status["runs"]["B1"]
            seen.append((entry["state"], entry["pid"]))
            time.sleep(0.05)
        relaunch.join(60)
    finally:
        fleet.close()
    assert seen, "the new process wrote run.json before the first poll"
    assert all(state in ("pending", "running") for state, _ in seen), seen
