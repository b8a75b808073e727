"""Security: nothing a user or a file types reaches a shell; keys are checked; no secret leaks.

- experiment ids, host names and paths with shell syntax are refused or passed literally —
  `$(touch …)`, `; rm …` and backticks never run, locally or over a real sshd;
- ids that are path components (`..`, `.`) cannot reach outside the runs root;
- unknown or changed host keys are refused, and nothing runs on such a host;
- no private key material in stdout.log, run.json, launch.json, the CLI's output or sshd's log;
- checkpoints load with weights_only=True: a pickled payload is refused and never runs;
- the local transport and the launcher never use a shell.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.protocol import rundir
from engine.config import ConfigError, load_config
from engine.training.checkpoint import CheckpointError, load_checkpoint
from lenstui.fleet import Fleet, FleetError

from .conftest import (PROJECT_ROOT, group_alive, lenstui, local_host, poll_until, ssh_host, standin_work,
                       tiny_config)

pytestmark = pytest.mark.faults


def _markers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("pwned*"))


# ---------------------------------------------------------------------------
# Shell syntax in ids, host names, paths and arguments


def test_shell_syntax_in_ids_and_host_names_is_refused_by_every_command(tmp_path):
    runs = tmp_path / "runs"
    config = str(tiny_config(tmp_path / "experiments.toml", [local_host("local", runs,
                                                                       standin_work(tmp_path / "w"))]))
    mark = tmp_path / "pwned"
    nasty_ids = [f"$(touch {mark}1)", f"A1; touch {mark}2", f"`touch {mark}3`", f"A1 && touch {mark}4",
                 f"A1|touch {mark}5", "A1\ntouch x"]
    from lenstui.cli import main as cli

    for exp in nasty_ids:
        for args in (["launch", exp, "--host", "local"], ["abort", exp, "--host", "local"],
                     ["logs", exp, "--host", "local"], ["fetch", exp, "--host", "local", "--dest", str(tmp_path)]):
            assert cli(["--config", config, *args]) == 2, args
    for host in (f"local; touch {mark}6", f"$(touch {mark}7)"):
        assert cli(["--config", config, "launch", "A1", "--host", host]) == 2
        assert cli(["--config", config, "status", "--host", host]) == 2
    # The host side refuses them too, whoever calls it.
    for exp in nasty_ids[:3]:
        done = subprocess.run([sys.executable, "-m", "engine.launch", "start", "--experiment", exp,
                               "--runs-root", str(runs), "--", "true"], capture_output=True, text=True,
                              timeout=60, cwd=PROJECT_ROOT)
        assert done.returncode == 2 and "[A-Za-z0-9_.-]" in done.stdout
    assert _markers(tmp_path) == [] and not runs.exists()


@pytest.mark.parametrize("dots", ["..", "."])
def test_an_id_that_is_a_path_component_cannot_reach_outside_the_runs_root(dots, tmp_path, capsys):
    """`..` matches [A-Za-z0-9_.-]+ but names the runs root's parent: it must be refused like `$(…)`."""
    runs = tmp_path / "host" / "runs"
    runs.mkdir(parents=True)
    outside = runs.parent if dots == ".." else runs
    (outside / rundir.LOG_FILE).write_text("not a run's log: a file outside any run directory\n")
    # A process that is not a run, recorded where `abort ..` would look for one.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    record = {**rundir.identity_record(rundir.process_identity(decoy.pid)), "pgid": decoy.pid}
    (outside / rundir.RUN_FILE).write_text(json.dumps(record))
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs)])
    from lenstui.cli import main as cli

    try:
        codes = {what: cli(["--config", str(config), *args]) for what, args in {
            "logs": ["logs", dots, "--host", "local"],
            "fetch": ["fetch", dots, "--host", "local", "--dest", str(tmp_path / "fetched" / "local")],
            "abort": ["abort", dots, "--host", "local", "--grace", "1"],
        }.items()}
        out = capsys.readouterr().out
        assert rundir.process_identity(decoy.pid) is not None, f"`lenstui abort {dots}` signalled a process " \
                                                               "outside the runs root"
    finally:
        decoy.kill()
        decoy.wait()
    assert "not a run's log" not in out
    assert not (tmp_path / "fetched" / rundir.LOG_FILE).exists() and not (tmp_path / "fetched" / "local" /
                                                                           rundir.RUN_FILE).exists()
    assert codes == {"logs": 2, "fetch": 2, "abort": 2}
    bad = tmp_path / "dots.toml"
    bad.write_text(config.read_text().replace("[experiments.B4]", f'[experiments."{dots}"]'))
    with pytest.raises(ConfigError, match=re.escape(dots)):
        load_config(bad)


