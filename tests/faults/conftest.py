"""Fixtures for the fault-injection suite: tiny data, configs in tmp_path, real sshd hosts, cleanup.

Everything here is real: a synthetic dataset written once per session, configs whose
hosts point at tmp folders and run this Python, OpenSSH servers on loopback
(tests/sshd.py), tmpfs mounts for a full or read-only disk. Every test leaves no
process behind: `reap_runs` kills, after each test, any run group a test started
under its tmp_path (checked by pid and start time, as `engine.launch abort` does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from engine import files

from engine.protocol import rundir
from sshd import (PROJECT_ROOT, SshLab, group_alive, install_engine, running_lab, sshd_missing,  # noqa: F401 (re-exported)
                  wait_for, write_config)

# The plan's settings shrunk for a tiny CPU run: one gate (before training), small batches
# (several per epoch, so a kill lands mid-epoch), the whole tiny set as the "10%" sample.
TINY = {"gate_every_epochs": 50, "gate_n_samples": 20, "thetae_min_positives": 3, "batch_size": 8,
        "sample_fraction": 1.0}
# A real training run that takes seconds per epoch on one thread.
TRAIN_ARGS = ("--limit-train", "16", "--limit-val", "16", "--device", "cpu")
THREADS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------
# Processes: one thread each, and nothing left running


@pytest.fixture(autouse=True)
def _one_thread_and_no_inherited_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs started by a test inherit this environment: one torch thread, no stray run lock."""
    for key, value in THREADS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(rundir.LOCK_FD_ENV, raising=False)


MARK_ENV = "LENSTUI_FAULTS_MARK"


@pytest.fixture(autouse=True)
def reap_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """After the test: SIGKILL whatever it started that still runs.

    Local processes inherit a marker unique to this test in their environment, so even a
    grandchild that left its run's group is found; runs on SSH hosts are found by their
    run records under tmp_path.
    """
    mark = f"{os.getpid()}:{tmp_path}"
    monkeypatch.setenv(MARK_ENV, mark)
    yield
    reap(tmp_path)
    _kill_ours(mark, tmp_path)


