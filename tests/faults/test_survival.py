"""The app and the CLI exit while two runs go on; a new lenstui finds both finished, with full history.

B1 is launched by the `lenstui launch` command (a separate process that exits at once) on
host `side`; A1 — a real training run — is launched from the app's launch dialog on
`local`. The user quits the app while both train (it warns that they keep going). The runs
finish on their own; a new app instance and a new `lenstui status` process, knowing nothing
of the earlier sessions, find both done with every epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from engine import files

from engine.protocol import rundir
from lenstui.app import make_app

from .conftest import (PROJECT_ROOT, TRAIN_ARGS, app_wait, cell, epochs_of, lenstui, local_host,
                       standin_work, tiny_config)

pytestmark = [pytest.mark.faults, pytest.mark.slow]
STANDIN_EPOCHS = 40


async def test_runs_outlive_the_app_and_the_cli_and_a_new_session_finds_them_done(tmp_path, synth_root):
    runs, side_runs = tmp_path / "runs", tmp_path / "side-runs"
    config = tiny_config(tmp_path / "experiments.toml",
                         [local_host("local", runs), local_host("side", side_runs, standin_work(tmp_path / "w"))],
                         synth_root)

    # `lenstui launch` in a terminal of its own, which then closes: the hang-up reaches whatever
    # is left in that terminal's process group; a detached run is not there.
    cli = subprocess.Popen([sys.executable, "-m", "lenstui.cli", "--config", str(config), "launch", "B1",
                            "--host", "side", "--", "--epochs", str(STANDIN_EPOCHS), "--epoch-seconds", "0.5"],
                           cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    try:
        os.killpg(cli.pid, signal.SIGHUP)
    except ProcessLookupError:
        pass  # nothing left in the terminal's group: the run is elsewhere

    first = make_app(config, refresh_s=0.5, train_args=("--epochs", "2", *TRAIN_ARGS))
    try:
        async with first.run_test(size=(140, 44)) as pilot:
            await app_wait(pilot, lambda: "local" in first.snapshots and cell(first, "B1", "status") == "running",
                           timeout=30)
            await pilot.press("l", "enter")  # launch the selected experiment (A1) on the default host
            assert "A1 on local" in first.screen.text
            await pilot.press("y")
            await app_wait(pilot, lambda: cell(first, "A1", "status") == "running", timeout=60)
            await pilot.press("q")
            quit_text = first.screen.text
            assert "keep going on their hosts" in quit_text and "A1 on local" in quit_text \
                and "B1 on side" in quit_text
            await pilot.press("y")
        assert first.return_code == 0
    finally:
        first.fleet.close()
    alive_after_quit = {exp: rundir.observe_run(root / exp).state for exp, root in (("A1", runs), ("B1", side_runs))}
    assert alive_after_quit == {"A1": rundir.RunState.RUNNING, "B1": rundir.RunState.RUNNING}
    # Each run leads its own session: no terminal lenstui ran in can hang it up.
    for root, exp in ((runs, "A1"), (side_runs, "B1")):
        pid = files.read_json(root / exp / rundir.LAUNCH_FILE).data["pid"]
        assert os.getsid(pid) == pid != os.getsid(0)

    second = make_app(config, refresh_s=1.0)  # a new session: it knows only experiments.toml
    try:
        async with second.run_test(size=(140, 44)) as pilot:
            await app_wait(pilot, lambda: cell(second, "A1", "status") in ("done", "failed", "lost")
                           and cell(second, "B1", "status") in ("done", "failed", "lost"), timeout=240)
            cells = {exp: (cell(second, exp, "status"), cell(second, exp, "epoch"), cell(second, exp, "host"))
                     for exp in ("A1", "B1")}
    finally:
        second.fleet.close()
    assert cells == {"A1": ("done", "2/2", "local"), "B1": ("done", f"{STANDIN_EPOCHS}/{STANDIN_EPOCHS}", "side")}

    status = lenstui("--config", str(config), "status", "--json")
    assert status.returncode == 0, status.stderr
    answer = json.loads(status.stdout)
    a1, b1 = answer["local"]["status"]["runs"]["A1"], answer["side"]["status"]["runs"]["B1"]
    assert (a1["state"], epochs_of(a1)) == ("done", [1, 2])
    assert (b1["state"], epochs_of(b1)) == ("done", list(range(1, STANDIN_EPOCHS + 1)))
    assert a1["test_auroc"] is not None and a1["run"]["exit_status"] == 0
    for run in (runs / "A1", side_runs / "B1"):  # one start each: nothing was restarted behind our back
        assert (run / rundir.LOG_FILE).read_text().count("lenstui launch of") == 1
        assert rundir.read_run_info(run).data["pid"] == files.read_json(run / rundir.LAUNCH_FILE).data["pid"]
