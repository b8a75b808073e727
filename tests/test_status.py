"""The host-side status probe (engine.status): GPUs, runs reconciled with the process table, one JSON answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from engine.protocol import gpus as gpu_module
from engine.protocol import rundir, status
from sshd import install_engine, local_host_toml, wait_for, write_config

FAKE_SMI = r'''#!/bin/sh
# A fake nvidia-smi: two GPUs; GPU 0 runs process $FAKE_GPU_PID.
case "$1" in
  --query-gpu=*) printf '0, GPU-aaaa, NVIDIA H100 80GB HBM3, 97, 40123, 81559, 71, 512.25\n1, GPU-bbbb, NVIDIA H100 80GB HBM3, 0, 3, 81559, 33, [N/A]\n' ;;
  --query-compute-apps=*) printf 'GPU-aaaa, %s, 40000\n' "$FAKE_GPU_PID" ;;
  *) echo "unexpected $*" >&2; exit 9 ;;
esac
'''


@pytest.fixture
def no_nvml(monkeypatch):
    """Make the probe fall back past NVML, as on a machine without the NVIDIA driver."""
    monkeypatch.setattr(gpu_module, "_gpus_from_nvml", lambda: (None, "NVML unavailable (test)"))


@pytest.fixture
def fake_smi(tmp_path, monkeypatch, no_nvml):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return smi


class FakeNvml(types.ModuleType):
    """pynvml as nvidia-ml-py presents it, for two GPUs: counts inits, can lose a GPU."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.inits = self.shutdowns = 0
        self.lost = False

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        if self.lost:
            raise RuntimeError("GPU is lost")
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int):
        return b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H100 80GB HBM3"   # old and new nvidia-ml-py

    def nvmlDeviceGetMemoryInfo(self, h: int):
        return types.SimpleNamespace(used=40_000 * 2**20, total=81_559 * 2**20)

    def nvmlDeviceGetComputeProcesses(self, h: int):
        # In a container NVML may not know a process's memory: 2**64 - 1, "not available".
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=2**64 - 1 if h else 39_000 * 2**20)]

    def nvmlDeviceGetUtilizationRates(self, h: int):
        return types.SimpleNamespace(gpu=97)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 71

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise RuntimeError("Not Supported")   # some boards do not report power
        return 512_250


