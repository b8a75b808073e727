"""Host-side launch and abort (engine.launch): detached runs, one run per experiment, exact process-group abort."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import files

from engine.protocol import launch, rundir
from sshd import group_alive, install_engine, local_host_toml, wait_for, write_config


@pytest.fixture
def host(tmp_path):
    """A work_dir holding the engine with the stand-in train.py, a runs root and a config."""
    work, runs = tmp_path / "work", tmp_path / "runs"
    install_engine(work)
    config = write_config(tmp_path / "experiments.toml", [local_host_toml(runs, work)])
    started: list[int] = []
    yield {"work": work, "runs": runs, "config": config, "started": started}
    for pgid in started:  # never leave a stand-in behind, whatever the test did
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def engine_launch(h, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.launch", *args], cwd=h["work"], env=env,
                          capture_output=True, text=True, timeout=60)


def start(h, exp="A1", *train_args: str, gpu="auto", env=None) -> subprocess.CompletedProcess:
    train = [sys.executable, "-m", "engine.train", "--experiment", exp, "--host", "local",
             "--config", str(h["config"]), *train_args]
    done = engine_launch(h, "start", "--experiment", exp, "--runs-root", str(h["runs"]), "--gpu", gpu,
                         "--", *train, env=env)
    if done.returncode == 0:
        h["started"].append(json.loads(done.stdout)["pgid"])
    return done


def running_info(h, exp="A1") -> dict:
    """run.json once the stand-in has written it."""
    return wait_for(lambda: rundir.read_run_info(h["runs"] / exp).data)


def test_launch_detaches_the_run_holding_the_lock_and_abort_leaves_no_process(host):
    done = start(host)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    info = running_info(host)
    pgid = answer["pgid"]
    assert info["pid"] == answer["pid"] == pgid              # its own process group...
    assert os.getsid(answer["pid"]) == answer["pid"]         # ...and session: no terminal, no SSH session
    assert pgid != os.getpgid(0)
    assert info["lock_inherited"] is True                    # the child holds the launcher's lock
    grandchild = int(wait_for(lambda: (host["runs"] / "A1" / "grandchild.pid").exists()
                              and (host["runs"] / "A1" / "grandchild.pid").read_text()))
    assert sorted(group_alive(pgid)) == sorted([answer["pid"], grandchild])
    launched = json.loads((host["runs"] / "A1" / rundir.LAUNCH_FILE).read_text())
    assert launched["status"] == "pending" and launched["gpu"] == "cpu"
    log = (host["runs"] / "A1" / rundir.LOG_FILE).read_text()
    assert "lenstui launch of A1" in log and "command:" in log and "engine.train" in log

    again = start(host)
    assert again.returncode == 3
    assert "already running" in json.loads(again.stdout)["error"]

    stopped = engine_launch(host, "abort", "--experiment", "A1", "--runs-root", str(host["runs"]), "--grace", "10")
    assert stopped.returncode == 0, stopped.stderr
    result = json.loads(stopped.stdout)
    assert result["signalled"] and not result["killed"] and result["remaining"] == []
    assert group_alive(pgid) == []
    assert rundir.process_identity(grandchild) is None
    assert rundir.read_metrics(host["runs"] / "A1").data["status"] == "aborted"  # the run said so itself
    assert rundir.observe_run(host["runs"] / "A1").state is rundir.RunState.ABORTED


def test_a_relaunch_appends_to_the_log_with_a_second_header(host):
    assert start(host, "A1", "--epochs", "1", "--epoch-seconds", "0").returncode == 0
    wait_for(lambda: (rundir.read_metrics(host["runs"] / "A1").data or {}).get("status") == "done")
    wait_for(lambda: group_alive(host["started"][-1]) == [])
    assert start(host, "A1", "--epochs", "1", "--epoch-seconds", "0").returncode == 0
    log = host["runs"] / "A1" / rundir.LOG_FILE
    wait_for(lambda: log.read_text().count("epoch 0 done") == 2)
    assert log.read_text().count("lenstui launch of A1") == 2


def test_abort_sigkills_after_the_grace_period_and_records_aborted(host):
    assert start(host, "B1", "--ignore-term").returncode == 0
    pgid = running_info(host, "B1")["pgid"]
    wait_for(lambda: len(group_alive(pgid)) == 2)
    stopped = engine_launch(host, "abort", "--experiment", "B1", "--runs-root", str(host["runs"]), "--grace", "0.5")
    result = json.loads(stopped.stdout)
    assert stopped.returncode == 0 and result["killed"] is True and result["remaining"] == []
    assert group_alive(pgid) == []
    assert rundir.read_metrics(host["runs"] / "B1").data["status"] == "aborted"
    assert "stand-in: ignoring SIGTERM" in (host["runs"] / "B1" / rundir.LOG_FILE).read_text()


def test_racing_launches_start_exactly_one_run(host):
    barrier = threading.Barrier(3)
    results: list[subprocess.CompletedProcess] = []

    def go():
        barrier.wait()
        results.append(start(host, "B2"))

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 3, 3], [r.stderr for r in results]
    pid = running_info(host, "B2")["pid"]
    assert host["started"] == [pid]
    engine_launch(host, "abort", "--experiment", "B2", "--runs-root", str(host["runs"]), "--grace", "5")
    assert group_alive(pid) == []


def test_abort_never_signals_a_pid_that_now_belongs_to_another_process(host, tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        directory = host["runs"] / "B3"
        directory.mkdir(parents=True)
        real = rundir.process_identity(bystander.pid)
        rundir.write_run_info(directory, {"pid": bystander.pid, "pgid": bystander.pid, "cmdline": "old training",
                                          "pid_start_ticks": real.start_ticks - 1000, "status": "running"})
        rundir.write_metrics(directory, rundir.new_metrics("B3", 50, {}))
        stopped = engine_launch(host, "abort", "--experiment", "B3", "--runs-root", str(host["runs"]))
        result = json.loads(stopped.stdout)
        assert stopped.returncode == 0 and result["signalled"] is False
        assert "belongs to another process" in result["message"]
        assert bystander.poll() is None  # untouched
    finally:
        bystander.kill()
        bystander.wait()


def test_abort_of_a_run_that_never_started_says_so(host):
    stopped = engine_launch(host, "abort", "--experiment", "B4", "--runs-root", str(host["runs"]))
    assert stopped.returncode == 0
    assert "never launched" in json.loads(stopped.stdout)["message"]


@pytest.mark.parametrize("args, words", [
    (["start", "--experiment", "A1;rm", "--runs-root", "R", "--", "true"], "not a plain name: use [A-Za-z0-9_.-]"),
    (["start", "--experiment", "A1", "--runs-root", "R", "--gpu", "first", "--", "true"], "expected a GPU index"),
    (["start", "--experiment", "A1", "--runs-root", "R"], "no training command"),
    (["start", "--experiment", "A1", "--runs-root", "R", "--require", "torch,no_such_module_xyz", "--", "true"],
     "lacks no_such_module_xyz"),
])
def test_bad_launch_input_is_refused_with_exit_code_2_and_words(host, tmp_path, args, words):
    args = [str(tmp_path / "r") if a == "R" else a for a in args]
    done = engine_launch(host, *args)
    assert done.returncode == 2
    assert words in json.loads(done.stdout)["error"] and "Traceback" not in done.stderr


def test_a_missing_training_program_is_reported_and_the_lock_released(host):
    done = engine_launch(host, "start", "--experiment", "A1", "--runs-root", str(host["runs"]), "--",
                         str(host["work"] / "no-such-python"))
    assert done.returncode == 2 and "cannot start" in json.loads(done.stdout)["error"]
    assert "launch failed" in (host["runs"] / "A1" / rundir.LOG_FILE).read_text()
    os.close(rundir.acquire_run_lock(host["runs"] / "A1"))  # free again


# -- a launch that ends within seconds, an abort while the engine starts ----------------------

REFUSING_TRAIN = ("import sys; print('engine.train: runs/B2 was started with other settings (epochs: was 30, "
                  "now 50); pass the same options to resume it', file=sys.stderr); sys.exit(2)")


def test_a_launch_that_ends_at_once_is_a_failed_launch_with_the_engines_reason(host):
    done = engine_launch(host, "start", "--experiment", "B2", "--runs-root", str(host["runs"]), "--wait", "20",
                         "--", sys.executable, "-c", REFUSING_TRAIN)
    assert done.returncode == 2, done.stdout
    error = json.loads(done.stdout)["error"]
    assert error.startswith("B2 ended ") and "(exit 2): runs/B2 was started with other settings" in error
    view = rundir.observe_run(host["runs"] / "B2")   # what the status probe shows afterwards
    assert view.state is rundir.RunState.FAILED and view.reason.startswith("the launch failed: runs/B2 was")
    assert view.launch_failure.startswith("runs/B2 was started with other settings (epochs: was 30, now 50)")


def test_a_failed_relaunch_keeps_the_earlier_state_and_says_why_it_failed(host):
    assert start(host, "B2", "--epochs", "1", "--epoch-seconds", "0").returncode == 0
    wait_for(lambda: (rundir.read_metrics(host["runs"] / "B2").data or {}).get("status") == "done")
    wait_for(lambda: group_alive(host["started"][-1]) == [])
    done = engine_launch(host, "start", "--experiment", "B2", "--runs-root", str(host["runs"]),
                         "--", sys.executable, "-c", REFUSING_TRAIN)   # no --wait: the status says it later
    assert done.returncode == 0
    wait_for(lambda: group_alive(json.loads(done.stdout)["pgid"]) == [])
    view = rundir.observe_run(host["runs"] / "B2")
    assert view.state is rundir.RunState.DONE, "the earlier run's numbers still stand"
    assert "started with other settings" in view.launch_failure


def test_wait_returns_once_the_engine_has_taken_the_run_over(host):
    done = start(host, "A1", "--epoch-seconds", "5")
    assert done.returncode == 0 and json.loads(done.stdout)["started"] is False   # no --wait: at once
    engine_launch(host, "abort", "--experiment", "A1", "--runs-root", str(host["runs"]), "--grace", "5")
    train = [sys.executable, "-m", "engine.train", "--experiment", "B1", "--host", "local",
             "--config", str(host["config"]), "--epoch-seconds", "5"]
    done = engine_launch(host, "start", "--experiment", "B1", "--runs-root", str(host["runs"]), "--wait", "30",
                         "--", *train)
    answer = json.loads(done.stdout)
    host["started"].append(answer["pgid"])
    assert done.returncode == 0 and answer["started"] is True
    assert rundir.read_run_info(host["runs"] / "B1").data["pid"] == answer["pid"]


def test_an_abort_while_the_engine_is_still_starting_reads_aborted_not_lost(host):
    slow_start = [sys.executable, "-c", "import time; time.sleep(60)"]   # never writes run.json
    done = engine_launch(host, "start", "--experiment", "B3", "--runs-root", str(host["runs"]), "--", *slow_start)
    assert done.returncode == 0
    host["started"].append(json.loads(done.stdout)["pgid"])
    assert rundir.observe_run(host["runs"] / "B3").state is rundir.RunState.PENDING
    stopped = engine_launch(host, "abort", "--experiment", "B3", "--runs-root", str(host["runs"]), "--grace", "5")
    assert json.loads(stopped.stdout)["signalled"] is True
    view = rundir.observe_run(host["runs"] / "B3")
    assert view.state is rundir.RunState.ABORTED, view.reason
    assert "before the engine wrote anything" in view.reason


# -- choosing a GPU ----------------------------------------------------------------------


def gpu(index, procs=(), used=10):
    return {"index": index, "name": f"GPU{index}", "memory_used_mib": used, "memory_total_mib": 80000,
            "processes": [{"pid": p, "used_memory_mib": 500} for p in procs]}


def test_auto_gpu_picks_the_first_gpu_without_processes_or_memory_in_use(tmp_path):
    gpus = [gpu(0, procs=[123]), gpu(1, used=30000), gpu(2)]
    choice = launch.choose_gpu("auto", tmp_path, gpus)
    assert (choice.visible, choice.label) == ("2", "2")


def test_auto_gpu_refuses_when_every_gpu_is_busy_and_names_them(tmp_path):
    with pytest.raises(launch.LaunchError) as err:
        launch.choose_gpu("auto", tmp_path, [gpu(0, procs=[5]), gpu(1, used=5000)])
    assert err.value.code == 3
    assert "GPU 0: 1 compute process" in str(err.value) and "GPU 1: 5000 MiB in use" in str(err.value)


def test_auto_gpu_skips_a_gpu_given_to_a_live_run_even_without_nvml_processes(host):
    assert start(host, "A1").returncode == 0
    pid = running_info(host)["pid"]
    record = json.loads((host["runs"] / "A1" / rundir.LAUNCH_FILE).read_text())
    record["gpu"] = "0"  # as if launched on GPU 0; NVML in a container often lists no process
    files.atomic_write_json(host["runs"] / "A1" / rundir.LAUNCH_FILE, record)
    choice = launch.choose_gpu("auto", host["runs"], [gpu(0), gpu(1)])
    assert choice.label == "1"
    os.killpg(pid, signal.SIGKILL)


def test_without_gpus_auto_runs_on_cpu_and_an_index_out_of_range_is_refused(tmp_path):
    choice = launch.choose_gpu("auto", tmp_path, [], "no GPU: nvidia-smi not found")
    assert choice.label == "cpu" and choice.visible == "" and "nvidia-smi not found" in choice.note
    with pytest.raises(launch.LaunchError, match="has GPUs 0, 1"):
        launch.choose_gpu("5", tmp_path, [gpu(0), gpu(1)])
    assert launch.choose_gpu("1", tmp_path, [gpu(0), gpu(1)]).visible == "1"


HOLD_LOCK = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from engine.protocol import rundir
rundir.acquire_run_lock(sys.argv[2])
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_a_relaunch_waits_for_a_dead_runs_lock_to_be_let_go_but_never_for_a_live_one(host):
    # A SIGKILLed trainer is a zombie (so "lost") while its other threads still hold the flock for a
    # moment; here another process stands for those threads, holding the lock 1.5 s.
    directory = host["runs"] / "A1"
    directory.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    files.atomic_write_json(directory / rundir.RUN_FILE, {"pid": dead.pid, "status": "running"})
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(host["work"]), str(directory), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    done = start(host)
    holder.wait()
    assert done.returncode == 0, done.stderr
    running_info(host)

    # The run's own process alive and holding the lock: refused at once, as ever.
    engine_launch(host, "abort", "--experiment", "A1", "--runs-root", str(host["runs"]), "--grace", "5")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(host["work"]), str(directory), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        files.atomic_write_json(directory / rundir.RUN_FILE, {"pid": holder.pid, "status": "running"})
        refused = start(host)
        assert refused.returncode == 3 and "already running" in refused.stderr, refused.stderr
    finally:
        holder.kill()
        holder.wait()
