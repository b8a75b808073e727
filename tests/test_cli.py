"""The `lenstui` command line: the headless twin of the app, with exit codes a script can use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.protocol import rundir
from sshd import PROJECT_ROOT, group_alive, install_engine, local_host_toml, wait_for, write_config


def lenstui(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenstui.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL)


@pytest.fixture
def project(tmp_path):
    """A config whose local host has the stand-in training in its work_dir, and one disabled ssh host."""
    work, runs = tmp_path / "work", tmp_path / "runs"
    install_engine(work)
    disabled = ('[hosts.far]\nenabled = false\ntransport = "ssh"\nssh_host = "far.example"\nwork_dir = "/w"\n'
                'python = "python3"\nruns_root = "/r"\ndataset = "lab"\n')
    config = write_config(tmp_path / "experiments.toml", [local_host_toml(runs, work), disabled])
    yield {"config": str(config), "runs": runs}
    for d in runs.glob("*"):
        pgid = (rundir.read_run_info(d).data or {}).get("pgid")
        if pgid and group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_a_bad_config_is_one_message_and_exit_code_2_for_every_command(tmp_path):
    bad = tmp_path / "experiments.toml"
    bad.write_text("[plan]\nname = 'x'\n[training]\nepochs = 'many'\n")
    for args in (["status"], ["hosts"], []):
        done = lenstui("--config", str(bad), *args)
        assert done.returncode == 2, args
        assert str(bad) in done.stderr and "Traceback" not in done.stderr
    missing = lenstui("--config", str(tmp_path / "nope.toml"), "status")
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_hosts_lists_every_host_and_marks_disabled_ones(project):
    rows = json.loads(lenstui("--config", project["config"], "hosts", "--json").stdout)
    assert [(r["host"], r["enabled"]) for r in rows] == [("local", True), ("far", False)]
    text = lenstui("--config", project["config"], "hosts").stdout
    assert "not configured" in text and "this machine" in text


def test_launch_status_logs_abort_from_the_command_line(project):
    cfg = project["config"]
    done = lenstui("--config", cfg, "launch", "B1", "--host", "local", "--json", "--", "--epoch-seconds", "0.05")
    assert done.returncode == 0, done.stderr
    launched = json.loads(done.stdout)
    assert launched["exp_id"] == "B1" and launched["gpu"] == "cpu"

    again = lenstui("--config", cfg, "launch", "B1", "--host", "local")
    assert again.returncode == 3 and "already running" in again.stderr

    def running():
        snap = json.loads(lenstui("--config", cfg, "status", "--json").stdout)
        entry = snap["local"]["status"]["runs"].get("B1") or {}
        return entry.get("epoch") is not None and snap
    snap = wait_for(running, timeout=30)
    assert snap["local"]["connected"] and snap["far"]["configured"] is False
    assert snap["local"]["status"]["runs"]["B1"]["state"] == "running"
    text = lenstui("--config", cfg, "status")
    assert text.returncode == 0 and "B1" in text.stdout and "running" in text.stdout and "far: not configured" in text.stdout

    logs = lenstui("--config", cfg, "logs", "B1", "--host", "local")
    assert logs.returncode == 0 and "lenstui launch of B1" in logs.stdout and "--epoch-seconds 0.05" in logs.stdout

    stopped = lenstui("--config", cfg, "abort", "B1", "--host", "local", "--grace", "10")
    assert stopped.returncode == 0 and "stopped by SIGTERM" in stopped.stdout
    assert group_alive(launched["pgid"]) == []


def test_logs_follow_prints_new_lines_as_they_come(project):
    cfg = project["config"]
    assert lenstui("--config", cfg, "launch", "B2", "--host", "local", "--", "--epoch-seconds", "0.1").returncode == 0
    # As from a terminal: SIGINT at its default. A test run started in the background of a
    # non-interactive shell (`pytest &`) ignores SIGINT, and its children would inherit that.
    follow = subprocess.Popen([sys.executable, "-m", "lenstui.cli", "--config", cfg, "logs", "B2", "--host", "local",
                               "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = ""
        while "epoch 3 done" not in seen:
            line = follow.stdout.readline()
            assert line, follow.stderr.read()
            seen += line
        follow.send_signal(signal.SIGINT)   # ctrl+c: stops following, exit 130, no traceback
        # Read what is still coming while waiting: a follower blocked on a full pipe never exits.
        try:
            _, err = follow.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            masks = [line for line in Path(f"/proc/{follow.pid}/status").read_text().splitlines()
                     if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
            raise AssertionError(f"the follower outlived ctrl+c by 30 s: {masks}") from None
        assert follow.returncode == 130 and "Traceback" not in err, err
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
        lenstui("--config", cfg, "abort", "B2", "--host", "local", "--grace", "5")
    assert "epoch 0 done" in seen and "epoch 2 done" in seen


@pytest.mark.parametrize("args, code, words", [
    (["launch", "A7", "--host", "local"], 2, "unknown experiment 'A7'"),
    (["launch", "A1", "--host", "nowhere"], 2, "unknown host 'nowhere'"),
    (["launch", "A1", "--host", "far"], 2, "not configured"),
    (["launch", "A1", "--host", "local", "--base", "B1"], 2, "only a Phase-4 experiment"),
    (["abort", "A1", "--host", "local"], 0, "never launched"),
    (["logs", "A1", "--host", "local"], 2, "no log on local yet"),
    (["status", "--host", "far"], 0, "not configured"),
])
def test_refusals_have_meaningful_exit_codes_and_words(project, args, code, words):
    done = lenstui("--config", project["config"], *args)
    assert done.returncode == code, done.stderr
    assert words in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_subcommands_never_import_textual_or_torch(project):
    probe = ("import sys, lenstui.cli as c; c.main(['--config', sys.argv[1], 'status']); "
             "print(sorted(m for m in ('textual', 'torch', 'numpy', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, project["config"]], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_with_no_command_the_app_is_opened_with_the_chosen_host(project, monkeypatch):
    import lenstui.app
    import lenstui.cli

    opened = []
    monkeypatch.setattr(lenstui.app, "run_app", lambda path, host: opened.append((path, host)))
    assert lenstui.cli.main(["--config", project["config"], "--host", "local"]) == 0
    assert opened == [(Path(project["config"]), "local")]


def test_status_ends_with_the_run_that_stands_for_each_experiment(project):
    cfg = project["config"]
    done = lenstui("--config", cfg, "launch", "B1", "--host", "local", "--", "--epochs", "1", "--epoch-seconds", "0")
    assert done.returncode == 0, done.stderr
    assert "the engine is running it" in done.stdout, "launch waits until the engine has taken the run over"
    wait_for(lambda: (rundir.read_metrics(project["runs"] / "B1").data or {}).get("status") == "done", timeout=30)
    text = lenstui("--config", cfg, "status").stdout
    tail = text[text.index("experiments (the run that stands for each"):]
    assert "  B1     done on local (epochs=1), epoch 1/1" in tail and "  A1     not run" in tail
    snap = json.loads(lenstui("--config", cfg, "status", "--json").stdout)
    assert snap["experiments"]["B1"]["host"] == "local" and snap["local"]["connected"]


def test_a_launch_that_ends_at_once_is_a_failed_launch_with_the_reason_and_its_exit_code(project):
    done = lenstui("--config", project["config"], "launch", "B3", "--host", "local", "--", "--no-such-option")
    assert done.returncode == 2, done.stdout
    assert "B3 ended" in done.stderr and "unrecognized arguments: --no-such-option" in done.stderr
    assert "started on" not in done.stdout + done.stderr


@pytest.mark.parametrize("env, opens", [
    ({}, False),                                              # an SSH session without LANG
    ({"LANG": "C"}, False),
    ({"LC_CTYPE": "C.UTF-8"}, False),                         # what Python's PEP 538 coercion leaves
    ({"LANG": "en_US.UTF-8"}, True),
    ({"LC_ALL": "C.utf8"}, True),
])
def test_a_locale_that_is_not_utf8_is_said_at_start_up_instead_of_drawing_garbage(project, monkeypatch, capsys,
                                                                                   env, opens):
    import lenstui.app
    import lenstui.cli

    for name in ("LANG", "LC_ALL", "LC_CTYPE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    opened = []
    monkeypatch.setattr(lenstui.app, "run_app", lambda path, host: opened.append(host))
    code = lenstui.cli.main(["--config", project["config"]])
    assert (code == 0 and opened == [None]) if opens else (code == 2 and opened == [])
    if not opens:
        err = capsys.readouterr().err
        assert "the locale is not UTF-8" in err and "export LANG=C.UTF-8" in err and "--no-utf8-check" in err
        assert lenstui.cli.main(["--config", project["config"], "--no-utf8-check"]) == 0 and opened == [None]


def test_a_shipped_host_without_real_shards_is_also_offered_the_synthetic_route():
    # A new user with only the demo data: copying shards they do not have is no route.
    from engine.config import load_config
    from lenstui.fleet import Fleet

    fleet = Fleet(load_config(PROJECT_ROOT / "experiments.toml"), PROJECT_ROOT / "experiments.toml")
    try:
        route = fleet.data_route("lambda")
    finally:
        fleet.close()
    assert "copy the shards of dataset 'v5_cosmos_paired' there" in route
    assert 'set dataset = "synthetic-demo" under [hosts.lambda] and run `lenstui synth --host lambda`' in route


def test_status_keeps_its_columns_when_a_seed_replicate_has_a_longer_name():
    from lenstui.cli import format_snapshot
    from lenstui.fleet import HostSnapshot

    run = {"state": "done", "epoch": 4, "epochs": 4, "val_auroc": 0.66, "best_val_auroc": 0.68, "gpu": "cpu"}
    status = {"hostname": "vm", "engine_version": "0.3.0", "gpus": [], "runs": {"B1": run, "B1@seed43": run}}
    lines = [line for line in format_snapshot(HostSnapshot.answered("local", status)).splitlines() if " done " in line]
    assert len(lines) == 2 and lines[0].index(" done ") == lines[1].index(" done "), lines
