"""Host-side launch and abort of one experiment's run: the same code behind both transports.

    python -m engine.launch start --run NAME --runs-root DIR [--gpu N|auto|cpu]
                                  [--require MOD,...] [--wait SECONDS] -- TRAIN ARGV...
    python -m engine.launch abort --run NAME --runs-root DIR [--grace SECONDS]

NAME is the run's directory name: the experiment id (`B1`), or a seed replicate's `B1@seed43`
(rundir.run_name; `--experiment` is the same option under its older name). The training command
must write to the same directory: engine.train names it from its --experiment and --seed.

`start` takes the run directory's lock (a second launch is refused with exit
code 3, so two racing launches start exactly one run), appends a header to
stdout.log, picks a free GPU, starts the training command in a new session
(its own process group, detached from the SSH session, holding the lock) and
returns at once, or with --wait once the engine has written run.json (a run that
ends before that is a failed launch, reported with the engine's own line). `abort`
signals exactly that process group - verified by pid and start time, never by
name - SIGTERM first, SIGKILL after the grace period; an abort that lands before
the engine wrote anything marks launch.json `aborted`.

Both print one JSON object on stdout (with an "error" key on failure) and a
human message on stderr. Exit codes (engine/protocol/exitcodes.py): 0 ok, 1 the run failed as it
started, 2 bad input, 3 refused.
Torch-free: the launcher must start fast and must not touch the GPU itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engine import ENGINE_VERSION

from engine import files
from engine.files import timestamp

from engine.protocol import rundir
from engine.protocol import exitcodes

FREE_GPU_MEMORY_MIB = 1024   # a GPU using more than this without a listed process is not free
KILL_WAIT = 10.0             # after SIGKILL, how long to wait for the kernel to finish


class LaunchError(Exception):
    """A launch or abort that cannot go ahead, worded for the user; `code` is the exit code."""

    def __init__(self, message: str, code: int = exitcodes.BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# Choosing a GPU


@dataclass(frozen=True)
class GpuChoice:
    """What CUDA_VISIBLE_DEVICES to set, and why, for the log header and the caller."""

    visible: str | None    # None: leave CUDA_VISIBLE_DEVICES as inherited
    label: str             # "0", "cpu"
    note: str


def choose_gpu(request: str, runs_root: Path, gpus: list[dict[str, Any]] | None = None,
               gpu_note: str | None = None) -> GpuChoice:
    """Resolve --gpu: an index, "cpu", or "auto" (the first GPU nobody uses)."""
    if gpus is None:
        from engine.protocol.gpus import gpu_snapshot

        gpus, _, gpu_note = gpu_snapshot()
    request = request.strip().lower()
    if request == "cpu":
        return GpuChoice("", "cpu", "CPU requested: CUDA_VISIBLE_DEVICES is empty")
    if request == "auto":
        if not gpus:
            return GpuChoice("", "cpu", f"running on CPU ({gpu_note or 'no GPU found'})")
        claimed = _gpus_claimed_by_runs(runs_root)
        busy = []
        for gpu in gpus:
            index = str(gpu["index"])
            reason = _busy_reason(gpu, claimed.get(index))
            if reason is None:
                return GpuChoice(index, index, f"GPU {index} ({gpu['name']}) is free")
            busy.append(f"GPU {index}: {reason}")
        raise LaunchError("no free GPU on this host (" + "; ".join(busy) + "); "
                          "wait for a run to finish, or pass --gpu N to share one", exitcodes.REFUSED)
    if not request.isdigit():
        raise LaunchError(f"--gpu {request!r}: expected a GPU index (0, 1, ...), 'auto' or 'cpu'")
    indices = [str(g["index"]) for g in gpus]
    if gpus and request not in indices:
        raise LaunchError(f"--gpu {request}: this host has GPUs {', '.join(indices)}")
    if not gpus:
        return GpuChoice(request, request, f"GPU {request} requested but none is visible "
                                           f"({gpu_note}); the run may fall back to CPU")
    return GpuChoice(request, request, f"GPU {request} requested")


def _busy_reason(gpu: dict[str, Any], claimed_by: str | None) -> str | None:
    if claimed_by:
        return f"used by run {claimed_by}"
    procs = gpu.get("processes") or []
    if procs:
        return f"{len(procs)} compute process(es), e.g. pid {procs[0]['pid']}"
    used = gpu.get("memory_used_mib")
    if used is not None and used > FREE_GPU_MEMORY_MIB:
        return f"{used} MiB in use"
    return None


def _gpus_claimed_by_runs(runs_root: Path) -> dict[str, str]:
    """GPU index -> experiment, for runs on this host that are alive now.

    In containers NVML often lists no processes, so the launcher also trusts
    its own records of which GPU each live run was given.
    """
    claimed = {}
    for directory in rundir.run_directories(runs_root):
        launch = files.read_json(directory / rundir.LAUNCH_FILE).data or {}
        gpu = launch.get("gpu")
        if gpu in (None, "cpu") or not isinstance(launch.get("pid"), int):
            continue
        if _group_members(launch.get("pgid") or launch["pid"]) and rundir.is_same_process(launch)[0]:
            claimed[str(gpu)] = directory.name
    return claimed


# ---------------------------------------------------------------------------
# start


def missing_modules(names: Sequence[str]) -> list[str]:
    """Modules this Python cannot find (checked without importing them: torch is slow)."""
    return [n for n in names if n and importlib.util.find_spec(n) is None]


def start(exp_id: str, runs_root: str | Path, train_argv: Sequence[str], gpu: str = "auto",
          require: Sequence[str] = (), wait: float = 0.0) -> dict[str, Any]:
    """Start `train_argv` detached, holding the run lock; return {pid, pgid, gpu, run_dir, ...}.

    With `wait` > 0, watch the new process for up to `wait` seconds: a process that ends before
    the engine takes the run over (writes run.json with its pid) is a failed launch, raised as a
    LaunchError with the engine's own line from stdout.log; `started` says whether it got that far.
    """
    _check_id(exp_id)
    if not train_argv:
        raise LaunchError("no training command given after --")
    missing = missing_modules(require)
    if missing:
        raise LaunchError(f"this host's Python ({sys.executable}) lacks {', '.join(missing)}; "
                          f"install them there (pip install ...) and run preflight again")
    root = Path(os.path.expanduser(str(runs_root)))
    directory = rundir.run_dir(root, exp_id)
    try:
        lock_fd = _acquire_lock_of_a_dead_run_too(directory)
    except rundir.AlreadyRunning:
        raise LaunchError(f"{exp_id} is already running on {socket.gethostname()} "
                          f"(the lock {directory / rundir.RUN_LOCK} is held); "
                          f"abort it first or wait for it to finish", exitcodes.REFUSED) from None
    except OSError as exc:
        raise LaunchError(f"cannot create the run directory {directory}: {exc.strerror}") from None
    try:
        choice = choose_gpu(gpu, root)
        argv = [os.path.expanduser(train_argv[0]), *train_argv[1:]]  # a host's python may be ~/venv/bin/python
        result, proc = _spawn(exp_id, directory, argv, choice, lock_fd)
    finally:
        os.close(lock_fd)  # the child holds its own copy; the lock lives as long as the run
    result["started"] = _await_start(exp_id, directory, proc, wait) if wait > 0 else False
    return result


DEAD_HOLDER_GRACE = 5.0   # seconds a dead run's threads may take to let go of its lock


def _acquire_lock_of_a_dead_run_too(directory: Path) -> int:
    """The run lock; when it is held but every process the run's files name is gone, wait briefly.

    A SIGKILLed (or OOM-killed) training process is a zombie as soon as its main thread exits,
    and the status probe calls it lost then; but the kernel releases its files, the flock among
    them, only when the last of its threads has exited, a moment later (longer under load). A
    relaunch in that moment would otherwise be refused as "already running". A holder that is
    alive, or that no file names (a launcher between taking the lock and writing launch.json),
    is refused at once, as before.
    """
    deadline = time.monotonic() + DEAD_HOLDER_GRACE
    while True:
        try:
            return rundir.acquire_run_lock(directory)
        except rundir.AlreadyRunning:
            pids = [(files.read_json(directory / name).data or {}).get("pid")
                    for name in (rundir.RUN_FILE, rundir.LAUNCH_FILE)]
            pids = [p for p in pids if isinstance(p, int)]
            if (not pids or any(rundir.process_identity(p) is not None for p in pids)
                    or time.monotonic() >= deadline):
                raise
            time.sleep(0.05)


def _await_start(exp_id: str, directory: Path, proc: subprocess.Popen, wait: float) -> bool:
    """True once the engine wrote run.json with this pid; LaunchError when the process ends first."""
    deadline = time.monotonic() + wait
    started = time.monotonic()
    while True:
        rc = proc.poll()
        info = rundir.read_run_info(directory).data or {}
        if info.get("pid") == proc.pid:
            return True
        if rc is not None:
            if rc < 0:
                why = f"stopped by {signal.Signals(-rc).name} while it started"
            else:
                why = rundir.launch_failure_line(directory / rundir.LOG_FILE)
            code = rc if rc in (exitcodes.BAD_INPUT, exitcodes.REFUSED) else exitcodes.FAILED
            raise LaunchError(f"{exp_id} ended {time.monotonic() - started:.0f} s after the launch "
                              f"(exit {rc}): {why}", code)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _spawn(exp_id: str, directory: Path, argv: list[str], choice: GpuChoice,
           lock_fd: int) -> tuple[dict[str, Any], subprocess.Popen]:
    env = dict(os.environ)
    env[rundir.LOCK_FD_ENV] = str(lock_fd)
    env["PYTHONUNBUFFERED"] = "1"
    if choice.visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = choice.visible
    launched_at = timestamp()
    with open(directory / rundir.LOG_FILE, "ab") as log:
        header = (f"\n{rundir.LAUNCH_HEADER}{launched_at}{rundir.LAUNCH_MARK}{exp_id} on {socket.gethostname()}: "
                  f"gpu {choice.label} ({choice.note}); cwd {os.getcwd()}\n"
                  f"{rundir.LAUNCH_HEADER}command: {shlex.join(argv)}\n")
        log.write(header.encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, pass_fds=(lock_fd,), env=env)
        except OSError as exc:
            log.write(f"{rundir.LAUNCH_HEADER}launch failed: {exc}\n".encode())
            raise LaunchError(f"cannot start {argv[0]!r} in {os.getcwd()}: {exc.strerror}; "
                              "check the host's `python` and `work_dir` in experiments.toml") from None
    identity = rundir.process_identity(proc.pid)
    record = {
        "experiment": exp_id,
        "host": socket.gethostname(),
        "pid": proc.pid,
        "pgid": proc.pid,  # start_new_session: the child leads its own group
        "pid_start_ticks": identity.start_ticks if identity else None,
        "cmdline": identity.cmdline if identity else shlex.join(argv),
        "command": argv,
        "gpu": choice.label,
        "gpu_note": choice.note,
        "engine_version": ENGINE_VERSION,
        "launched_at": launched_at,
        "status": rundir.RunState.PENDING,
    }
    files.atomic_write_json(directory / rundir.LAUNCH_FILE, record)
    return ({"pid": proc.pid, "pgid": proc.pid, "gpu": choice.label, "gpu_note": choice.note,
             "run_dir": str(directory), "log": str(directory / rundir.LOG_FILE),
             "launched_at": launched_at}, proc)


# ---------------------------------------------------------------------------
# abort


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`, from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _target(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The live record (run.json, else launch.json) to signal, or None and why not."""
    reasons = []
    for name in (rundir.RUN_FILE, rundir.LAUNCH_FILE):
        read = files.read_json(directory / name)
        if read.data is None:
            if read.error:
                reasons.append(read.error)
            continue
        alive, why = rundir.is_same_process(read.data)
        if alive:
            return read.data, ""
        reasons.append(f"{name}: {why}")
        pgid = read.data.get("pgid")
        # The leader died but its children may live on in the group. A pgid is not
        # handed out again while any process still belongs to it, so they are ours
        # - unless a new process now owns that pid, which is_same_process saw above.
        if isinstance(pgid, int) and rundir.process_identity(pgid) is None and _group_members(pgid):
            return read.data, ""
    return None, "; ".join(reasons) or "no run.json or launch.json: this experiment was never launched here"


