"""The run-directory protocol: the contract between the engine and lenstui.

One directory per run per host, `<runs_root>/<run name>/`. A run's name is its experiment id
(`B1`), or, for a seed replicate, `<exp_id>@seed<N>` (`B1@seed43`): `@` is not allowed in an
experiment id (config.ID_PATTERN), so a replicate's name can never be another experiment's, and
every reader takes the experiment back out of it (`parse_run_name`). The run with the plan's seed
(experiments.toml's `[training] seed`) is the experiment's own directory; each other seed is a
replicate (docs/REMOTE.md, "Seed replicates"). In it:

    metrics.json  the plan's metrics + status + verdicts, rewritten atomically
    run.json      who/what/where: experiment, host, pid, pgid, command, code
                  version, dataset, config hash, overrides, start/end, exit status
                  (every key of both, with its type: engine/protocol/schema.py)
    stdout.log    appended, a header per start; never truncated
    best.pt       on each new best val AUROC
    last.pt       every epoch (resume point)

Torch-free and NumPy-free. Readers never see half a file: every JSON write goes
through engine/files.py (temp file + fsync + rename). A process that died without saying so is detected
here (pid gone, or pid reused by another process), never assumed alive.
"""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.config import id_problem
from engine.numbers import is_int
from engine.protocol.schema import SCHEMA_VERSION, Metrics, RunInfo
from engine.files import JsonRead, atomic_write_json, read_json, timestamp

METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
LOG_FILE = "stdout.log"
BEST_CKPT = "best.pt"
LAST_CKPT = "last.pt"
LAUNCH_FILE = "launch.json"   # written by the launcher for the seconds before run.json exists
RUN_LOCK = ".run.lock"        # flock held for the whole life of the training process
LOCK_FD_ENV = "LENSTUI_RUN_LOCK_FD"
# A folder holding any of these is a run directory (the files `lenstui fetch` copies, too).
RUN_FILES = (METRICS_FILE, RUN_FILE, LAUNCH_FILE, LOG_FILE)
# `train --fresh` moves an old run aside as <id>.<YYYYmmdd-HHMMSS>[-n]: history, not a run to show.
MOVED_ASIDE = re.compile(r"\.\d{8}-\d{6}(-\d+)?$")



class RunState(str, enum.Enum):
    """A run's state. Within one start it only moves forward (SkyPilot's rule): `advance` is the
    only way the engine changes one, and refuses a move backwards.

    `lost` is never written by the engine: the status probe derives it when the
    recorded process is gone (or its pid now belongs to another process) while
    the files still say `running`.

    A state is its word: it is written to JSON as "running" and compares equal to "running", so
    a reader holding the string from metrics.json or a status answer tests it against these.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ABORTED = "aborted"
    LOST = "lost"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def terminal(self) -> bool:
        return self.rank >= 2

    def can_move_to(self, new: "RunState") -> bool:
        """Forward moves only; terminal states are final for this start."""
        return new.rank > self.rank or (new is self and not self.terminal)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class StateError(RuntimeError):
    """A state change the state machine does not allow (a bug in the caller, never bad input)."""


def advance(current: "RunState | str", new: RunState) -> RunState:
    """`new`, when a run in `current` may move there within one start; StateError otherwise."""
    now = RunState(current)
    if not now.can_move_to(new):
        raise StateError(f"a run cannot move from {now.value} to {new.value} within one start")
    return new


_RANK = {RunState.PENDING: 0, RunState.RUNNING: 1, RunState.DONE: 2, RunState.FAILED: 2,
         RunState.ABORTED: 2, RunState.LOST: 2}
# How the views group the states (the run that stands for an experiment, what may be aborted,
# relaunched or resumed): a live run, and a run that ended before it was done.
IN_PROGRESS = (RunState.RUNNING, RunState.PENDING)
ENDED_INCOMPLETE = (RunState.FAILED, RunState.ABORTED, RunState.LOST)
TERMINAL = tuple(s for s in RunState if s.terminal)


REPLICATE_MARK = "@seed"   # B1@seed43: experiment B1, trained with seed 43 (the plan's seed is B1 itself)


def run_name(exp_id: str, seed: int | None = None, plan_seed: int | None = None) -> str:
    """The run directory's name: `exp_id` for the plan's seed (or no seed given), else
    `<exp_id>@seed<N>`: one directory per seed replicate, never an experiment id."""
    if seed is None or seed == plan_seed:
        return exp_id
    return f"{exp_id}{REPLICATE_MARK}{int(seed)}"


def parse_run_name(name: str) -> tuple[str, int | None]:
    """(experiment id, seed) of a run directory's name: ('B1', None) for `B1`, ('B1', 43) for
    `B1@seed43`. A name whose part after the mark is not a seed stays whole (run_name_problem says why)."""
    exp_id, mark, seed = name.partition(REPLICATE_MARK)
    if mark and seed.isdigit() and seed == str(int(seed)):
        return exp_id, int(seed)
    return name, None


def run_name_problem(name: str) -> str | None:
    """Why `name` is not a run's name (an experiment id, or `<id>@seed<N>`), or None when it is."""
    exp_id, seed = parse_run_name(name)
    if seed is None and REPLICATE_MARK in name:
        return (f"run name {name!r}: a seed replicate is named <experiment>{REPLICATE_MARK}<seed>, the seed a "
                "plain non-negative integer (B1@seed43)")
    problem = id_problem(exp_id)
    return problem if problem is None or seed is None else f"run name {name!r}: {problem}"


