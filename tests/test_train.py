"""`python -m engine.train`: real training on a tiny synthetic set, real processes, real signals.

A user's story: start a run, watch metrics.json while it trains, kill it, resume it, stop it
with SIGTERM, resume again, and get exactly the history an uninterrupted run would have had.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.protocol import rundir
from engine.protocol.codeversion import code_version
from engine.protocol.schema import (EPOCH_METRICS, EpochRow, GateRecord, Metrics, RunInfo, Verdict,
                                    undeclared)
from engine.training.evaluate import main as evaluate_main
from engine.training.checkpoint import load_checkpoint
from engine.protocol.runlog import RunLog
from engine.synthetic.twin import write_dataset
from engine.training.run_plan import make_plan
from engine.training.train import main, take_run_directory
from engine.training.stop import StopRequest

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop(rundir.LOCK_FD_ENV, None)
EPOCH_FIELDS = ("epoch", "train_loss", "val_auroc", "val_loss", "learning_rate")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synth"
    write_dataset(root, rows={"train": 96, "val": 96, "test": 96}, seed=42)
    return root


@pytest.fixture(scope="module")
def unpaired_root(tmp_path_factory) -> Path:
    """Enough LRGs that the unpaired view (disjoint LRGs, negatives matched per cell) is not tiny."""
    root = tmp_path_factory.mktemp("data") / "synth"
    write_dataset(root, rows={"train": 192, "val": 192, "test": 192}, seed=42)
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """The plan with tiny-data settings: a gate every epoch, small batches, no 10% sampling."""
    text = (ROOT / "experiments.toml").read_text()
    for key, value in {"gate_every_epochs": 1, "gate_n_samples": 40, "thetae_min_positives": 3,
                       "batch_size": 32, "sample_fraction": 1.0}.items():
        text, n = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert n == 1, key
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(text)
    return path


def _argv(config: Path, data_root: Path, runs: Path, exp: str, *extra: str) -> list[str]:
    return ["--experiment", exp, "--config", str(config), "--data-root", str(data_root),
            "--runs-root", str(runs), *extra]


def _train(*argv: str) -> list[str]:
    return [sys.executable, "-m", "engine.train", *argv]


def _metrics(run: Path) -> dict:
    return json.loads((run / rundir.METRICS_FILE).read_text())


def _wait_for(proc: subprocess.Popen, run: Path, epochs: int, timeout: float = 240) -> None:
    """Until metrics.json has `epochs` finished epochs (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended early: {proc.stdout.read() if proc.stdout else ''}"
        read = rundir.read_metrics(run)
        if read.data and len(read.data["history"]) >= epochs:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {epochs} epochs in {timeout}s")


def _curve(metrics: dict) -> list[tuple]:
    return [tuple(row[k] for k in EPOCH_FIELDS) for row in metrics["history"]]


# ---------------------------------------------------------------------------
# The whole run


def test_end_to_end_run_writes_every_file_and_metric(config, data_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = runs / "A1"
    proc = subprocess.Popen(_train(*_argv(config, data_root, runs, "A1", "--epochs", "2")), cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # A reader polling metrics.json in a tight loop never sees half a file.
    reads, garbled = 0, []
    while proc.poll() is None:
        text = (run / rundir.METRICS_FILE).read_text() if (run / rundir.METRICS_FILE).exists() else None
        if text is not None:
            try:
                json.loads(text)
                reads += 1
            except json.JSONDecodeError as exc:
                garbled.append(str(exc))
        time.sleep(0.001)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    assert garbled == [] and reads > 20

    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "stdout.log", "metrics.json", "run.json"}
    m = _metrics(run)
    assert m["status"] == "done" and m["experiment"] == "A1" and m["epochs_planned"] == 2
    assert m["overrides"] == {"epochs": 2, "data_root": str(data_root)}
    assert [r["epoch"] for r in m["history"]] == [1, 2], "epochs count from 1, as the log and the matrix do"
    # Every key written is declared in the schema (engine/protocol/schema.py), the one list of them.
    assert undeclared(m, Metrics) == []
    assert [undeclared(g, GateRecord) for g in m["gates"]] == [[]] * len(m["gates"])
    assert [undeclared(v, Verdict) for v in m["verdicts"].values()] == [[]] * len(m["verdicts"])
    for row in m["history"]:
        assert undeclared(row, EpochRow) == []
        assert set(EPOCH_METRICS) <= set(row)
        assert 0 <= row["val_auroc"] <= 1 and row["train_loss"] > 0 and row["epoch_time_sec"] > 0
        assert 0 < row["train_time_sec"] <= row["epoch_time_sec"]   # the training part of the epoch
    assert m["history"][1]["learning_rate"] < m["history"][0]["learning_rate"] == 1e-4  # cosine

    assert [g["after_epochs"] for g in m["gates"]] == [0, 1, 2]
    for gate in m["gates"]:
        assert 0 <= gate["core_lr_auc"] <= 1 and 0 <= gate["radial_lr_auc"] <= 1 and gate["gate_n_samples"] == 40
        assert [b["bin"] for b in gate["val_auroc_by_thetae"]] == \
            [[0.5, 0.75], [0.75, 1.0], [1.0, 1.5], [1.5, 2.0], [2.0, 2.5], [2.5, 3.0]]
        assert all({"auroc", "count", "note"} <= set(b) for b in gate["val_auroc_by_thetae"])

    best = max(m["history"], key=lambda r: r["val_auroc"])
    assert m["best_val_auroc"] == best["val_auroc"] and m["best_epoch"] == best["epoch"]
    assert load_checkpoint(run / "best.pt")["epoch"] + 1 == m["best_epoch"]   # checkpoints keep the loop's counter
    assert 0 <= m["final_core_lr_auc"] <= 1 and 0 <= m["final_radial_lr_auc"] <= 1
    assert m["final_gate_n_samples"] == 2 * 96  # paired view: every val row's stamp and control
    for key in ("core_sensitivity", "test_core_sensitivity"):
        assert [c["radius"] for c in m[key]] == [0, 3, 5, 7, 10, 15]
    s = {c["radius"]: c["auroc"] for c in m["core_sensitivity"]}
    assert s[0] == m["best_val_auroc"]
    assert m["core_reliance"] == pytest.approx(s[0] - s[7])
    assert 0 <= m["test_auroc"] <= 1 and len(m["test_auroc_by_thetae"]) == 6
    assert m["test_core_sensitivity"][0]["auroc"] == m["test_auroc"]
    assert set(m["verdicts"]) >= {"core_lr_auc", "radial_lr_auc", "core_reliance", "val_auroc", "test_auroc"}
    assert m["verdicts"]["test_auroc"]["value"] == m["test_auroc"]

    info = json.loads((run / "run.json").read_text())
    assert undeclared(info, RunInfo) == []
    for key in ("experiment", "host", "pid", "pgid", "pid_start_ticks", "cmdline", "command", "engine_version",
                "code_version", "dataset", "data_root", "config_sha256", "overrides", "device", "started_at",
                "ended_at", "exit_status", "status"):
        assert key in info, key
    assert info["pid"] == proc.pid and info["exit_status"] == 0 and info["status"] == "done"
    assert info["command"][1:4] == ["-m", "engine.train", "--experiment"]
    assert info["code_version"] == code_version(), "the run names the code that `lenstui sync` would name"
    assert info["training_step"] == "eager" and info["precision"] == "fp32"

    # Run by hand (stdout is a pipe): every line went to stdout and, once, to stdout.log.
    log = (run / "stdout.log").read_text()
    assert log == stdout
    assert log.count(" A1 start ") == 1 and log.count("epoch   2/2") == 1 and "overrides in force" in log

    # Starting it again does not retrain a finished run; evaluate reproduces the test numbers.
    assert main(_argv(config, data_root, runs, "A1", "--epochs", "2"), stop=StopRequest()) == 2
    err = capsys.readouterr().err
    assert "already done" in err and "--fresh" in err
    assert evaluate_main(["--run", str(run), "--split", "test", "--config", str(config)]) == 0
    after = _metrics(run)
    assert after["test_auroc"] == m["test_auroc"] and after["test_core_sensitivity"] == m["test_core_sensitivity"]
    assert after["history"] == m["history"] and "evaluate test" in (run / "stdout.log").read_text()


# ---------------------------------------------------------------------------
# Resume: after SIGKILL, after SIGTERM, after a stop in the middle of an epoch


B1_OPTIONS = ("--epochs", "3", "--limit-train", "64", "--limit-val", "64")


@pytest.fixture(scope="module")
def uninterrupted(config, unpaired_root, tmp_path_factory) -> dict:
    """B1, 3 epochs, straight through (in this process, one thread, like the subprocesses)."""
    runs = tmp_path_factory.mktemp("straight")
    assert main(_argv(config, unpaired_root, runs, "B1", *B1_OPTIONS), stop=StopRequest()) == 0
    m = _metrics(runs / "B1")
    assert m["bad_rows"]["train"]["of"] >= 64 and len(m["history"]) == 3
    return m


def test_kill_then_sigterm_then_resume_gives_the_uninterrupted_history(config, unpaired_root, tmp_path,
                                                                       uninterrupted):
    runs = tmp_path / "runs"
    run = runs / "B1"
    cmd = _train(*_argv(config, unpaired_root, runs, "B1", *B1_OPTIONS))

    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(first, run, 1)  # last.pt is written before metrics.json shows the epoch
    first.kill()  # SIGKILL: no chance to say anything
    first.communicate()
    assert _metrics(run)["status"] == "running"  # left behind for the status probe to call lost
    assert rundir.observe_run(run).state is rundir.RunState.LOST

    second = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(second, run, 2)
    second.send_signal(signal.SIGTERM)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM, out
    m = _metrics(run)
    assert m["status"] == "aborted"
    assert json.loads((run / "run.json").read_text())["exit_status"] == 128 + signal.SIGTERM
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["status"] == "running" and last["epoch"] >= 2 and "optimizer" in last and "rng" in last
    assert rundir.observe_run(run).state is rundir.RunState.ABORTED

    third = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    m = _metrics(run)
    assert m["status"] == "done"
    assert _curve(m) == _curve(uninterrupted)  # exactly, on CPU
    assert m["best_val_auroc"] == uninterrupted["best_val_auroc"] and m["test_auroc"] == uninterrupted["test_auroc"]
    assert [g["after_epochs"] for g in m["gates"]] == [0, 1, 2, 3]

    log = (run / "stdout.log").read_text()
    assert log.count(" B1 start ") == 1 and log.count(" B1 resumed from epoch ") == 2
    assert log.count("epoch   3/3") == 1 and "aborted on SIGTERM" in log


class StopAfter(StopRequest):
    """A stop request that arrives after the training loop has looked `n` times (after n batches)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    @property
    def requested(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.signum = signal.SIGTERM
        return self.signum is not None


def test_a_stop_in_the_middle_of_an_epoch_resumes_at_that_batch(config, unpaired_root, tmp_path, uninterrupted):
    runs = tmp_path / "runs"
    argv = _argv(config, unpaired_root, runs, "B1", *B1_OPTIONS)
    # 64 training rows, batches of 32: two per epoch. The loop looks once after loading the
    # data, after each batch and after each epoch: the 5th look is after epoch 2's first batch.
    assert main(argv, stop=StopAfter(4)) == 128 + signal.SIGTERM
    last = load_checkpoint(runs / "B1" / "last.pt")
    assert (last["epoch"], last["batch"]) == (1, 1)
    assert len(_metrics(runs / "B1")["history"]) == 1
    assert main(argv, stop=StopRequest()) == 0
    m = _metrics(runs / "B1")
    assert _curve(m) == _curve(uninterrupted)
    assert "resumed from epoch 1 batch 1" in (runs / "B1" / "stdout.log").read_text()


# ---------------------------------------------------------------------------
# Bad input, a busy run directory, --fresh, failures


def test_bad_input_is_a_message_and_exit_2(config, data_root, tmp_path, capsys):
    assert main(_argv(config, data_root, tmp_path, "B9")) == 2
    assert "unknown experiment 'B9'" in capsys.readouterr().err
    assert main(["--experiment", "A1", "--config", str(config), "--data-root", str(tmp_path / "nope"),
                 "--runs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "python -m engine.synth --out" in err
    # The host's dataset: the hint names its root, scale and seed from the config.
    nowhere = tmp_path / "nowhere"
    text = config.read_text().replace('root = "data/synthetic-demo"', f'root = "{nowhere}"')
    (tmp_path / "host.toml").write_text(text)
    assert main(["--experiment", "A1", "--config", str(tmp_path / "host.toml"), "--host", "local",
                 "--runs-root", str(tmp_path)]) == 2
    assert f"make the synthetic set with `python -m engine.synth --out {nowhere} --scale 0.1 --seed 42`" \
        in capsys.readouterr().err
    assert main(_argv(config, data_root, tmp_path, "B1", "--base", "B3")) == 2
    assert "only a Phase-4 experiment" in capsys.readouterr().err
    assert main(_argv(config, data_root, tmp_path, "B1", "--epochs", "0")) == 2
    assert main(["--experiment", "A1", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(_argv(config, data_root, tmp_path, "B1", "--device", "cpu", "--cuda-graph")) == 2
    assert "--cuda-graph: the training device is cpu; CUDA graphs need a GPU" in capsys.readouterr().err
    assert not (tmp_path / "B9").exists() and not (tmp_path / "A1").exists()


def test_a_second_process_on_the_same_run_exits_3(config, data_root, tmp_path, capsys):
    fd = rundir.acquire_run_lock(tmp_path / "B1")
    try:
        assert main(_argv(config, data_root, tmp_path, "B1"), stop=StopRequest()) == 3
        assert "already running" in capsys.readouterr().err
    finally:
        os.close(fd)


def test_fresh_moves_the_old_run_aside_and_never_deletes_it(config, data_root, tmp_path):
    old = tmp_path / "B2"
    old.mkdir()
    (old / "metrics.json").write_text('{"status": "aborted"}')
    (old / "stdout.log").write_text("the old log\n")
    plan = make_plan(_argv(config, data_root, tmp_path, "B2", "--fresh"))
    fd, aside = take_run_directory(plan)
    os.close(fd)
    assert aside.parent == tmp_path and aside.name.startswith("B2.")
    assert (aside / "stdout.log").read_text() == "the old log\n" and (aside / "metrics.json").exists()
    assert [p.name for p in old.iterdir()] == [rundir.RUN_LOCK]


def test_unreadable_shards_fail_with_one_line_naming_them(config, data_root, tmp_path):
    broken = tmp_path / "broken"
    for split in ("train", "val", "test"):
        (broken / split).mkdir(parents=True)
        (broken / split / "shard-00000.parquet").write_bytes(b"not parquet")
    assert main(_argv(config, broken, tmp_path / "runs", "B1"), stop=StopRequest()) == 1
    run = tmp_path / "runs" / "B1"
    assert _metrics(run)["status"] == "failed"
    assert json.loads((run / "run.json").read_text())["exit_status"] == 1
    log = (run / "stdout.log").read_text()
    (line,) = [x for x in log.splitlines() if x.startswith("FAILED")]
    assert "bad data" in line and "shard-00000.parquet" in line
    assert "Traceback" not in log and "B1: failed (exit 1)" in log


def test_an_unexpected_exception_is_status_failed_with_the_traceback_in_the_log(config, data_root, tmp_path,
                                                                                monkeypatch):
    def broken_model(*args, **kwargs):
        raise RuntimeError("the model cannot be built")

    monkeypatch.setattr("engine.training.trainer.build_model", broken_model)
    assert main(_argv(config, data_root, tmp_path / "runs", "B1"), stop=StopRequest()) == 1
    run = tmp_path / "runs" / "B1"
    assert _metrics(run)["status"] == "failed"
    log = (run / "stdout.log").read_text()
    assert "FAILED at epoch 0: RuntimeError: the model cannot be built" in log
    assert "Traceback" in log and "B1: failed (exit 1)" in log


# ---------------------------------------------------------------------------
# stdout.log: a line is never written twice, a restart never truncates


def test_log_lines_go_once_whether_or_not_stdout_is_the_log(tmp_path):
    path = tmp_path / "stdout.log"
    path.write_text("launcher header\n")
    with open(path, "a") as as_launched:          # the launcher's case: stdout is stdout.log
        log = RunLog(path, stream=as_launched)
        log.line("epoch 1")
        log.close()
    with open(tmp_path / "terminal.txt", "w") as terminal:  # by hand: stdout is elsewhere
        log = RunLog(path, stream=terminal)
        log.line("epoch 2")
        log.progress("batch 3/9")                 # not a terminal: no progress bar anywhere
        log.close()
    assert path.read_text() == "launcher header\nepoch 1\nepoch 2\n"
    assert (tmp_path / "terminal.txt").read_text() == "epoch 2\n"


# ---------------------------------------------------------------------------
# --cuda-graph through the whole training loop, with the CPU stand-in for the CUDA calls


def test_a_run_with_the_graph_step_trains_checkpoints_and_resumes(config, data_root, tmp_path, monkeypatch):
    """engine.train's own loop with CudaGraphStep (tests/test_step.py's RerunGraph in place of CUDA):
    the step is captured after the data loads, full batches replay, the smaller last one runs
    eagerly, the cosine rate reaches the graph every epoch, last.pt holds the tensor rate and a
    second start resumes into a new capture."""
    import dataclasses

    from engine.training import train as engine_train
    from engine.training import trainer as engine_trainer
    from engine.training.step import CudaGraphStep
    from test_step import RerunGraph

    captures: list[RerunGraph] = []

    def plan_with_graph(argv):
        return dataclasses.replace(make_plan(argv), cuda_graph=True)   # CUDA graphs are refused on a CPU

    def graph_step(model, optimizer, precision, x, y, eager):
        captures.append(RerunGraph(model, optimizer))
        return CudaGraphStep(model, optimizer, precision, x, y, eager, graph=captures[-1])

    monkeypatch.setattr(engine_train, "make_plan", plan_with_graph)
    monkeypatch.setattr(engine_trainer, "CudaGraphStep", graph_step)
    runs = tmp_path / "runs"
    argv = _argv(config, data_root, runs, "A1", "--device", "cpu", "--limit-train", "80", "--limit-val", "48",
                 "--epochs", "2")
    # 80 training images: batches of 32, 32 and 16. The loop asks once when the data is in, then
    # after every batch: the third look stops it after epoch 1's second batch. Then resumed.
    assert main(argv, stop=StopAfter(2)) == 128 + signal.SIGTERM
    assert _metrics(runs / "A1")["status"] == "aborted"
    assert main(argv, stop=StopRequest()) == 0

    run = runs / "A1"
    m = _metrics(run)
    assert m["status"] == "done" and [r["epoch"] for r in m["history"]] == [1, 2]
    # The cosine rates over 2 epochs, as the graph read them (a float32 tensor).
    assert [r["learning_rate"] for r in m["history"]] == pytest.approx([1e-4, 5e-5], rel=1e-6)
    info = json.loads((run / "run.json").read_text())
    assert undeclared(info, RunInfo) == []
    assert info["training_step"] == "cuda_graph" and info["resumed_from_epoch"] == 0
    log = (run / rundir.LOG_FILE).read_text()
    assert log.count("--cuda-graph: training step captured") == 2 and "resumed from epoch 0 batch 2" in log
    # First start: two full batches replayed, then the stop. Second: epoch 1's last batch of 16
    # eagerly, then epoch 2's two full batches replayed and its last one eagerly.
    assert [c.replays for c in captures] == [2, 2]
    assert m["test_auroc"] is not None and 0 <= m["history"][1]["val_auroc"] <= 1