def abort(exp_id: str, runs_root: str | Path, grace: float = 30.0) -> dict[str, Any]:
    """SIGTERM the run's process group, SIGKILL it after `grace` seconds; report what happened."""
    _check_id(exp_id)
    directory = rundir.run_dir(Path(os.path.expanduser(str(runs_root))), exp_id)
    record, why = _target(directory)
    if record is None:
        return {"experiment": exp_id, "signalled": False, "killed": False, "remaining": [],
                "message": f"{exp_id} is not running: {why}"}
    pgid = record.get("pgid") if isinstance(record.get("pgid"), int) else record["pid"]
    if pgid <= 1:
        raise LaunchError(f"{directory}: refusing to signal process group {pgid}")
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + max(grace, 0.0)
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = False
    if _group_members(pgid):
        killed = True
        _killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _mark_aborted(directory)
    remaining = _group_members(pgid)
    if not remaining:
        _mark_launch_aborted(directory, record)
    how = "SIGKILL after the grace period" if killed else "SIGTERM"
    message = (f"{exp_id}: process group {pgid} stopped by {how}" if not remaining
               else f"{exp_id}: processes {remaining} of group {pgid} survive SIGKILL (stuck in the kernel?)")
    return {"experiment": exp_id, "signalled": True, "pgid": pgid, "killed": killed,
            "remaining": remaining, "message": message}


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group finished between our check and the signal
    except PermissionError:
        raise LaunchError(f"not allowed to signal process group {pgid} (another user's run?)") from None