def seed_args(seed: int, plan_seed: int) -> list[str]:
    """The extra engine.train arguments that run a replicate with `seed`: none for the plan's seed
    (the experiment's own run, exactly the plan's settings), else ['--seed', N]."""
    return [] if int(seed) == int(plan_seed) else ["--seed", str(int(seed))]


def parse_seeds(text: str) -> list[int]:
    """'42,43,44' -> [42, 43, 44] (distinct, in order); ValueError with words for anything else."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part.isdigit():
            raise ValueError(f"--seeds {text!r}: expected non-negative integers separated by commas (42,43,44)")
        if int(part) not in seeds:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"--seeds {text!r}: no seed given")
    return seeds


def run_dir(runs_root: str | Path, name: str) -> Path:
    """`<runs_root>/<name>`: the name is an experiment id (checked against [A-Za-z0-9_.-] by the
    config) or a replicate's `<id>@seed<N>` (run_name)."""
    return Path(runs_root) / name


def run_directories(runs_root: Path) -> list[Path]:
    """The run directories under `runs_root`, sorted: folders holding any of RUN_FILES, but not
    the runs `--fresh` moved aside."""
    try:
        entries = sorted(Path(runs_root).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p for p in entries if p.is_dir() and not MOVED_ASIDE.search(p.name)
            and any((p / name).exists() for name in RUN_FILES)]


def aside_path(directory: Path) -> Path:
    """Where `--fresh` moves `directory`: `<id>.<YYYYmmdd-HHMMSS>`, with `-N` when that is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = directory.with_name(f"{directory.name}.{stamp}")
    n = 1
    while aside.exists():
        aside = directory.with_name(f"{directory.name}.{stamp}-{n}")
        n += 1
    return aside


# ---------------------------------------------------------------------------
# metrics.json


def new_metrics(experiment: str, epochs_planned: int, overrides: dict[str, Any]) -> Metrics:
    """The metrics document at the start of a run, before its first epoch."""
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "status": RunState.RUNNING,
        "epochs_planned": epochs_planned,
        "overrides": dict(overrides),
        "history": [],        # §5.1: one dict per finished epoch; "epoch" counts from 1 (the Nth epoch)
        "gates": [],          # §5.2/§5.3: {"after_epochs": k, core_lr_auc, radial_lr_auc, ...}
        "verdicts": {},       # §6: name -> {"verdict", "value", "rule"}
        "updated_at": timestamp(),
    }


def write_metrics(directory: Path, metrics: Metrics) -> None:
    metrics["updated_at"] = timestamp()
    atomic_write_json(Path(directory) / METRICS_FILE, metrics)


def read_metrics(directory: Path) -> JsonRead:
    """metrics.json, in the current schema (an older file is upgraded in memory, never on disk here)."""
    read = read_json(Path(directory) / METRICS_FILE)
    return JsonRead(upgrade_metrics(read.data), read.error) if read.data is not None else read


def upgrade_metrics(metrics: dict[str, Any]) -> Metrics:
    """A metrics document in SCHEMA_VERSION: schema 1 counted epochs from 0, so its history rows'
    `epoch` and its `best_epoch` move up by one. One numbering everywhere: epoch N is the Nth
    epoch, the one after which N epochs are done (as "3/50" and "gate after 5 epochs" count)."""
    version = metrics.get("schema_version")
    if is_int(version) and version >= 2:
        return metrics
    history = metrics.get("history")
    if isinstance(history, list):
        metrics["history"] = [{**row, "epoch": row["epoch"] + 1}
                              if isinstance(row, dict) and is_int(row.get("epoch")) else row for row in history]
    if is_int(metrics.get("best_epoch")):
        metrics["best_epoch"] += 1
    metrics["schema_version"] = SCHEMA_VERSION
    return metrics


def write_run_info(directory: Path, info: RunInfo) -> None:
    atomic_write_json(Path(directory) / RUN_FILE, info)


def read_run_info(directory: Path) -> JsonRead:
    return read_json(Path(directory) / RUN_FILE)


# ---------------------------------------------------------------------------
# Process identity: alive means same pid AND same start time (pid reuse is real)


@dataclass(frozen=True)
class ProcessIdentity:
    """Enough to tell a process from a later one that reused its pid."""

    pid: int
    start_ticks: int | None   # /proc/<pid>/stat field 22; None where /proc is absent
    cmdline: str


def process_identity(pid: int) -> ProcessIdentity | None:
    """The identity of a live process, or None when no such process exists."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return _identity_without_proc(pid)
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if fields and fields[0] == "Z":
        return None  # a zombie has finished; only its parent has not reaped it yet
    return ProcessIdentity(pid, int(fields[19]), cmd.strip())