def test_nvml_is_initialised_once_per_process_and_its_gaps_are_missing_values(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(gpu_module, "_nvml", None)
    for _ in range(3):   # three polls of one status server
        gpus, source, note = gpu_module.gpu_snapshot()
    assert nvml.inits == 1 and nvml.shutdowns == 0, "no init/shutdown per poll"
    assert source == "nvml" and note is None
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert gpus[0]["processes"] == [{"pid": 4242, "used_memory_mib": 39_000}]
    assert gpus[1]["processes"] == [{"pid": 4242, "used_memory_mib": None}], "NVML's not-available, not 16 EiB"
    assert (gpus[0]["power_w"], gpus[1]["power_w"]) == (512.25, None)
    assert gpus[0]["memory_used_mib"] == 40_000 and gpus[0]["utilization"] == 97

    nvml.lost = True     # the query fails: NVML is shut down and initialised afresh on the next poll
    assert gpu_module._gpus_from_nvml() == (None, "NVML query failed (GPU is lost)")
    nvml.lost = False
    gpus, source, _ = gpu_module.gpu_snapshot()
    assert source == "nvml" and len(gpus) == 2 and (nvml.inits, nvml.shutdowns) == (2, 1)


def test_a_machine_without_gpus_says_so(tmp_path, monkeypatch, no_nvml):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    answer = status.probe(tmp_path / "runs")
    assert answer["gpus"] == [] and answer["gpu_source"] == "none"
    assert answer["gpu_note"].startswith("no GPU") and "nvidia-smi not found" in answer["gpu_note"]
    assert answer["runs"] == {} and answer["runs_root_exists"] is False


def test_nvidia_smi_csv_is_parsed_and_the_gpu_process_named_by_its_run(tmp_path, monkeypatch, fake_smi):
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        directory = tmp_path / "runs" / "B2"
        directory.mkdir(parents=True)
        ident = rundir.process_identity(run.pid)
        rundir.write_run_info(directory, {**rundir.identity_record(ident), "pgid": run.pid, "status": "running"})
        rundir.write_metrics(directory, rundir.new_metrics("B2", 50, {}))
        monkeypatch.setenv("FAKE_GPU_PID", str(run.pid))
        answer = status.probe(tmp_path / "runs")
    finally:
        run.kill()
        run.wait()
    assert answer["gpu_source"] == "nvidia-smi"
    g0, g1 = answer["gpus"]
    assert (g0["index"], g0["name"], g0["utilization"], g0["memory_used_mib"], g0["memory_total_mib"],
            g0["temperature_c"], g0["power_w"]) == (0, "NVIDIA H100 80GB HBM3", 97, 40123, 81559, 71, 512.25)
    assert g0["processes"] == [{"pid": run.pid, "used_memory_mib": 40000, "experiment": "B2"}]
    assert g1["power_w"] is None and g1["processes"] == []  # "[N/A]" is a missing value
    assert answer["runs"]["B2"]["state"] == "running" and answer["runs"]["B2"]["gpu"] == "0"


def test_the_status_command_prints_one_json_object_and_watch_prints_lines(tmp_path, fake_smi):
    env = dict(os.environ, FAKE_GPU_PID="999999")
    done = subprocess.run([sys.executable, "-m", "engine.status", "--runs-root", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert {"engine_version", "host", "time", "gpus", "gpu_source", "gpu_note", "runs"} <= answer.keys()
    watch = subprocess.Popen([sys.executable, "-m", "engine.status", "--runs-root", str(tmp_path), "--watch", "0.05"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second = json.loads(watch.stdout.readline()), json.loads(watch.stdout.readline())
    assert second["time"] > first["time"]
    watch.stdout.close()  # the reader goes away: the watcher ends by itself, quietly
    assert watch.wait(timeout=10) == 0
    assert "Traceback" not in watch.stderr.read()


def launched_standin(tmp_path) -> tuple[Path, int]:
    """A stand-in run started through engine.launch; returns (run dir, pgid)."""
    work, runs = tmp_path / "work", tmp_path / "runs"
    install_engine(work)
    config = write_config(tmp_path / "experiments.toml", [local_host_toml(runs, work)])
    done = subprocess.run([sys.executable, "-m", "engine.launch", "start", "--experiment", "A1", "--runs-root",
                           str(runs), "--", sys.executable, "-m", "engine.train", "--experiment", "A1", "--host",
                           "local", "--config", str(config), "--epoch-seconds", "0.05"],
                          cwd=work, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return runs / "A1", json.loads(done.stdout)["pgid"]


def test_a_run_killed_with_sigkill_is_lost_not_running(tmp_path, no_nvml):
    directory, pgid = launched_standin(tmp_path)
    try:
        entry = wait_for(lambda: (e := status.probe(directory.parent)["runs"]["A1"])["epoch"] is not None and e)
        assert entry["state"] == "running" and entry["pgid"] == pgid
        assert entry["history"][0]["train_loss"] == 1.0 and entry["epochs_planned"] == 1000
    finally:
        os.killpg(pgid, signal.SIGKILL)
    entry = wait_for(lambda: (e := status.probe(directory.parent)["runs"]["A1"])["state"] == "lost" and e)
    assert "is gone" in entry["reason"] and entry["written_status"] == "running"


def test_a_pid_reused_by_another_process_is_lost(tmp_path, no_nvml):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        directory = tmp_path / "runs" / "B1"
        directory.mkdir(parents=True)
        real = rundir.process_identity(other.pid)
        rundir.write_run_info(directory, {"pid": other.pid, "pgid": other.pid, "cmdline": "python -m engine.train",
                                          "pid_start_ticks": real.start_ticks + 7, "status": "running"})
        rundir.write_metrics(directory, rundir.new_metrics("B1", 50, {}))
        entry = status.probe(tmp_path / "runs")["runs"]["B1"]
    finally:
        other.kill()
        other.wait()
    assert entry["state"] == "lost" and "belongs to another process" in entry["reason"]


def test_a_garbled_metrics_file_is_reported_per_run_and_history_is_capped(tmp_path, no_nvml):
    bad = tmp_path / "runs" / "B3"
    bad.mkdir(parents=True)
    (bad / rundir.METRICS_FILE).write_text('{"status": "runn')
    long = tmp_path / "runs" / "B4"
    long.mkdir()
    metrics = rundir.new_metrics("B4", 1000, {})
    metrics["status"] = "done"
    metrics["history"] = [{"epoch": e, "val_auroc": 0.5} for e in range(status.HISTORY_CAP + 50)]
    metrics["gates"] = [{"after_epochs": 0, "core_lr_auc": 0.7}, {"after_epochs": 5, "core_lr_auc": 0.58}]
    metrics["best_val_auroc"] = 0.93
    rundir.write_metrics(long, metrics)
    (tmp_path / "runs" / "not-a-run").mkdir()
    aside = tmp_path / "runs" / "B4.20260101-120000"  # an old run `train --fresh` moved aside
    aside.mkdir()
    rundir.write_metrics(aside, rundir.new_metrics("B4", 50, {}))
    runs = status.probe(tmp_path / "runs")["runs"]
    assert set(runs) == {"B3", "B4"}
    assert "not valid JSON" in runs["B3"]["errors"][0]
    b4 = runs["B4"]
    assert b4["state"] == "done" and b4["best_val_auroc"] == 0.93
    assert len(b4["history"]) == status.HISTORY_CAP and b4["history_truncated"]
    assert b4["history"][-1]["epoch"] == status.HISTORY_CAP + 49 and b4["epoch"] == status.HISTORY_CAP + 49
    assert b4["gate"]["after_epochs"] == 5 and len(b4["gates"]) == 2


def test_preflight_names_a_missing_module_with_the_install_command_and_a_missing_data_root(tmp_path):
    broken = tmp_path / "site" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no torch on this host (test)')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))  # this Python's torch is "missing"
    done = subprocess.run([sys.executable, "-m", "engine.status", "--preflight", "--data-root", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120, env=env)
    answer = json.loads(done.stdout)
    assert done.returncode == 0
    assert set(answer["modules"]) == {"torch", "numpy", "sklearn", "pandas", "pyarrow", "threadpoolctl"}
    assert answer["modules"]["torch"] is None and answer["modules"]["numpy"]
    assert answer["missing"] == ["torch"] and answer["ok"] is False
    assert any("pip install torch" in p for p in answer["problems"])
    assert any("does not exist" in p for p in answer["problems"])


def test_preflight_asks_for_every_third_party_module_the_engine_imports():
    """A host whose Python lacked pandas passed preflight, then every launch died importing it."""
    import ast

    engine_dir = Path(status.__file__).resolve().parents[1]   # engine/, every layer of it
    imported = set()
    paths = sorted(engine_dir.rglob("*.py"))
    assert len(paths) > 40, "the whole engine was read"
    for path in paths:
        for node in ast.parse(path.read_text()).body:   # module level: what importing the module needs
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            imported |= {n.split(".")[0] for n in names}
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("engine", "__future__")}
    assert third_party - {"tomli"} <= set(status.TRAIN_MODULES), third_party - set(status.TRAIN_MODULES)


# -- the long-lived server: engine.status --serve ---------------------------------------------


class Served:
    """`python -m engine.status --serve` as a child process, read one line at a time."""

    def __init__(self, runs: Path, *extra: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.status", "--serve", "--runs-root", str(runs),
                                      *extra], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.hello = self.line()

    def ask(self, request: dict | str) -> dict:
        self.proc.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
        self.proc.stdin.flush()
        return self.line()

    def line(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _done_run(runs: Path, exp: str, epochs: int) -> Path:
    directory = runs / exp
    directory.mkdir(parents=True, exist_ok=True)
    metrics = rundir.new_metrics(exp, 50, {})
    metrics["status"] = "done"
    metrics["history"] = [{"epoch": e, "val_auroc": 0.6 + 0.01 * e} for e in range(epochs)]
    metrics["gates"] = [{"after_epochs": 0, "core_lr_auc": 0.6}]
    rundir.write_metrics(directory, metrics)
    return directory


def test_serve_answers_every_request_afresh_and_resends_history_only_when_it_changed(tmp_path, no_nvml):
    runs = tmp_path / "runs"
    _done_run(runs, "A1", 3)
    _done_run(runs, "B1", 2)
    server = Served(runs)
    try:
        assert server.hello["serve"] == status.SERVE_PROTOCOL and server.hello["pid"] == server.proc.pid
        first = server.ask({"id": 1, "full": True})
        assert first["id"] == 1
        assert [r["epoch"] for r in first["status"]["runs"]["A1"]["history"]] == [0, 1, 2]
        assert "unchanged" not in first["status"]["runs"]["A1"]

        second = server.ask({"id": 2})
        assert second["status"]["time"] > first["status"]["time"]  # computed for this request, not cached
        for exp in ("A1", "B1"):
            entry = second["status"]["runs"][exp]
            assert entry["unchanged"] == ["history", "gates"] and "history" not in entry and "gates" not in entry
            assert entry["state"] == "done" and entry["epoch"] == first["status"]["runs"][exp]["epoch"]

        _done_run(runs, "A1", 4)   # a new epoch: A1's history changed (its gates did not), B1 did not
        _done_run(runs, "C1", 1)   # and a new run appeared
        third = server.ask({"id": 3})["status"]["runs"]
        assert [r["epoch"] for r in third["A1"]["history"]] == [0, 1, 2, 3] and third["A1"]["unchanged"] == ["gates"]
        assert third["B1"]["unchanged"] == ["history", "gates"]
        assert "unchanged" not in third["C1"] and third["C1"]["history"]

        assert "history" in server.ask({"id": 4, "full": True})["status"]["runs"]["B1"]  # full: everything
        bad = server.ask("this is not JSON")
        assert bad["id"] is None and "bad request" in bad["error"]
        assert server.ask({"id": 5})["id"] == 5   # and it goes on
        server.proc.stdin.close()                 # end of input: the server ends, quietly
        assert server.proc.wait(timeout=10) == 0
        assert "Traceback" not in server.proc.stderr.read()
    finally:
        server.close()


def test_serve_ends_after_idling_and_asks_to_be_restarted_when_its_engine_code_changes(tmp_path, no_nvml):
    idle = Served(tmp_path / "runs", "--idle-exit", "0.5")   # a client that vanished without closing the link
    try:
        assert idle.proc.wait(timeout=10) == 0
    finally:
        idle.close()

    work = tmp_path / "work"
    install_engine(work)
    server = Served(tmp_path / "runs", cwd=work)  # runs this copy of the engine, as a host does
    try:
        assert "status" in server.ask({"id": 1})
        rundir_py = work / "engine" / "protocol" / "rundir.py"   # `lenstui sync` replaces a module the server has loaded
        rundir_py.write_text(rundir_py.read_text() + "\n# changed\n")
        answer = server.ask({"id": 2})
        assert answer["id"] == 2 and "changed" in answer["restart"] and "status" not in answer
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.close()


def test_serve_refuses_to_go_with_watch(tmp_path):
    done = subprocess.run([sys.executable, "-m", "engine.status", "--serve", "--watch", "1", "--runs-root",
                           str(tmp_path)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "--serve and --watch" in done.stderr