def _mark_launch_aborted(directory: Path, record: dict[str, Any]) -> None:
    """An abort that landed while the engine was starting (it never wrote run.json): the launch
    record says `aborted`, so the run reads aborted, as asked, rather than lost."""
    launch = files.read_json(directory / rundir.LAUNCH_FILE).data
    if launch is None or launch.get("pid") != record.get("pid"):
        return   # the process signalled was recorded by run.json: the engine had taken over
    if (rundir.read_run_info(directory).data or {}).get("pid") == launch.get("pid"):
        return   # the engine wrote run.json: it says itself how it ended
    launch.update(status=rundir.advance(launch.get("status") or rundir.RunState.PENDING, rundir.RunState.ABORTED),
                  aborted_at=timestamp())
    files.atomic_write_json(directory / rundir.LAUNCH_FILE, launch)


def _mark_aborted(directory: Path) -> None:
    """After a SIGKILL the engine could not say so itself: record `aborted`, forward only."""
    read = rundir.read_metrics(directory)
    if read.data is not None and read.data.get("status") == rundir.RunState.RUNNING:
        read.data["status"] = rundir.advance(read.data["status"], rundir.RunState.ABORTED)
        rundir.write_metrics(directory, read.data)


def _check_id(name: str) -> None:
    problem = rundir.run_name_problem(name)
    if problem:
        raise LaunchError(problem)


