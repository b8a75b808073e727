"""The run-directory protocol: atomic files, forward-only state, a dead process detected as lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import files
from engine.protocol import rundir
from engine.protocol.rundir import RunState
from engine.protocol.schema import SCHEMA_VERSION


def test_state_moves_only_forward():
    assert RunState.PENDING.can_move_to(RunState.RUNNING)
    assert RunState.RUNNING.can_move_to(RunState.DONE)
    assert RunState.RUNNING.can_move_to(RunState.ABORTED)
    assert not RunState.DONE.can_move_to(RunState.RUNNING)
    assert not RunState.ABORTED.can_move_to(RunState.DONE)
    assert not RunState.RUNNING.can_move_to(RunState.PENDING)


def test_the_engine_changes_a_state_only_through_advance_which_refuses_a_move_back():
    assert rundir.advance("running", RunState.DONE) is RunState.DONE   # a written word, read back
    assert rundir.advance(RunState.PENDING, RunState.ABORTED) is RunState.ABORTED
    for current, new in (("done", RunState.RUNNING), ("aborted", RunState.DONE), ("failed", RunState.FAILED)):
        with pytest.raises(rundir.StateError, match=f"from {current} to {new.value}"):
            rundir.advance(current, new)
    # A state is its word wherever it goes: JSON, f-strings, and comparisons with what was read.
    assert json.dumps({"status": RunState.ABORTED}) == '{"status": "aborted"}'
    assert f"{RunState.LOST}" == "lost" and str(RunState.DONE) == "done" and RunState.RUNNING == "running"
    assert set(rundir.TERMINAL) == {RunState.DONE, RunState.FAILED, RunState.ABORTED, RunState.LOST}
    assert "pending" in rundir.IN_PROGRESS and "lost" in rundir.ENDED_INCOMPLETE


def test_no_code_writes_a_run_state_as_a_bare_word():
    """The states live in rundir.RunState: engine and lenstui name them there (one list of states)."""
    import re

    root = Path(__file__).resolve().parents[1]
    words = "|".join(s.value for s in RunState)
    found = []
    for path in [*(root / "engine").rglob("*.py"), *(root / "lenstui").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(rf"""(==|!=|\bin \(|\b(status|state)=|\[["'](status|state)["']\] =|get\(["'](status|state)["']\)"""
                         rf"""\s*or)\s*["']({words})["']""", code) or re.search(rf"""^\s*["']({words})["']\s*:""", code):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert found == []


def test_json_write_is_atomic_under_a_concurrent_reader(tmp_path):
    path = tmp_path / "metrics.json"
    files.atomic_write_json(path, {"history": []})
    stop, bad = threading.Event(), []

    def reader():
        while not stop.is_set():
            read = files.read_json(path)
            if read.data is None:
                bad.append(read.error)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        files.atomic_write_json(path, {"history": [{"epoch": e, "val_auroc": 0.5} for e in range(i)]})
    stop.set()
    t.join()
    assert bad == []
    assert len(json.loads(path.read_text())["history"]) == 299
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_nan_is_written_as_null(tmp_path):
    files.atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None]}


def test_garbled_metrics_is_an_error_not_an_exception(tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "runn')
    read = rundir.read_metrics(tmp_path)
    assert read.data is None and "not valid JSON" in read.error
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert "expected a JSON object" in rundir.read_metrics(tmp_path).error


def _record_for(pid: int) -> dict:
    ident = rundir.process_identity(pid)
    assert ident is not None
    return rundir.identity_record(ident)


def test_a_killed_run_is_lost_not_running(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rundir.write_run_info(tmp_path, {**_record_for(proc.pid), "status": "running"})
        rundir.write_metrics(tmp_path, rundir.new_metrics("A1", 50, {}))
        assert rundir.observe_run(tmp_path).state is RunState.RUNNING
    finally:
        proc.kill()
        proc.wait()
    view = rundir.observe_run(tmp_path)
    assert view.state is RunState.LOST
    assert f"process {proc.pid} is gone" in view.reason


def test_a_reused_pid_is_not_mistaken_for_the_run(tmp_path):
    record = {**_record_for(os.getpid()), "status": "running"}
    record["pid_start_ticks"] += 1  # same pid, another process start: what pid reuse looks like
    rundir.write_run_info(tmp_path, record)
    rundir.write_metrics(tmp_path, rundir.new_metrics("A1", 50, {}))
    view = rundir.observe_run(tmp_path)
    assert view.state is RunState.LOST and "now belongs to another process" in view.reason


def test_final_states_are_reported_as_written(tmp_path):
    rundir.write_run_info(tmp_path, {"pid": 999999999, "status": "done"})
    metrics = rundir.new_metrics("B1", 3, {"epochs": 3})
    metrics["status"] = "aborted"
    rundir.write_metrics(tmp_path, metrics)
    assert rundir.observe_run(tmp_path).state is RunState.ABORTED


def test_run_lock_is_exclusive_and_released_when_the_holder_dies(tmp_path):
    code = ("import sys, time; from engine.protocol import rundir; rundir.acquire_run_lock(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.AlreadyRunning, match="another process is running this experiment"):
            rundir.acquire_run_lock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    os.close(rundir.acquire_run_lock(tmp_path))


def test_an_old_metrics_json_counting_epochs_from_0_reads_counting_from_1(tmp_path):
    """Schema 1 (engines before 0.3) wrote history epochs and best_epoch from 0; readers see them from 1."""
    d = tmp_path / "B1"
    d.mkdir()
    old = {"schema_version": 1, "experiment": "B1", "status": "done", "epochs_planned": 2, "best_epoch": 1,
           "history": [{"epoch": 0, "val_auroc": 0.7}, {"epoch": 1, "val_auroc": 0.8}], "gates": []}
    (d / rundir.METRICS_FILE).write_text(json.dumps(old))
    m = rundir.read_metrics(d).data
    assert [r["epoch"] for r in m["history"]] == [1, 2] and m["best_epoch"] == 2
    assert m["schema_version"] == SCHEMA_VERSION == 2
    assert rundir.upgrade_metrics(dict(m)) == m, "a current file is left as it is"
    assert json.loads((d / rundir.METRICS_FILE).read_text())["history"][0]["epoch"] == 0, "read, never rewritten"