def _kill_ours(mark: str, tmp_path: Path) -> None:
    """SIGKILL processes carrying this test's marker, or working in its tmp_path (started over SSH)."""
    needle = b"\0" + f"{MARK_ENV}={mark}".encode() + b"\0"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = b"\0" + Path(f"/proc/{entry.name}/environ").read_bytes() + b"\0"
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if needle in environ or cwd == str(tmp_path) or cwd.startswith(f"{tmp_path}/"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def reap(root: Path) -> list[int]:
    """Kill the live process groups of runs recorded under `root`; returns the groups killed."""
    killed = []
    records = [p for name in (rundir.RUN_FILE, rundir.LAUNCH_FILE) for p in root.rglob(name)]
    for path in records:
        data = files.read_json(path).data or {}
        pgid = data.get("pgid")
        # A run trained in-process (engine.training.train.main called by a test) records pytest's own group.
        if not isinstance(pgid, int) or pgid <= 1 or pgid == os.getpgid(0) or not group_alive(pgid):
            continue
        # Only our own group: its leader is the recorded process, or it is gone and
        # members remain (a pgid is not handed out again while it has members).
        if rundir.is_same_process(data)[0] or rundir.process_identity(pgid) is None:
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except ProcessLookupError:
                pass
    for pgid in killed:
        wait_for(lambda: not group_alive(pgid), timeout=10)
    return killed


# ---------------------------------------------------------------------------
# Data and configs


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (96 rows per split), written once per session."""
    from engine.synthetic.twin import write_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, rows={"train": 96, "val": 96, "test": 96}, seed=42)
    return root


def copy_dataset(src: Path, dest: Path) -> Path:
    """A private copy of a dataset's shards (no caches), to damage without harming others."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".lenstui-cache"))
    return dest


def local_host(name: str, runs_root: Path, work_dir: Path | None = None, python: str | Path | None = None) -> str:
    """A local-transport [hosts.NAME] table: this Python in `work_dir` (default: the project)."""
    return (f'[hosts.{name}]\ntransport = "local"\nwork_dir = {_q(work_dir or PROJECT_ROOT)}\n'
            f'python = {_q(python or sys.executable)}\nruns_root = {_q(runs_root)}\ndataset = "lab"\n')


def ssh_host(name: str, server: Any, python: str | Path | None = None, runs_root: str | None = None,
             work_dir: str | None = None) -> str:
    """An ssh [hosts.NAME] table for one server of an SshLab."""
    return (f'[hosts.{name}]\ntransport = "ssh"\nssh_host = {_q(server.name)}\n'
            f'work_dir = {_q(work_dir or server.work_dir)}\npython = {_q(python or sys.executable)}\n'
            f'runs_root = {_q(runs_root or server.runs_root)}\ndataset = "lab"\n')


def _q(value: object) -> str:
    """A TOML basic string (JSON's escaping is valid TOML): paths may hold quotes and shell syntax."""
    return json.dumps(str(value))


def tiny_config(path: Path, hosts: list[str], data_root: Path | str = "data/none") -> Path:
    """The real plan with `hosts` as its hosts, the dataset at `data_root`, and TINY settings."""
    write_config(path, hosts, str(data_root))
    text = path.read_text()
    for key, value in TINY.items():
        text, n = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert n == 1, f"experiments.toml has no single `{key} = ...` line any more"
    path.write_text(text)
    return path


def standin_work(work_dir: Path) -> Path:
    """A host work_dir whose engine/train.py (what `python -m engine.train` runs) is the torch-free stand-in (tests/sshd.py)."""
    install_engine(work_dir, standin=True)
    return work_dir


def one_thread_python(path: Path) -> Path:
    """A host `python` that runs this interpreter with one torch thread (SSH sessions do not inherit env)."""
    path.write_text(f"#!/bin/sh\nOMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec {sys.executable} \"$@\"\n")
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------------------
# Real SSH hosts


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[SshLab]:
    """Two OpenSSH servers on loopback (h1, h2), under tmp_path so reap_runs finds their runs."""
    with running_lab(tmp_path / "lab") as lab:
        yield lab


# ---------------------------------------------------------------------------
# A real small file system: full, or read-only


class Tmpfs:
    """A tmpfs mounted on a folder for one test (root only); unmounted after."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.mounted = False

    def mount(self, size: str, read_only: bool = False) -> Path:
        self.where.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); this fault needs root and mount")
        self.mounted = True
        return self.where

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.where)], check=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True)
            self.mounted = False


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full or read-only file system needs root and mount(8)")
    fs = Tmpfs(tmp_path / "mnt")
    try:
        yield fs
    finally:
        reap(tmp_path)  # nothing may hold files on the mount when it goes
        fs.unmount()


# ---------------------------------------------------------------------------
# Small helpers shared by the tests


def lenstui(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `lenstui` command line, as a separate process."""
    return subprocess.run([sys.executable, "-m", "lenstui.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL)


def metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json as written (fails the test if it is not valid JSON)."""
    return json.loads((run_dir / rundir.METRICS_FILE).read_text())


def epochs_of(entry: dict[str, Any]) -> list[int]:
    return [row["epoch"] for row in entry.get("history") or []]


def poll_until(fleet: Any, host: str, exp_id: str, predicate: Callable[[dict[str, Any]], bool],
               timeout: float, interval: float = 0.5) -> dict[str, Any]:
    """Poll `host` until its status entry for `exp_id` satisfies `predicate`; return that entry."""
    def check() -> dict[str, Any] | None:
        snap = fleet.poll(host)
        entry = ((snap.status or {}).get("runs") or {}).get(exp_id)
        return entry if entry is not None and predicate(entry) else None

    return wait_for(check, timeout=timeout, interval=interval)


async def app_wait(pilot: Any, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Let the app run until `condition()` is truthy (polls arrive from worker threads)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.1)


def cell(app: Any, exp_id: str, column: str) -> str:
    """The plain text of one matrix cell."""
    value = app.matrix.get_cell(exp_id, column)
    return getattr(value, "plain", str(value))