# ---------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.launch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a training command detached, holding the run lock")
    p_abort = sub.add_parser("abort", help="stop a run's process group")
    for p in (p_start, p_abort):
        p.add_argument("--run", "--experiment", dest="experiment", required=True, metavar="NAME",
                       help="the run's name: the experiment id, or <id>@seed<N> for a seed replicate")
        p.add_argument("--runs-root", required=True)
    p_start.add_argument("--gpu", default="auto", help="GPU index, 'auto' (a free one) or 'cpu'")
    p_start.add_argument("--require", default="", help="comma-separated modules the training needs")
    p_start.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="watch the new run this long: one that ends before the engine takes it over is a "
                              "failed launch, reported with the engine's reason (default 0: return at once)")
    p_start.add_argument("train_argv", nargs=argparse.REMAINDER, help="-- the training command")
    p_abort.add_argument("--grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            train = args.train_argv[1:] if args.train_argv[:1] == ["--"] else args.train_argv
            result = start(args.experiment, args.runs_root, train, args.gpu,
                           [m.strip() for m in args.require.split(",") if m.strip()], wait=args.wait)
            print(f"started {args.experiment}: pid {result['pid']}, gpu {result['gpu']}", file=sys.stderr)
        else:
            result = abort(args.experiment, args.runs_root, args.grace)
            print(result["message"], file=sys.stderr)
    except LaunchError as exc:
        print(json.dumps({"error": str(exc), "code": exc.code}), flush=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(result), flush=True)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
