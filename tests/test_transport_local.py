"""The local transport and the Fleet on the local host: argv without a shell, files, launch/status/logs/abort."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from engine import files

from engine.protocol import rundir
from engine.config import load_config
from lenstui.fleet import Fleet, FleetError, host_paths
from lenstui.transport.base import CommandTimeout, RemoteFileNotFound, TransportError
from lenstui.transport.local import LocalTransport
from sshd import PROJECT_ROOT, group_alive, install_engine, local_host_toml, wait_for, write_config

ECHO = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]
NASTY = ["$(touch {m}1)", "; touch {m}2", "`touch {m}3`", "a'b\"c", "| touch {m}4", "&& touch {m}5", "*", "~"]


def test_arguments_reach_the_program_literally_and_never_run_as_shell(tmp_path):
    mark = tmp_path / "pwned"
    args = [a.format(m=mark) for a in NASTY]
    cwd = tmp_path / "dir $(touch x) ; rm -rf y"
    cwd.mkdir()
    done = LocalTransport().run([*ECHO, *args], cwd=str(cwd), timeout=30)
    assert done.rc == 0 and json.loads(done.stdout) == args
    assert not list(tmp_path.glob("pwned*"))


def test_newlines_and_nul_in_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="newline"):
        LocalTransport().run([*ECHO, "a\nb"], timeout=5)


def test_a_slow_command_times_out_and_a_missing_folder_is_named(tmp_path):
    with pytest.raises(CommandTimeout, match="did not finish within 0.3 s"):
        LocalTransport().run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    with pytest.raises(TransportError, match="nowhere"):
        LocalTransport().run(ECHO, cwd=str(tmp_path / "nowhere"), timeout=5)


def test_read_and_tail_files(tmp_path):
    t, log = LocalTransport(), tmp_path / "stdout.log"
    log.write_bytes(b"0123456789")
    assert t.read_file(str(log), 100) == b"0123456789"
    with pytest.raises(TransportError, match="larger than 5 bytes"):
        t.read_file(str(log), 5)
    assert t.tail_file(str(log), -4) == (b"6789", 10)
    with log.open("ab") as f:
        f.write(b"abc")
    assert t.tail_file(str(log), 10) == (b"abc", 13)
    assert t.tail_file(str(log), 13) == (b"", 13)
    log.write_bytes(b"new")  # replaced by a shorter file: start again
    assert t.tail_file(str(log), 13) == (b"new", 3)
    with pytest.raises(RemoteFileNotFound):
        t.tail_file(str(tmp_path / "missing.log"), 0)


def test_put_files_copies_only_what_changed(tmp_path):
    t, src = LocalTransport(), tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("a = 1\n")
    (src / "b.py").write_text("b = 2\n")
    pairs = [(src / n, str(tmp_path / "dest" / "pkg" / n)) for n in ("a.py", "b.py")]
    assert len(t.put_files(pairs).sent) == 2
    again = t.put_files(pairs)
    assert again.sent == [] and again.skipped == 2
    (src / "b.py").write_text("b = 22\n")
    assert t.put_files(pairs).sent == [str(tmp_path / "dest" / "pkg" / "b.py")]
    assert (tmp_path / "dest" / "pkg" / "b.py").read_text() == "b = 22\n"
    t.get_file(str(tmp_path / "dest" / "pkg" / "a.py"), tmp_path / "back" / "a.py")
    assert (tmp_path / "back" / "a.py").read_text() == "a = 1\n"


def test_the_local_host_resolves_dot_to_the_config_folder_and_the_venv_inside_it(tmp_path):
    text = write_config(tmp_path / "x.toml", [local_host_toml(Path("runs"))]).read_text()
    text = text.replace(f'work_dir = "{PROJECT_ROOT}"', 'work_dir = "."').replace(
        f'python = "{sys.executable}"', 'python = ".venv/bin/python"').replace('runs_root = "runs"', 'runs_root = "runs"')
    config_path = tmp_path / "clone" / "experiments.toml"
    config_path.parent.mkdir()
    config_path.write_text(text)
    config = load_config(config_path)
    paths = host_paths(config, config.host("local"), config_path)
    assert paths.work_dir == str(tmp_path / "clone")
    assert paths.python == str(tmp_path / "clone" / ".venv" / "bin" / "python")
    assert paths.runs_root == str(tmp_path / "clone" / "runs")
    assert paths.config_file == str(config_path)


# -- the Fleet on the local host ------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path):
    work, runs = tmp_path / "work", tmp_path / "runs"
    install_engine(work)
    config_path = write_config(tmp_path / "experiments.toml", [local_host_toml(runs, work)])
    f = Fleet(load_config(config_path), config_path)
    yield f
    f.close()
    for d in runs.glob("*"):
        info = rundir.read_run_info(d).data or {}
        if info.get("pgid") and group_alive(info["pgid"]):
            os.killpg(info["pgid"], signal.SIGKILL)


def test_fleet_launches_polls_tails_and_aborts_a_local_run(fleet):
    snap = fleet.poll("local")
    assert snap.connected and snap.configured and snap.status["runs"] == {}
    result = fleet.launch("A1", "local", extra_args=["--epoch-seconds", "0.05"])
    assert result.gpu == "cpu" and result.pid == result.pgid
    entry = wait_for(lambda: (e := fleet.poll("local").status["runs"].get("A1")) and e["epoch"] is not None and e)
    assert entry["state"] == "running" and entry["pid"] == result.pid
    with pytest.raises(FleetError, match="already running") as err:
        fleet.launch("A1", "local")
    assert err.value.code == 3
    assert "lenstui launch of A1" in fleet.logs("A1", "local")
    assert "epoch 0 done" in wait_for(lambda: "epoch 0 done" in fleet.logs("A1", "local") and fleet.logs("A1", "local"))
    aborted = fleet.abort("A1", "local", grace=10)
    assert aborted.signalled and aborted.remaining == []
    assert group_alive(result.pgid) == []
    assert fleet.poll("local").status["runs"]["A1"]["state"] == "aborted"


def test_fleet_refuses_unknown_experiments_bad_gpus_and_disabled_hosts(fleet, tmp_path):
    with pytest.raises(FleetError, match="unknown experiment 'A9'") as err:
        fleet.launch("A9", "local")
    assert err.value.code == 2
    with pytest.raises(FleetError, match="expected a GPU index"):
        fleet.launch("A1", "local", gpu="$(reboot)")
    with pytest.raises(FleetError, match="unknown host"):
        fleet.poll("nowhere")
    with pytest.raises(FleetError, match="has no log on local yet"):
        fleet.logs("B1", "local")


def test_sync_removes_the_engine_files_this_engine_no_longer_has_and_nothing_else(fleet, tmp_path):
    work = tmp_path / "work"
    engine = work / "engine"
    # An engine synced before engine/ had its layers: flat modules that are now elsewhere.
    for stale in ("verdicts.py", "rundir.py", "old_pkg/thing.py"):
        (engine / stale).parent.mkdir(parents=True, exist_ok=True)
        (engine / stale).write_text("STALE = True\n")
    (engine / "__pycache__").mkdir(exist_ok=True)
    (engine / "__pycache__" / "verdicts.cpython-311.pyc").write_bytes(b"cache")   # Python's, not ours
    (work / "notes.txt").write_text("mine\n")                    # outside engine/: never touched
    (tmp_path / "elsewhere.py").write_text("STALE = True\n")
    result = fleet.sync("local")
    assert sorted(Path(p).relative_to(engine).as_posix() for p in result.removed) == \
        ["old_pkg/thing.py", "rundir.py", "verdicts.py"]
    assert not (engine / "verdicts.py").exists() and not (engine / "old_pkg" / "thing.py").exists()
    assert (engine / "protocol" / "rundir.py").exists() and (engine / "code_version.json").exists()
    assert (work / "notes.txt").read_text() == "mine\n" and (tmp_path / "elsewhere.py").exists()
    assert (engine / "__pycache__" / "verdicts.cpython-311.pyc").exists()
    assert "3 removed" in result.message
    assert fleet.sync("local").removed == [], "a second sync finds nothing stale"


def test_sync_never_removes_anything_from_the_tree_lenstui_runs_from(tmp_path):
    """The local host whose work_dir is this project: sync has nothing to push and deletes nothing."""
    config = write_config(tmp_path / "experiments.toml", [local_host_toml(tmp_path / "runs", PROJECT_ROOT)])
    fleet = Fleet(load_config(config), config)
    try:
        result = fleet.sync("local")
    finally:
        fleet.close()
    assert result.removed == [] and result.sent == [] and "nothing to push" in result.message
    assert (PROJECT_ROOT / "engine" / "config.py").exists()
    assert (PROJECT_ROOT / "experiments.toml").read_bytes() != config.read_bytes(), \
        "the project's experiments.toml is not replaced by the --config given"


def test_sync_to_a_separate_work_dir_pushes_only_changes_and_fetch_copies_a_run(fleet, tmp_path):
    (tmp_path / "work" / "engine" / "config.py").unlink()  # the host's copy is missing one file
    (tmp_path / "work" / "engine" / "protocol" / "rundir.py").write_text("# stale\n")  # and has an old one
    first = fleet.sync("local")
    pushed = sorted(Path(p).name for p in first.sent)
    # (train.py too: the fixture put the stand-in where the real one goes)
    assert [n for n in pushed if n != "train.py"] == ["code_version.json", "config.py", "experiments.toml",
                                                      "rundir.py"]
    assert first.skipped > 3  # the rest was already there, same size and mtime
    assert (tmp_path / "work" / "experiments.toml").exists()
    version = json.loads((tmp_path / "work" / "engine" / "code_version.json").read_text())
    assert version["code_version"] == first.code_version and "engine-" in first.code_version
    # One version string: what a run on that host records is what sync pushed (and when).
    from engine.protocol.codeversion import code_version
    assert code_version(tmp_path / "work" / "engine").startswith(first.code_version + " (synced ")
    again = fleet.sync("local")
    assert [p for p in again.sent if not p.endswith("code_version.json")] == []
    run = tmp_path / "runs" / "B1"
    run.mkdir(parents=True)
    rundir.write_metrics(run, rundir.new_metrics("B1", 3, {}))
    (run / rundir.LOG_FILE).write_text("hello\n")
    (run / "last.pt").write_bytes(b"x" * 10)
    dest = fleet.fetch("B1", "local", tmp_path / "fetched")
    assert sorted(p.name for p in dest.iterdir()) == ["metrics.json", "stdout.log"]


def test_local_python_keeps_the_venv_symlink(tmp_path):
    """A venv's bin/python is a symlink to the base interpreter; following it loses the venv's packages."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    link = tmp_path / "venv" / "bin" / "python"
    link.symlink_to(sys.executable)
    shipped = (PROJECT_ROOT / "experiments.toml").read_text()
    config_path = tmp_path / "experiments.toml"
    config_path.write_text(shipped.replace('python = ".venv/bin/python"', 'python = "venv/bin/python"'))
    paths = host_paths(load_config(config_path), load_config(config_path).host("local"), config_path)
    assert paths.python == str(link)


