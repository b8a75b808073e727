"""Abort: every process of the run's group is gone within the grace period plus 5 s.

Abort signals the run's process group (never a name): SIGTERM, then SIGKILL after the grace
period. What must not survive: the training process, and anything it or its launcher
started in its group — here a child that ignores SIGTERM beside a real training run, and
the stand-in's grandchild with a stand-in that ignores SIGTERM itself, locally and over sshd.
"""

from __future__ import annotations

import sys
import time

import pytest

from engine.protocol import rundir
from engine.config import load_config
from lenstui.fleet import Fleet

from .conftest import (TRAIN_ARGS, group_alive, local_host, metrics, poll_until, ssh_host, standin_work,
                       tiny_config)

pytestmark = pytest.mark.faults
GRACE = 6.0
SLACK = 5.0  # the promise: gone within grace + 5 s


def _gone(pids: list[int]) -> list[int]:
    return [p for p in pids if rundir.process_identity(p) is not None]


@pytest.mark.slow
def test_abort_of_a_real_training_run_leaves_no_process_of_its_group(tmp_path, synth_root):
    # The host's python is a wrapper that leaves a child in the run's process group which
    # ignores SIGTERM (as a DataLoader worker stuck in I/O, or a `tee` a user added would).
    wrapper = tmp_path / "python-with-child"
    wrapper.write_text('#!/bin/sh\nif [ "$2" = engine.train ]; then (trap "" TERM; exec sleep 3600) & fi\n'
                       f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    runs = tmp_path / "runs"
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs, python=wrapper)], synth_root)
    fleet = Fleet(load_config(config), config)
    try:
        launched = fleet.launch("A1", "local", extra_args=("--epochs", "20", *TRAIN_ARGS))
        poll_until(fleet, "local", "A1", lambda e: e["state"] == "running" and e["gates"], timeout=180)
        members = group_alive(launched.pgid)
        assert launched.pid in members and len(members) >= 2, members  # the trainer and the child

        started = time.monotonic()
        result = fleet.abort("A1", "local", grace=GRACE)
        took = time.monotonic() - started
        entry = fleet.poll("local").status["runs"]["A1"]
    finally:
        fleet.close()
    print(f"abort of a real run (grace {GRACE:g} s, a child ignoring SIGTERM): {took:.1f} s")
    assert group_alive(launched.pgid) == [] and _gone(members) == []
    assert took <= GRACE + SLACK, f"abort took {took:.1f} s"
    assert result.signalled and result.killed and result.remaining == []  # the child needed SIGKILL
    # The trainer itself stopped on SIGTERM: it saved last.pt and said so.
    info = rundir.read_run_info(runs / "A1").data
    assert info["exit_status"] == 143 and metrics(runs / "A1")["status"] == "aborted"
    assert (runs / "A1" / rundir.LAST_CKPT).exists()
    assert entry["state"] == "aborted"
    assert "aborted on SIGTERM" in (runs / "A1" / rundir.LOG_FILE).read_text()


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_abort_sigkills_a_run_that_ignores_sigterm_and_its_grandchild(where, tmp_path, request):
    runs = tmp_path / "runs"
    if where == "local":
        hosts, host, options = [local_host("local", runs, standin_work(tmp_path / "work"))], "local", None
    else:
        lab = request.getfixturevalue("lab")
        server = lab.servers["h1"]
        hosts, host, options = [local_host("local", runs), ssh_host("h1", server)], "h1", lab.options()
        runs = server.runs_root
    config = tiny_config(tmp_path / "experiments.toml", hosts)
    fleet = Fleet(load_config(config), config, ssh_options=options)
    try:
        if where == "ssh":
            fleet.sync("h1")
            standin_work(lab.servers["h1"].work_dir)
        launched = fleet.launch("B2", host, extra_args=["--ignore-term", "--epoch-seconds", "0.2"])
        poll_until(fleet, host, "B2", lambda e: e["state"] == "running" and e["history"], timeout=30)
        grandchild = int((runs / "B2" / "grandchild.pid").read_text())
        members = group_alive(launched.pgid)
        assert {launched.pid, grandchild} <= set(members)

        started = time.monotonic()
        result = fleet.abort("B2", host, grace=2.0)
        took = time.monotonic() - started
    finally:
        fleet.close()
    print(f"abort of a stand-in ignoring SIGTERM ({where}, grace 2 s): {took:.1f} s")
    assert group_alive(launched.pgid) == [] and _gone(members) == []
    assert took <= 2.0 + SLACK, f"abort took {took:.1f} s"
    assert result.killed and result.remaining == []
    assert metrics(runs / "B2")["status"] == "aborted"  # written by abort, since the run could not