@pytest.mark.ssh
def test_shell_syntax_in_paths_and_arguments_never_runs_over_sshd(tmp_path, lab):
    server = lab.servers["h2"]
    mark = tmp_path / "pwned"
    canary = tmp_path / "canary"
    canary.write_text("must survive")
    odd = server.root / f"odd $(touch {mark}1); rm -f {canary}; `touch {mark}2` 'q\"uote"
    work, runs = odd / "work", odd / "runs"
    config = tiny_config(tmp_path / "experiments.toml",
                         [local_host("local", tmp_path / "runs"),
                          ssh_host("h2", server, work_dir=str(work), runs_root=str(runs))])
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        fleet.sync("h2")
        standin_work(work)
        # An extra training argument with shell syntax: the stand-in takes --base as a plain string.
        launched = fleet.launch("B1", "h2", extra_args=["--epochs", "3", "--epoch-seconds", "0.1",
                                                        "--base", f"$(touch {mark}3); rm -f {canary}"])
        entry = poll_until(fleet, "h2", "B1", lambda e: e["state"] == "done", timeout=30)
        assert entry["pid"] == launched.pid and (runs / "B1" / rundir.METRICS_FILE).exists()
        assert "stand-in B1 on h2" in fleet.logs("B1", "h2")
        fleet.fetch("B1", "h2", tmp_path / "fetched")
        assert (tmp_path / "fetched" / "B1" / rundir.METRICS_FILE).exists()
        fleet.abort("B1", "h2", grace=1)
        # An argument with shell syntax reaches the program as one literal string.
        done = fleet.transport("h2").run([sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))",
                                          f"$(touch {mark}4)", f"; rm -f {canary}", f"`touch {mark}5`"],
                                         cwd=str(work), timeout=30)
        assert done.rc == 0 and f"$(touch {mark}4)" in done.stdout
    finally:
        fleet.close()
    assert _markers(tmp_path) == [] and canary.read_text() == "must survive"


# ---------------------------------------------------------------------------
# Host keys


@pytest.mark.ssh
def test_unknown_and_changed_host_keys_are_refused_and_nothing_runs(tmp_path, lab):
    h1, h2 = lab.servers["h1"], lab.servers["h2"]
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", tmp_path / "runs"),
                                                          ssh_host("h1", h1), ssh_host("h2", h2)])
    impostor = h2.known_hosts_line.replace(f"]:{h2.port} ", f"]:{h1.port} ")  # h1's address, h2's key
    lab.known_hosts.write_text(impostor + "\n")  # h1: a changed key; h2: unknown
    before = lab.known_hosts.read_bytes()
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        changed, unknown = fleet.poll("h1"), fleet.poll("h2")
        for host in ("h1", "h2"):
            with pytest.raises(FleetError) as err:
                fleet.launch("A1", host)
            assert err.value.code == 3, "refused (the refused code), not unreachable"
    finally:
        fleet.close()
    assert not changed.connected and "CHANGED" in changed.error and "refused" in changed.error
    assert not unknown.connected and "unknown" in unknown.error and "lenstui trust h2" in unknown.error
    assert lab.known_hosts.read_bytes() == before  # nothing was added or replaced silently
    for server in (h1, h2):
        assert not server.runs_root.exists()  # no command ran there
        assert "Accepted publickey" not in server.log.read_text()  # we never even logged in


# ---------------------------------------------------------------------------
# Secrets


@pytest.mark.ssh
def test_no_private_key_material_in_logs_run_files_or_cli_output(tmp_path, lab):
    server = lab.servers["h1"]
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", tmp_path / "runs"),
                                                          ssh_host("h1", server)])
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        fleet.sync("h1")
        standin_work(server.work_dir)
    finally:
        fleet.close()
    env = lab.env()
    outputs = [lenstui("--config", str(config), "launch", "B2", "--host", "h1", "--json", "--",
                       "--epochs", "3", "--epoch-seconds", "0.1", env=env)]
    assert outputs[0].returncode == 0, outputs[0].stderr
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        poll_until(fleet, "h1", "B2", lambda e: e["state"] == "done", timeout=30)
    finally:
        fleet.close()
    for args in (["status", "--json"], ["status"], ["logs", "B2", "--host", "h1"], ["hosts", "--json"],
                 ["fetch", "B2", "--host", "h1", "--dest", str(tmp_path / "fetched")], ["trust", "h1", "--yes"]):
        outputs.append(lenstui("--config", str(config), *args, env=env))
    # What must never appear: any line of the private keys' bodies, or the PEM armour.
    secrets = ["PRIVATE KEY"]
    for key in (lab.client_key, server.host_key):
        secrets += [line for line in key.read_text().splitlines() if line and "PRIVATE KEY" not in line]
    texts = {f"lenstui {' '.join(o.args[3:6])}": o.stdout + o.stderr for o in outputs}
    run = server.runs_root / "B2"
    for path in [*run.iterdir(), server.log, *(tmp_path / "fetched").rglob("*")]:
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    assert {rundir.LOG_FILE, rundir.RUN_FILE, rundir.LAUNCH_FILE} <= {p.name for p in run.iterdir()}
    leaks = [(where, s[:12]) for where, text in texts.items() for s in secrets if s in text]
    assert leaks == []


