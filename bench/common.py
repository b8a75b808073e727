"""What every benchmark shares: the machine, timers, peak memory, tables, goals, results, bench data.

Torch-free at module level: the GPU check's report and the TUI benchmark use it
without torch. Helpers that touch torch use it only when a benchmark has loaded it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO / "cache" / "bench"   # git-ignored: bench datasets, stamp caches, runs, results
PLAN_10PCT = {"train": 2_910, "val": 10_024, "test": 8_852}     # plan §2.2
PLAN_FULL = {"train": 29_108, "val": 100_240, "test": 88_528}   # plan §2.1
# Rows per split of the shared synthetic bench dataset. The paired view doubles them
# (stamp + control): 2,000 train and 2,200 val examples, enough for a 2,000-sample gate.
BENCH_ROWS = {"train": 1000, "val": 1100, "test": 48}
QUICK_ROWS = {"train": 48, "val": 60, "test": 48}   # synth's floor is 4 LRGs x 12 rows per split
BENCH_SEED = 7

_started = time.monotonic()


# ---------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The machine and its load now: on a shared machine the load is part of every number."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def progress(message: str) -> None:
    """A progress line on stderr (tables go to stdout), with seconds since start."""
    sys.stderr.write(f"[{time.monotonic() - _started:6.1f}s] {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Timing and memory


def cuda_sync() -> None:
    """Wait for queued GPU work, so a timer measures it (a no-op without CUDA in use)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeat` calls of `fn` after `warmup` untimed ones (GPU work included)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        cuda_sync()
        start = time.perf_counter()
        fn()
        cuda_sync()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB.

    VmHWM from /proc where there is one: ru_maxrss of a child process also counts the parent's
    memory at fork time (Linux keeps the maximum across exec), which would blame a small child
    for a large parent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def cuda_peak_mib() -> float | None:
    """Peak GPU memory allocated by torch since the last reset, MiB; None without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def reset_cuda_peak() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (None: leave torch's default, which is recorded anyway)."""
    if n is not None:
        import torch

        torch.set_num_threads(n)


# ---------------------------------------------------------------------------
# Tables, goals, results


def fmt(value: Any) -> str:
    """A table cell: thousands separators, few digits, '-' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass
class Table:
    """A titled table of rows; printed as Markdown, stored as plain lists in the JSON."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def markdown(self) -> str:
        cells = [[fmt(c) for c in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.columns)]
        line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"  # noqa: E731
        out = [f"**{self.title}**", "", line(self.columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in cells]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows}


@dataclass(frozen=True)
class Goal:
    """A target from the issue, checked and printed; never asserted (speed is not a test)."""

    name: str
    value: float | None
    target: float
    higher_is_better: bool = True
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.target if self.higher_is_better else self.value < self.target

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<"
        verdict = {True: "met", False: "NOT met", None: "no value"}[self.met]
        return f"goal: {self.name} {op} {fmt(self.target)}{self.unit}: {fmt(self.value)}{self.unit} -> {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "target": self.target,
                "higher_is_better": self.higher_is_better, "unit": self.unit, "met": self.met}


class Report:
    """One benchmark's results: tables, goals, notes, key values; printed and written as JSON."""

    def __init__(self, bench: str, argv: Sequence[str] | None = None) -> None:
        self.bench = bench
        self.command = " ".join(["python -m bench." + bench, *(sys.argv[1:] if argv is None else argv)])
        self.machine_at_start = machine()
        self.tables: list[Table] = []
        self.goals: list[Goal] = []
        self.notes: list[str] = []
        self.values: dict[str, Any] = {}
        self.started = time.perf_counter()

    def table(self, title: str, columns: list[str]) -> Table:
        t = Table(title, columns)
        self.tables.append(t)
        return t

    def goal(self, name: str, value: float | None, target: float, *, higher_is_better: bool = True,
             unit: str = "") -> Goal:
        g = Goal(name, value, target, higher_is_better, unit)
        self.goals.append(g)
        return g

    def note(self, text: str) -> None:
        self.notes.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "command": self.command, "machine": self.machine_at_start,
                "machine_at_end": machine(), "seconds": round(time.perf_counter() - self.started, 2),
                "tables": [t.as_dict() for t in self.tables], "goals": [g.as_dict() for g in self.goals],
                "notes": self.notes, "values": self.values}

    def text(self) -> str:
        m, end = self.machine_at_start, machine()
        head = (f"## {self.bench}\n\n`{self.command}`\n\nmachine: {m['cpu_model']}, {m['cores']} cores"
                + (f", {m['gpu']}" if "gpu" in end else "")
                + f"; load average {m['loadavg_1_5_15'][0]} at start, {end['loadavg_1_5_15'][0]} at end"
                + (f"; torch {end['torch']} with {end['torch_threads']} threads" if "torch" in end else ""))
        parts = [head] + [t.markdown() for t in self.tables]
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes))
        if self.goals:
            parts.append("\n".join(g.line() for g in self.goals))
        return "\n\n".join(parts) + "\n"

    def finish(self, json_path: Path | None) -> None:
        """Print the tables and goals; write the JSON when asked."""
        sys.stdout.write(self.text())
        sys.stdout.flush()
        if json_path is not None:
            write_json(json_path, self.as_dict())


def write_json(path: Path, obj: Any) -> None:
    """JSON with NumPy scalars as plain numbers and NaN as null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(obj), indent=1, allow_nan=False) + "\n")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):   # NumPy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


# ---------------------------------------------------------------------------
# Command line and data


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a few-second smoke run on tiny data (proves the script works)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                   help=f"where bench datasets, caches and runs go (default {DEFAULT_WORK.relative_to(REPO)})")
    p.add_argument("--data-root", type=Path, default=None,
                   help="use this synthetic dataset instead of making (or reusing) one under --work")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def bench_dataset(args: argparse.Namespace) -> Path:
    """The synthetic dataset the benchmark reads: --data-root, or one made once under --work."""
    if args.data_root is not None:
        return args.data_root
    rows = QUICK_ROWS if args.quick else BENCH_ROWS
    root = Path(args.work) / f"data-{rows['train']}-{rows['val']}-{rows['test']}-s{BENCH_SEED}"
    from engine.synthetic.twin import load_summary, write_dataset

    if load_summary(root) is None:
        progress(f"making the synthetic bench dataset {root} ({rows} rows; once, reused after)")
        write_dataset(root, rows=rows, seed=BENCH_SEED)
    return root


# ---------------------------------------------------------------------------
# A training run's timings (bench_train --e2e and the GPU check read the same things)


def run_timestamped(argv: Sequence[str], log_path: Path, *, timeout: float, env: dict | None = None,
                    cwd: Path = REPO) -> tuple[int, float]:
    """Run `argv`, echo its output and write each line as '<unix time> <line>' to `log_path`.

    Returns (exit code, wall seconds). The timestamps let `phase_times` split the run.
    """
    start = time.time()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"{start:.3f} #start {' '.join(argv)}\n")
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=cwd, env=env, bufsize=1)
        # A watchdog, not a check per line: a run that hangs silently must be stopped too.
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(f"{time.time():.3f} {line.rstrip()}\n")
                log.flush()
                sys.stderr.write("    " + line)
            code = proc.wait()
        except BaseException:
            proc.kill()   # ctrl-c on the benchmark must not leave a training run behind
            proc.wait()
            raise
        finally:
            timed_out = not watchdog.is_alive() and proc.returncode is not None and proc.returncode < 0
            watchdog.cancel()
    return (124 if timed_out else code), time.time() - start


def read_timestamped(log_path: Path) -> list[tuple[float, str]]:
    """(time, line) pairs of a log written by run_timestamped or gpu.sh's timestamping loop."""
    out = []
    for raw in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines():
        stamp, _, text = raw.partition(" ")
        try:
            out.append((float(stamp), text))
        except ValueError:
            continue
    return out


def phase_times(lines: Sequence[tuple[float, str]]) -> dict[str, float | None]:
    """Seconds of each phase of an engine.train run, from its timestamped output lines.

    Keys: total, startup (to the log header), data (the engine's own figure), epochs
    (first epoch start to the last epoch's line), final_val (final gates + sensitivity
    curve on val), test (test split load + evaluation). None where a line is missing.
    """
    if not lines:
        return {}

    def first(prefix: str, start: int = 0) -> tuple[float, str] | None:
        for t, text in lines[start:]:
            if text.lstrip().startswith(prefix):
                return t, text
        return None

    def last(prefix: str) -> tuple[float, str] | None:
        found = None
        for t, text in lines:
            if text.lstrip().startswith(prefix):
                found = (t, text)
        return found

    t0 = lines[0][0]
    header = first("=====")
    data = first("data on ")
    gate0 = first("gate after 0 epoch")
    last_epoch = last("epoch ")
    best = first("best epoch")
    test = first("test (")
    data_s = None
    if data is not None:
        try:
            data_s = float(data[1].rsplit(" in ", 1)[1].rstrip("s"))
        except (IndexError, ValueError):
            data_s = None
    epochs_start = gate0 or data
    return {
        "total": lines[-1][0] - t0,
        "startup": header[0] - t0 if header else None,
        "data": data_s,
        "epochs": last_epoch[0] - epochs_start[0] if last_epoch and epochs_start else None,
        "final_val": best[0] - last_epoch[0] if best and last_epoch else None,
        "test": test[0] - best[0] if test and best else None,
    }


def run_summary(run_dir: Path) -> dict[str, Any]:
    """What a finished run's metrics.json and run.json say about time: epochs, gates, sizes."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    info = json.loads((Path(run_dir) / "run.json").read_text())
    history = metrics.get("history") or []
    epoch_times = [h["epoch_time_sec"] for h in history if h.get("epoch_time_sec") is not None]
    train_times = [h["train_time_sec"] for h in history if h.get("train_time_sec") is not None]
    gates = metrics.get("gates") or []
    gate_times = [g["gate_time_sec"] for g in gates if g.get("gate_time_sec") is not None]
    data = info.get("data") or {}
    rows = {split: (data.get(split) or {}).get("count") for split in ("train", "val", "test")}
    # The first epoch holds cuDNN's autotuning: medians leave it out when there are others.
    epoch_median = median(epoch_times[1:] or epoch_times) if epoch_times else None
    train_median = median(train_times[1:] or train_times) if train_times else None
    val_times = [h["epoch_time_sec"] - h["train_time_sec"] for h in history
                 if h.get("epoch_time_sec") is not None and h.get("train_time_sec") is not None]
    val_seconds = median(val_times[1:] or val_times) if val_times else None
    return {
        "status": metrics.get("status"),
        "exit_status": info.get("exit_status"),
        "device": info.get("device"),
        "precision": info.get("precision"),
        "training_step": info.get("training_step"),
        "epochs_done": len(history),
        "epoch_time_sec": epoch_times,
        "epoch_time_median": epoch_median,
        "first_epoch_time": epoch_times[0] if epoch_times else None,
        "train_time_sec": train_times,
        "train_time_median": train_median,
        # The engine's own rates: the training part of an epoch, and the rest (predicting val).
        "train_img_s": rows["train"] / train_median if rows["train"] and train_median else None,
        "val_img_s": rows["val"] / val_seconds if rows["val"] and val_seconds and val_seconds > 0 else None,
        "gate_time_sec": gate_times,
        "gate_n_samples": [g.get("gate_n_samples") for g in gates],
        "gate_n_and_time": [(g.get("gate_n_samples"), g["gate_time_sec"]) for g in gates
                            if g.get("gate_time_sec") is not None],
        "rows": rows,
        "best_val_auroc": metrics.get("best_val_auroc"),
        "test_auroc": metrics.get("test_auroc"),
        "final_core_lr_auc": metrics.get("final_core_lr_auc"),
        "core_reliance": metrics.get("core_reliance"),
        "overrides": metrics.get("overrides"),
    }
