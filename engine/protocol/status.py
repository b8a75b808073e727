"""The host-side status probe: GPUs and every run of one runs root, as one JSON object.

`python -m engine.status --runs-root DIR [--watch SECONDS]` runs on each host
(over SSH, or in-process for the local host) and answers one refresh in one
round trip: the GPUs (NVML through nvidia-ml-py, `nvidia-smi` CSV as fallback)
and each run's state reconciled against the process table (so a dead run reads
`lost`), with its latest metrics and full history for the curves.

`python -m engine.status --serve --runs-root DIR` is the same answer as a
long-lived server, so a refresh costs neither an SSH exec nor a Python start:
one JSON request line on stdin, one JSON answer line on stdout, computed fresh
for each request (see `serve`). It exits when stdin closes.

`python -m engine.status --preflight [--data-root DIR]` checks that this Python
has what training needs (torch, numpy, scikit-learn, pandas, pyarrow) and
sees GPUs; only that mode imports torch.

Torch-free at module level: lenstui imports this on a laptop.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

from engine import ENGINE_VERSION

from engine import files

from engine.protocol import rundir, schema
from engine.protocol.gpus import _nvml_module, gpu_snapshot
from engine.protocol.codeversion import synced_version

HISTORY_CAP = 300          # epochs kept in a status answer; the plan runs 50
# Every third-party module engine.train imports (no torchvision); tests/test_status.py checks the list.
TRAIN_MODULES = ("torch", "numpy", "sklearn", "pandas", "pyarrow", "threadpoolctl")
PIP_NAMES = {"sklearn": "scikit-learn"}


SERVE_PROTOCOL = 1       # bumped when the --serve request or answer changes incompatibly
SERVE_IDLE_EXIT = 600.0  # a server with no request for this long exits (a half-open link, a vanished client)
DELTA_KEYS = ("history", "gates")   # the bulk of an answer: sent again only when it changed


# ---------------------------------------------------------------------------
# Runs


def run_status(directory: Path) -> dict[str, Any]:
    """One run's entry of the status answer."""
    view = rundir.observe_run(directory)
    metrics = view.metrics or {}
    info = view.run_info or {}
    launch = files.read_json(directory / rundir.LAUNCH_FILE).data or {}
    history = metrics.get("history") if isinstance(metrics.get("history"), list) else []
    gates = metrics.get("gates") if isinstance(metrics.get("gates"), list) else []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    # Every metric the engine wrote flows through (the report and the decision panel read
    # these entries as metrics documents); the reconciled fields below take precedence.
    entry: dict[str, Any] = {k: v for k, v in metrics.items() if k != "history"}
    entry.update({
        "experiment": view.experiment,     # the experiment id; `name` is the directory (a replicate: B1@seed43)
        "name": view.name,
        "state": view.state.value,
        "reason": view.reason or None,
        "written_status": metrics.get("status"),
        "epoch": last.get("epoch"),        # the newest finished epoch, counted from 1 (= epochs done)
        "epochs_planned": metrics.get("epochs_planned"),
        "val_auroc": last.get("val_auroc"),
        "gate": gates[-1] if gates else None,
        "gates": gates,
        "verdicts": metrics.get("verdicts") if isinstance(metrics.get("verdicts"), dict) else {},
        "history": history[-HISTORY_CAP:],
        "history_truncated": len(history) > HISTORY_CAP,
        "errors": list(view.errors),
        "pid": info.get("pid", launch.get("pid")),
        "pgid": info.get("pgid", launch.get("pgid")),
        "gpu": launch.get("gpu"),
        "launched_at": launch.get("launched_at"),
        "launch_failure": view.launch_failure,
        "resumable": (directory / rundir.LAST_CKPT).is_file(),
        "log_bytes": _size(directory / rundir.LOG_FILE),
    })
    for key in schema.STATUS_KEYS:
        entry.setdefault(key, None)
    entry["run"] = {key: info.get(key) for key in schema.RUN_SUMMARY_KEYS if key in info}
    return entry


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _match_gpu_processes(gpus: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> None:
    """Name the experiment behind each GPU process (its pid, or its process group, is a run's)."""
    by_pid = {r["pid"]: exp for exp, r in runs.items() if isinstance(r.get("pid"), int)}
    by_pgid = {r["pgid"]: exp for exp, r in runs.items()
               if isinstance(r.get("pgid"), int) and r["state"] in rundir.IN_PROGRESS}
    for gpu in gpus:
        for proc in gpu["processes"]:
            exp = by_pid.get(proc["pid"])
            if exp is None:
                try:  # DataLoader workers share the training process's group
                    exp = by_pgid.get(os.getpgid(proc["pid"]))
                except (OSError, TypeError):
                    exp = None  # another user's process, or a pid from another namespace
            proc["experiment"] = exp
            if exp is not None and runs[exp]["gpu"] is None:
                runs[exp]["gpu"] = str(gpu["index"])


def probe(runs_root: str | Path) -> dict[str, Any]:
    """The whole status answer for this host: GPUs and every run under `runs_root`."""
    root = Path(os.path.expanduser(str(runs_root)))
    gpus, source, note = gpu_snapshot()
    runs = {d.name: run_status(d) for d in rundir.run_directories(root)}
    _match_gpu_processes(gpus, runs)
    return {
        "engine_version": ENGINE_VERSION,
        "synced_code_version": synced_version(),   # what `lenstui sync` recorded here (None: a checkout)
        "host": socket.gethostname(),
        "time": time.time(),
        "runs_root": str(root),
        "runs_root_exists": root.is_dir(),
        "gpus": gpus,
        "gpu_source": source,
        "gpu_note": note,
        "runs": runs,
    }


# ---------------------------------------------------------------------------
# Serve: one request line in, one answer line out


def serve(runs_root: str | Path, stdin_fd: int = 0, stdout: Any = None,
          idle_exit: float = SERVE_IDLE_EXIT) -> int:
    """Answer status requests on stdin until it closes; returns the exit status.

    Protocol (one JSON object per line): first a hello,
    `{"serve": SERVE_PROTOCOL, "engine_version": ..., "pid": ...}`; then for each
    request `{"id": N, "full": bool}` the answer `{"id": N, "status": <probe()>}`,
    computed when the request arrives. In an answer each run's `history` and
    `gates` are left out, and named in its `unchanged` list, when they equal what
    this server last sent for that run (unless `full`): a client keeps the last
    answer. `{"id": N, "error": TEXT}` when the probe fails (the server goes on);
    `{"id": N, "restart": TEXT}` when the engine's code on disk changed since the
    server started (after `lenstui sync`): the server exits, the client starts
    the new code. End of stdin, or no request for `idle_exit` seconds, ends it.
    """
    out = stdout if stdout is not None else sys.stdout
    code = _code_stamp()
    _nvml_module()   # at start: the first poll does not pay for NVML's initialisation
    sent: dict[str, dict[str, Any]] = {}
    _emit(out, {"serve": SERVE_PROTOCOL, "engine_version": ENGINE_VERSION, "pid": os.getpid()})
    pending = b""
    while True:
        line, pending = _read_request(stdin_fd, pending, idle_exit)
        if line is None:
            return 0
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            _emit(out, {"id": None, "error": f"engine.status --serve: bad request {line[:100]!r}: {exc}"})
            continue
        rid = request.get("id")
        if _code_stamp() != code:
            _emit(out, {"id": rid, "restart": "the engine's code on this host changed since this server started"})
            return 0
        try:
            answer = probe(runs_root)
        except Exception as exc:  # a bug in the probe is reported to the screen; the next request may work
            _emit(out, {"id": rid, "error": f"status probe failed: {type(exc).__name__}: {exc}"})
            continue
        if request.get("full"):
            sent = {}
        sent = _leave_out_unchanged(answer["runs"], sent)
        _emit(out, {"id": rid, "status": answer})


def _read_request(fd: int, pending: bytes, idle_exit: float) -> tuple[str | None, bytes]:
    """The next line from `fd` and what followed it; None at end of input or after `idle_exit` s of silence."""
    while b"\n" not in pending:
        ready, _, _ = select.select([fd], [], [], idle_exit)
        if not ready:
            return None, b""
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, b""
        pending += chunk
    line, rest = pending.split(b"\n", 1)
    return line.decode("utf-8", "replace"), rest


def _leave_out_unchanged(runs: dict[str, dict[str, Any]],
                         sent: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Drop each run's DELTA_KEYS equal to what was last sent (naming them in `unchanged`); returns the new memory."""
    memory: dict[str, dict[str, Any]] = {}
    for name, entry in runs.items():
        memory[name] = {key: entry.get(key) for key in DELTA_KEYS}
        before = sent.get(name)
        # Compared by value, not by metrics.json's updated_at: that has a resolution of one second.
        same = [key for key in DELTA_KEYS if before is not None and key in entry and before[key] == entry[key]]
        for key in same:
            del entry[key]
        if same:
            entry["unchanged"] = same
    return memory


def _code_stamp() -> dict[str, tuple[int, int, int] | None]:
    """Identity (inode, size, mtime) of every engine module this process loaded: `sync` replaces them."""
    stamp: dict[str, tuple[int, int, int] | None] = {}
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)   # `python -m engine.status` is __main__, spec engine.status
        name, path = getattr(spec, "name", "") or "", getattr(module, "__file__", None)
        if path and (name == "engine" or name.startswith("engine.")):
            try:
                st = os.stat(path)
                stamp[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                stamp[path] = None
    return stamp


# ---------------------------------------------------------------------------
# Preflight


def preflight(data_root: str | None = None) -> dict[str, Any]:
    """What this Python can train with: module versions, missing modules, GPUs, data root."""
    import importlib

    modules: dict[str, str | None] = {}
    problems: list[str] = []
    for name in TRAIN_MODULES:
        try:
            module = importlib.import_module(name)
            modules[name] = str(getattr(module, "__version__", "?"))
        except Exception as exc:  # a broken install is as missing as an absent one
            modules[name] = None
            problems.append(f"cannot import {name} ({type(exc).__name__}: {exc})")
    missing = [PIP_NAMES.get(n, n) for n, v in modules.items() if v is None]
    if missing:
        problems.append(f"install with: {sys.executable} -m pip install {' '.join(missing)}")
    cuda: list[str] = []
    if modules.get("torch"):
        import torch

        if torch.cuda.is_available():
            cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    gpus, source, note = gpu_snapshot()
    data = None
    if data_root:
        path = Path(os.path.expanduser(data_root))
        data = {"path": str(path), "exists": path.exists()}
        if not path.exists():
            problems.append(f"dataset root {path} does not exist on this host")
    return {
        "engine_version": ENGINE_VERSION,
        "host": socket.gethostname(),
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "modules": modules,
        "missing": missing,
        "cuda_devices": cuda,
        "gpus": [g["name"] for g in gpus],
        "gpu_source": source,
        "gpu_note": note,
        "data": data,
        "problems": problems,
        "ok": not problems,
    }


# ---------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.status", description=__doc__.split("\n")[0])
    parser.add_argument("--runs-root", help="the host's runs root (one directory per experiment)")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="print one JSON line every SECONDS until stdout closes")
    parser.add_argument("--serve", action="store_true",
                        help="answer one JSON line per request line on stdin, until stdin closes")
    parser.add_argument("--idle-exit", type=float, default=SERVE_IDLE_EXIT, metavar="SECONDS",
                        help=f"with --serve: exit after SECONDS without a request (default {SERVE_IDLE_EXIT:g})")
    parser.add_argument("--preflight", action="store_true", help="check this Python can train")
    parser.add_argument("--data-root", help="with --preflight: the dataset root to check")
    args = parser.parse_args(argv)
    try:
        if args.preflight:
            _emit(sys.stdout, preflight(args.data_root))
            return 0
        if not args.runs_root:
            parser.error("--runs-root is required (or --preflight)")
        if args.serve:
            if args.watch is not None:
                parser.error("--serve and --watch do not go together")
            if args.idle_exit <= 0:
                parser.error("--idle-exit needs a positive number of seconds")
            return serve(args.runs_root, idle_exit=args.idle_exit)
        if args.watch is None:
            _emit(sys.stdout, probe(args.runs_root))
            return 0
        if args.watch <= 0:
            parser.error("--watch needs a positive number of seconds")
        while True:
            _emit(sys.stdout, probe(args.runs_root))
            time.sleep(args.watch)
    except BrokenPipeError:
        # The reader went away (the TUI closed the channel): that ends a watch or a server normally.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _emit(out: Any, obj: dict[str, Any]) -> None:
    out.write(json.dumps(files.json_safe(obj), allow_nan=False) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