# -- long-lived programs: line streams and the status server ---------------------------------

LINE_SERVER = r'''
import os, sys, time
print(os.getpid(), flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "quit":
        print("bye from the server", file=sys.stderr)
        sys.exit(3)
    if word == "sleep":
        time.sleep(60)
    print(word.upper(), flush=True)
'''


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2:].startswith("Z")


def test_a_line_stream_talks_to_a_program_and_says_how_it_ended(tmp_path):
    from lenstui.transport.base import StreamClosed

    t, script = LocalTransport(), tmp_path / "line_server.py"
    script.write_text(LINE_SERVER)
    stream = t.start([sys.executable, str(script)], cwd=str(tmp_path))
    pid = int(stream.read_line(10))
    stream.send_line("hello")
    assert stream.read_line(10) == "HELLO"
    with pytest.raises(ValueError, match="newline"):
        stream.send_line("two\nlines")
    stream.send_line("sleep")
    with pytest.raises(CommandTimeout, match="did not answer within 0.3 s"):
        stream.read_line(0.3)
    stream.close()   # a program that does not end by itself is killed
    assert not _alive(pid)

    stream = t.start([sys.executable, str(script)])
    stream.read_line(10)
    stream.send_line("quit")
    with pytest.raises(StreamClosed, match="exited with status 3: bye from the server") as ended:
        stream.read_line(10)
    assert ended.value.rc == 3 and "bye from the server" in ended.value.stderr
    stream.close()
    with pytest.raises(TransportError, match="nowhere"):
        t.start(ECHO, cwd=str(tmp_path / "nowhere"))