def _identity_without_proc(pid: int) -> ProcessIdentity | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ProcessIdentity(pid, None, "")


def identity_record(identity: ProcessIdentity) -> dict[str, Any]:
    return {"pid": identity.pid, "pid_start_ticks": identity.start_ticks, "cmdline": identity.cmdline}


def is_same_process(record: dict[str, Any]) -> tuple[bool, str]:
    """Whether the process recorded in run.json still runs, and why not if not."""
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False, "run.json records no pid"
    now = process_identity(pid)
    if now is None:
        return False, f"process {pid} is gone"
    want = record.get("pid_start_ticks")
    if want is not None and now.start_ticks is not None and want != now.start_ticks:
        return False, f"pid {pid} now belongs to another process ({now.cmdline[:60]!r})"
    if want is None and record.get("cmdline") and now.cmdline and record["cmdline"] != now.cmdline:
        return False, f"pid {pid} now runs another command ({now.cmdline[:60]!r})"
    return True, ""


# ---------------------------------------------------------------------------
# What a reader (the status probe, lenstui) sees


@dataclass(frozen=True)
class RunView:
    """A run directory as observed now: state reconciled against the process table."""

    experiment: str                     # the experiment id (a replicate's name without its @seed<N>)
    state: RunState
    reason: str
    metrics: dict[str, Any] | None
    run_info: dict[str, Any] | None
    errors: tuple[str, ...]
    launch_failure: str | None = None   # the newest launch ended before the engine took over: its words
    name: str = ""                      # the directory's name: the experiment id, or <id>@seed<N>


def observe_run(directory: Path) -> RunView:
    """Read a run directory and reconcile its written status with the live process (_observe); the
    view names its experiment (without a replicate's @seed<N>) and the directory."""
    view = _observe(Path(directory))
    return replace(view, experiment=parse_run_name(Path(directory).name)[0], name=Path(directory).name)