# ---------------------------------------------------------------------------
# Checkpoints: weights only


class _Payload:
    """Pickles as a call to open(path, "w"): loading it with full pickle would create the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_with_a_pickled_object_is_refused_and_its_payload_never_runs(tmp_path, synth_root, capsys):
    from engine.training.evaluate import main as evaluate_main
    from engine.training.train import main as train_main
    from engine.training.stop import StopRequest

    mark = tmp_path / "pwned"
    runs = tmp_path / "runs"
    run = runs / "A1"
    run.mkdir(parents=True)
    evil = {"model": {}, "settings": {}, "status": "running", "epoch": 1, "payload": _Payload(mark)}
    torch.save(evil, run / rundir.LAST_CKPT)
    torch.save(evil, run / rundir.BEST_CKPT)

    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(run / rundir.LAST_CKPT)
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs)], synth_root)
    # Resuming from it: refused with a message, before anything runs.
    assert train_main(["--experiment", "A1", "--config", str(config), "--host", "local", "--device", "cpu"],
                      stop=StopRequest()) == 2
    err = capsys.readouterr().err
    assert str(run / rundir.LAST_CKPT) in err and "--fresh" in err
    # Evaluating it: refused too.
    rundir.write_run_info(run, {"experiment": "A1", "data_root": str(synth_root), "overrides": {}})
    rundir.write_metrics(run, rundir.new_metrics("A1", 1, {}))
    assert evaluate_main(["--run", str(run), "--split", "val", "--config", str(config), "--device", "cpu"]) == 2
    assert "cannot load checkpoint" in (run / rundir.LOG_FILE).read_text()
    assert _markers(tmp_path) == []


def test_every_torch_load_in_the_code_asks_for_weights_only():
    calls = []
    for path in [*(PROJECT_ROOT / "engine").rglob("*.py"), *(PROJECT_ROOT / "lenstui").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load") and \
                    "torch" in ast.unparse(node.func):
                kw = {k.arg: k.value for k in node.keywords}
                calls.append((path.name, node.lineno, isinstance(kw.get("weights_only"), ast.Constant)
                              and kw["weights_only"].value is True))
    assert calls and all(ok for _, _, ok in calls), calls


# ---------------------------------------------------------------------------
# No shell


def test_the_local_transport_and_the_launcher_never_use_a_shell(tmp_path, monkeypatch):
    """Every process lenstui and the engine start locally, recorded: argv lists, shell=False."""
    from engine.protocol import launch as engine_launch

    calls: list[tuple[object, bool]] = []
    real_init = subprocess.Popen.__init__

    def recording_init(self, args, *a, **kw):
        calls.append((args, bool(kw.get("shell", False))))
        return real_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    work, runs = tmp_path / "work", tmp_path / "runs"
    work.mkdir()
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs, work)])
    fleet = Fleet(load_config(config), config)
    fleet.local_status_in_process = False  # the status probe as a process too
    try:
        fleet.sync("local")
        standin_work(work)
        launched = fleet.launch("B1", "local", extra_args=["--epoch-seconds", "0.2"])
        poll_until(fleet, "local", "B1", lambda e: e["state"] == "running", timeout=30)
        fleet.logs("B1", "local")
        fleet.preflight("local")
        fleet.abort("B1", "local", grace=2)
        # The host side, in this process: start and abort spawn and signal without a shell.
        train = [sys.executable, "-m", "engine.train", "--experiment", "B2", "--host", "local",
                 "--config", str(config), "--epoch-seconds", "0.2"]
        monkeypatch.chdir(work)
        started = engine_launch.start("B2", runs, train, gpu="cpu")
        engine_launch.abort("B2", runs, grace=2)
    finally:
        fleet.close()
    assert group_alive(launched.pgid) == [] and group_alive(started["pgid"]) == []
    assert len(calls) >= 6
    assert all(isinstance(args, (list, tuple)) and not shell for args, shell in calls), calls


def test_no_source_file_asks_for_a_shell():
    """Supplementary: no shell=True, os.system, os.popen or pty.spawn anywhere in engine/ or lenstui/."""
    found = []
    for path in [*(PROJECT_ROOT / "engine").rglob("*.py"), *(PROJECT_ROOT / "lenstui").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("os.system", "os.popen", "pty.spawn", "subprocess.getoutput",
                            "subprocess.getstatusoutput"):
                    found.append(f"{path.name}:{node.lineno} {name}")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        found.append(f"{path.name}:{node.lineno} shell={ast.unparse(kw.value)}")
    assert found == []