def _done_runs(runs: Path) -> None:
    for exp, epochs in (("A1", 3), ("B1", 2)):
        d = runs / exp
        d.mkdir(parents=True)
        m = rundir.new_metrics(exp, 50, {})
        m["status"] = "done"
        m["history"] = [{"epoch": e, "val_auroc": 0.7} for e in range(epochs)]
        m["gates"] = [{"after_epochs": 0, "core_lr_auc": 0.6}]
        rundir.write_metrics(d, m)


def _as_sent(obj):
    return json.loads(json.dumps(files.json_safe(obj)))


def test_the_local_host_through_its_status_server_answers_as_the_probe_and_survives_the_server(fleet, tmp_path):
    from engine.protocol.status import probe
    from status_servers import status_servers

    runs = tmp_path / "runs"
    _done_runs(runs)
    fleet.local_status_in_process = False   # the same protocol as an SSH host, over a pipe
    first = fleet.poll("local")
    assert first.connected and first.error is None
    (pid,) = status_servers(runs)
    for _ in range(2):  # later answers leave unchanged histories out; the Fleet puts them back
        snap = fleet.poll("local")
        assert snap.error is None and snap.status["runs"] == _as_sent(probe(runs)["runs"])
    assert status_servers(runs) == [pid]   # one server for every poll

    os.kill(pid, signal.SIGKILL)   # the server dies between two polls: the next poll starts another
    wait_for(lambda: pid not in status_servers(runs))
    snap = fleet.poll("local")
    assert snap.error is None and snap.status["runs"]["A1"]["history"][-1]["epoch"] == 2
    (again,) = status_servers(runs)
    assert again != pid
    fleet.close()
    assert status_servers(runs) == []