def _observe(directory: Path) -> RunView:
    """Read a run directory and reconcile its written status with the live process.

    launch.json names the newest start when the engine has not taken it over (its pid is not
    run.json's and it was written after run.json): alive, the run is `pending`; aborted while
    it started, `aborted`; otherwise that launch failed, and `launch_failure` holds the
    engine's one line about why (stdout.log after the launch header). The run's state is then
    that of its previous start, or `failed` when there was none.
    """
    directory = Path(directory)
    m, r = read_metrics(directory), read_run_info(directory)
    launch_read = read_json(directory / LAUNCH_FILE)
    launch = launch_read.data
    errors = tuple(e for e in (m.error, r.error) if e)
    attempt = None   # a launch the engine has not (yet, or ever) taken over
    if launch is not None and (r.data is None or (launch.get("pid") != r.data.get("pid")
                                                  and _newer(directory / LAUNCH_FILE, directory / RUN_FILE))):
        attempt = launch
    if attempt is not None:
        if is_same_process(attempt)[0]:
            reason = "starting again" if r.data is not None else "starting"
            return RunView(directory.name, RunState.PENDING, reason, m.data, attempt, errors)
        if attempt.get("status") == RunState.ABORTED:
            return RunView(directory.name, RunState.ABORTED, "aborted while it started, before the engine "
                           "wrote anything", m.data, r.data or attempt, errors)
        failure = launch_failure_line(directory / LOG_FILE)
        if r.data is None and m.data is None:
            return RunView(directory.name, RunState.FAILED, f"the launch failed: {failure}", None, attempt,
                           errors + ((launch_read.error,) if launch_read.error else ()), failure)
        view = _observe_started(directory, m, r, errors)
        return RunView(view.experiment, view.state, view.reason, view.metrics, view.run_info, view.errors, failure)
    if r.data is None and r.error is None and launch is not None:
        r = launch_read
    return _observe_started(directory, m, r, errors)


def _observe_started(directory: Path, m: JsonRead, r: JsonRead, errors: tuple[str, ...]) -> RunView:
    """The state of the start the engine took over: written status, checked against its process."""
    written = _parse_state((m.data or {}).get("status")) or _parse_state((r.data or {}).get("status"))
    state, reason = written or RunState.PENDING, ""
    if state in (RunState.RUNNING, RunState.PENDING) and r.data is not None:
        alive, why = is_same_process(r.data)
        if alive:
            state = RunState.RUNNING
        elif written is not None:
            state, reason = RunState.LOST, f"{why}, but the run never wrote a final status"
    elif state is RunState.RUNNING and r.data is None:
        state, reason = RunState.LOST, "run.json is missing: no process to check"
    return RunView(directory.name, state, reason, m.data, r.data, errors)


def _newer(a: Path, b: Path) -> bool:
    """Whether file `a` was written after file `b` (a missing `b` is older than anything)."""
    try:
        a_time = a.stat().st_mtime_ns
    except OSError:
        return False
    try:
        return a_time > b.stat().st_mtime_ns
    except OSError:
        return True


LAUNCH_HEADER = "===== "          # the lines engine.launch and a start header write in stdout.log begin so ...
LAUNCH_MARK = " lenstui launch of "   # ... and its first line of each launch says so
FAILURE_TAIL_BYTES = 16384


def launch_failure_line(log: Path) -> str:
    """Why the newest launch ended: the engine's last `engine.train: …` or `FAILED` line after the
    launch header in stdout.log, else its last line, in one line."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - FAILURE_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return f"the training process ended at once, and {log} cannot be read"
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith(LAUNCH_HEADER) and LAUNCH_MARK in line]
    after = [line.strip() for line in lines[headers[-1] + 1:] if line.strip()] if headers else \
        [line.strip() for line in lines if line.strip()]
    after = [line for line in after if not line.startswith(LAUNCH_HEADER)]
    for prefix in ("engine.train: ", "error: "):
        said = [line for line in after if line.startswith(prefix)]
        if said:
            return said[-1][len(prefix):]
    said = [line for line in after if line.startswith("FAILED") or ": FAILED" in line]
    if said:
        return said[-1]
    if after:
        return after[-1]   # a traceback ends with the exception's own line
    return f"the training process ended at once without a word (see {log})"


def _parse_state(value: Any) -> RunState | None:
    try:
        return RunState(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# The run lock: at most one training process per run directory


class AlreadyRunning(RuntimeError):
    """Another process holds this run directory's lock."""


def acquire_run_lock(directory: Path) -> int:
    """Take the run directory's lock (non-blocking) and return its fd.

    The lock is an flock on `.run.lock`: it is released by the kernel when the
    holder dies, so a crashed run never blocks a relaunch. A launcher takes it,
    then hands the fd to the training process it starts (LENSTUI_RUN_LOCK_FD),
    so there is no window in which two launches can both start.
    """
    import fcntl

    Path(directory).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(directory) / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"{directory}: another process is running this experiment") from None
    return fd


def inherited_run_lock() -> int | None:
    """The lock fd a launcher passed down, if any (see acquire_run_lock)."""
    value = os.environ.get(LOCK_FD_ENV)
    if not value:
        return None
    try:
        fd = int(value)
        os.fstat(fd)
    except (ValueError, OSError):
        return None
    return fd