def test_a_hung_status_server_is_reported_killed_and_replaced(fleet, tmp_path, monkeypatch):
    import lenstui.fleet as fleet_module
    from status_servers import status_servers

    status_py = tmp_path / "work" / "engine" / "protocol" / "status.py"   # the host's engine hangs while HANG exists
    text = status_py.read_text()
    hook = "    root = Path(os.path.expanduser(str(runs_root)))\n"
    assert hook in text
    status_py.write_text(text.replace(hook, hook + "    while (root / 'HANG').exists():\n        time.sleep(0.05)\n"))
    runs = tmp_path / "runs"
    _done_runs(runs)
    monkeypatch.setattr(fleet_module, "POLL_TIMEOUT", 1.0)
    fleet.local_status_in_process = False
    assert fleet.poll("local").error is None
    (pid,) = status_servers(runs)
    (runs / "HANG").write_text("")
    snap = fleet.poll("local")
    assert snap.connected and snap.status is None and "did not answer within 1 s" in snap.error
    assert not _alive(pid) and status_servers(runs) == []   # killed, not left hanging
    (runs / "HANG").unlink()
    assert fleet.poll("local").error is None   # a new server
    fleet.close()


def test_an_engine_without_serve_is_polled_the_old_way_and_told_to_sync(fleet, tmp_path):
    from status_servers import OLD_STATUS, status_servers

    engine = tmp_path / "work" / "engine"   # a host synced before --serve existed
    (engine / "status.py").write_text(OLD_STATUS)
    init = engine / "__init__.py"
    init.write_text(init.read_text().replace('ENGINE_VERSION = "', 'ENGINE_VERSION = "0.0.1"  # was "'))
    fleet.local_status_in_process = False
    for _ in range(2):
        snap = fleet.poll("local")
        assert snap.connected and snap.status and snap.status["host"] == "old", snap.error  # the old way works
        assert "runs engine 0.0.1" in snap.error and "run `lenstui sync --host local`" in snap.error
    fleet.sync("local")   # the current engine: served from now on
    snap = fleet.poll("local")
    assert snap.error is None and snap.status["host"] != "old"
    assert len(status_servers(tmp_path / "runs")) == 1
    fleet.close()
