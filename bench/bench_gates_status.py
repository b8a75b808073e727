"""Benchmark 4: the shortcut gates, the status probe's round trip, and the TUI's CPU when idle.

gates   engine.data.gates.shortcut_gates (core + radial, 5-fold grouped CV) on 2,000 preprocessed
        validation images of the synthetic bench dataset, and on 20,000: those images tiled
        with fresh noise and fresh LRG ids (the cost depends on n and the feature count,
        not on which pixels they are). 100,000 (the final gate on full val) is projected
        per component from 2k -> 20k, never below linear.
status  one refresh of one host with 10 run directories: engine.protocol.status.probe in-process
        (what Fleet does for `local`), `python -m engine.status` as a subprocess, the
        local host through `engine.status --serve` on a pipe, and over a real OpenSSH
        sshd on loopback (when sshd exists): one exec per refresh (before) against the
        long-lived `--serve` channel (now), alternating on one connection.
tui     the real app (lenstui.app.make_app, the real Fleet) headless under App.run_test(),
        4 hosts (local; an ssh host pointing at a closed port; two disabled) and 10 run
        directories, polling every 2 s; process CPU time over ~10 s idle / wall time, on the
        main screen and then on the run detail of A1 (its curves and bars drawn).
        Measured in a child process, so nothing else in this process counts.

    .venv/bin/python -m bench.bench_gates_status [--quick] [--part gates|status|tui] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from bench.common import REPO, Report, bench_dataset, median, p90, parser, peak_rss_mib, progress, write_json

GATE_N = 2_000
GATE_BIG = 20_000
GATE_PROJECTED = 100_000
RUNS = ("A1", "B1", "B2", "B3", "B4", "FULL", "S1", "S2", "S3", "S4")


# ---------------------------------------------------------------------------
# Gates


def gate_components(images, labels, groups, n: int) -> dict[str, float]:
    """Seconds of each part of shortcut_gates on a balanced sample of n (same calls, timed apart)."""
    import numpy as np
    from engine.data.gates import balanced_sample, core_features, cv_auc, cv_splits, radial_features

    t: dict[str, float] = {}
    start = time.perf_counter()
    idx = balanced_sample(labels, n, 1337)
    x, y, g = np.asarray(images[idx]), labels[idx], groups[idx]
    t["sample"] = time.perf_counter() - start
    start = time.perf_counter()
    splits = cv_splits(y, g, 5, 1337)
    t["cv splits (StratifiedGroupKFold)"] = time.perf_counter() - start
    start = time.perf_counter()
    core = core_features(x, 10, 0)
    t["core features"] = time.perf_counter() - start
    start = time.perf_counter()
    cv_auc(core, y, splits)
    t["core LR, 5 folds"] = time.perf_counter() - start
    start = time.perf_counter()
    radial = radial_features(x, 0)
    t["radial features (ring medians, 2,048 at a time)"] = time.perf_counter() - start
    start = time.perf_counter()
    cv_auc(radial, y, splits)
    t["radial LR, 5 folds"] = time.perf_counter() - start
    start = time.perf_counter()
    whole = before_radial_features(x, 0)
    t[BEFORE_RADIAL] = time.perf_counter() - start
    if not np.array_equal(whole, radial):
        raise AssertionError("engine.data.gates.radial_features differs from the whole-sample reference")
    return t


BEFORE_RADIAL = "radial features, whole sample at once (before; not in the sum)"


def before_radial_features(images, mask_radius: int = 0):
    """engine.data.gates.radial_features as it was up to commit fe64e86: the whole sample to float32 at once.

    47.6 kB per image (4.8 GB, 9.5 GB masked, for the final gate on 100k val images); kept
    as the measured baseline and the reference the engine's chunked features must equal.
    """
    import numpy as np
    from engine.data.preprocess import radial_profile, radius_map

    x = np.asarray(images, dtype=np.float32)
    if mask_radius > 0:
        x = x * (radius_map(x.shape[-1]) >= mask_radius)
    return radial_profile(x).reshape(len(x), -1).astype(np.float64)


def tiled(images, labels, groups, n: int, seed: int = 0):
    """At least n images: copies of `images` with fresh noise (σ = 0.1) and fresh LRG ids per copy."""
    import numpy as np

    copies = math.ceil(n / len(labels))
    rng = np.random.default_rng(seed)
    out = np.empty((copies * len(labels), *images.shape[1:]), np.float16)
    for c in range(copies):
        part = out[c * len(labels):(c + 1) * len(labels)]
        part[:] = np.asarray(images, np.float32) + rng.normal(0, 0.1, images.shape).astype(np.float32)
    span = int(groups.max()) + 1
    all_groups = np.concatenate([groups + c * span for c in range(copies)])
    return out, np.tile(labels, copies), all_groups


def run_gates(args, report: Report) -> None:
    import numpy as np
    from engine.data.load import load_split
    from engine.data.gates import shortcut_gates

    root = bench_dataset(args)
    arrays = load_split(root, mode="paired", sample="full", split="val", preprocessing="residual",
                        cache_dir=Path(args.work) / "gate-cache")
    images, labels, groups = np.asarray(arrays.images), arrays.labels, arrays.lrg_id
    n_small = min(GATE_N, 2 * int(min(labels.sum(), len(labels) - labels.sum())))
    n_big = 1_000 if args.quick else GATE_BIG
    progress(f"gates: {len(labels)} val images; timing n={n_small}")

    whole = []
    for _ in range(1 if args.quick else 3):
        start = time.perf_counter()
        result = shortcut_gates(images, labels, groups, n_samples=n_small)
        whole.append(time.perf_counter() - start)
    small = gate_components(images, labels, groups, n_small)
    progress(f"gates: n={n_small}: {median(whole):.2f}s (core {result.core_lr_auc:.3f}, "
             f"radial {result.radial_lr_auc:.3f}); tiling to n={n_big}")
    big_images, big_labels, big_groups = tiled(images, labels, groups, n_big)
    start = time.perf_counter()
    shortcut_gates(big_images, big_labels, big_groups, n_samples=n_big)
    whole_big = time.perf_counter() - start
    big = gate_components(big_images, big_labels, big_groups, n_big)
    del big_images
    progress(f"gates: n={n_big}: {whole_big:.1f}s")

    factor = GATE_PROJECTED / n_big
    table = report.table("Shortcut gates (core + radial, 5-fold StratifiedGroupKFold), seconds",
                         ["part", f"n={n_small:,}", f"n={n_big:,}", "growth exponent",
                          f"n={GATE_PROJECTED:,} (projected)"])
    projected_total = 0.0
    for part in small:
        a, b = small[part], big[part]
        exponent = math.log(b / a) / math.log(n_big / n_small) if a > 0 and b > 0 else 1.0
        # Never project below linear: the noise of a small part must not promise the impossible.
        proj = b * factor ** max(exponent, 1.0)
        if part != BEFORE_RADIAL:
            projected_total += proj
        table.add(part, a, b, exponent, proj)
    table.add("shortcut_gates() as called (median; projected: sum of the parts)", median(whole), whole_big, None,
              projected_total)
    report.values.update(gate_2k_s=median(whole), gate_n_small=n_small, gate_big_s=whole_big, gate_n_big=n_big,
                         gate_100k_projected_s=projected_total, gate_core_lr_auc_2k=result.core_lr_auc,
                         gate_radial_lr_auc_2k=result.radial_lr_auc)
    report.note(f"n={n_big:,} is the {len(labels):,} bench val images tiled with noise; "
                f"{GATE_PROJECTED:,} is projected from it, per part, at max(measured exponent, 1)")
    report.note("a masked experiment (B2-B4) computes the gate twice (unmasked and at its mask radius): "
                "double these for them")
    report.goal(f"gates on {n_small:,} samples", median(whole), 2.0, higher_is_better=False, unit=" s")


# ---------------------------------------------------------------------------
# Fixture: 10 run directories and a 4-host config


def write_runs(runs_root: Path, config) -> None:
    """10 run directories with metrics as the engine writes them; B2 and FULL 'running' as this process."""
    from engine.protocol import rundir
    from engine.results.verdicts import compute_verdicts

    me = rundir.process_identity(os.getpid())
    for i, exp in enumerate(RUNS):
        d = rundir.run_dir(runs_root, exp)
        d.mkdir(parents=True, exist_ok=True)
        running = exp in ("B2", "FULL")
        epochs = 20 if running else 50
        m = rundir.new_metrics(exp, 50, {"epochs": 3} if exp.startswith("S") else {})
        for e in range(epochs):
            m["history"].append({"epoch": e, "train_loss": 0.7 / (e + 1), "val_auroc": 0.8 + 0.003 * e,
                                 "val_loss": 0.5 - 0.004 * e, "learning_rate": 1e-4, "epoch_time_sec": 61.0})
        bins = [[0.5, 0.75], [0.75, 1.0], [1.0, 1.5], [1.5, 2.0], [2.0, 2.5], [2.5, 3.0]]
        for after in range(0, epochs + 1, 5):
            m["gates"].append({"after_epochs": after, "core_lr_auc": 0.58 + 0.01 * i, "radial_lr_auc": 0.52,
                               "gate_n_samples": 2000, "gate_time_sec": 1.2,
                               "val_auroc_by_thetae": [{"bin": b, "auroc": 0.8 + 0.02 * k, "count": 700,
                                                        "note": None} for k, b in enumerate(bins)]})
        if not running:
            m.update(best_val_auroc=0.947, best_epoch=49, final_core_lr_auc=0.6, final_radial_lr_auc=0.52,
                     core_sensitivity=[{"radius": r, "auroc": 0.95 - 0.004 * r} for r in (0, 3, 5, 7, 10, 15)],
                     core_reliance=0.028, test_auroc=0.93,
                     status={"B3": "failed", "B4": "aborted"}.get(exp, "done"))
        m["verdicts"] = compute_verdicts(m, config.thresholds, config.targets)
        rundir.write_metrics(d, m)
        info = {"experiment": exp, "host": "local", **rundir.identity_record(me), "pgid": os.getpgid(0),
                "command": ["python", "-m", "engine.train", "--experiment", exp], "status": m["status"]}
        if not running:   # a finished run records a process that is long gone
            info.update(pid=2_000_000 + i, pid_start_ticks=1, exit_status=0)
        rundir.write_run_info(d, info)
        (d / rundir.LOG_FILE).write_text("".join(f"epoch {e + 1} ...\n" for e in range(epochs)))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, runs_root: Path, ssh_port: int) -> Path:
    """experiments.toml's plan with 4 hosts: local, an ssh host at a closed port, two disabled."""
    kept, skipping = [], False
    for line in (REPO / "experiments.toml").read_text().splitlines():
        if line.startswith("["):
            skipping = line.startswith(("[datasets.", "[hosts."))
        if not skipping:
            kept.append(line)
    user = os.environ.get("USER") or "root"
    hosts = [
        '[datasets.bench]\nkind = "synthetic"\nroot = "data/none"\n',
        f'[hosts.local]\ntransport = "local"\nwork_dir = "{REPO}"\npython = "{sys.executable}"\n'
        f'runs_root = "{runs_root}"\ndataset = "bench"\n',
        f'[hosts.lambda]\ntransport = "ssh"\nssh_host = "127.0.0.1"\nport = {ssh_port}\nuser = "{user}"\n'
        f'work_dir = "/nonexistent"\npython = "python3"\nruns_root = "/nonexistent/runs"\ndataset = "bench"\n',
    ] + [f'[hosts.{h}]\nenabled = false\ntransport = "ssh"\nssh_host = "{h}"\nwork_dir = "/w"\n'
         f'python = "python3"\nruns_root = "/w/runs"\ndataset = "bench"\n' for h in ("lambda2", "lambda3")]
    path.write_text("\n".join(kept) + "\n" + "\n".join(hosts))
    return path


def ssh_options(tmp: Path):
    """SSH options that read nothing of the user's ~/.ssh (an empty config and known_hosts)."""
    from lenstui.transport import SshOptions

    (tmp / "ssh_config").write_text("")
    (tmp / "known_hosts").write_text("")
    return SshOptions(ssh_config=tmp / "ssh_config", known_hosts=tmp / "known_hosts", system_known_hosts=None,
                      connect_timeout=2.0)


# ---------------------------------------------------------------------------
# Status probe


def run_status(args, report: Report) -> None:
    from engine.config import load_config
    from engine.protocol.status import probe
    from lenstui.fleet import Fleet

    reps = 3 if args.quick else 20
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        tmp = Path(tmp)
        runs = tmp / "runs"
        config_path = write_config(tmp / "experiments.toml", runs, closed_port())
        config = load_config(config_path)
        write_runs(runs, config)
        table = report.table("Status probe: one refresh of one host with 10 runs, milliseconds",
                             ["path", "first", "median", "p90", "answer bytes"])
        times = [_timed(lambda: probe(runs)) for _ in range(reps + 1)]
        size, delta_size = answer_sizes(runs)
        table.add("in-process engine.protocol.status.probe (Fleet's local host)", times[0] * 1e3, median(times[1:]) * 1e3,
                  p90(times[1:]) * 1e3, size)
        in_process = median(times[1:])
        argv = [sys.executable, "-m", "engine.status", "--runs-root", str(runs)]
        times = [_timed(lambda: subprocess.run(argv, cwd=REPO, capture_output=True, check=True))
                 for _ in range(max(2, reps // 4) + 1)]
        table.add("subprocess `python -m engine.status`, one per refresh (before)", times[0] * 1e3,
                  median(times[1:]) * 1e3, p90(times[1:]) * 1e3, size)
        subprocess_s = median(times[1:])
        fleet = Fleet(config, config_path, ssh_options=ssh_options(tmp), local_status_in_process=False)
        try:
            times = [_timed(lambda: _polled(fleet, "local")) for _ in range(2 * reps + 1)]
        finally:
            fleet.close()
        table.add("Fleet.poll, local host through `engine.status --serve` on a pipe", times[0] * 1e3,
                  median(times[1:]) * 1e3, p90(times[1:]) * 1e3, delta_size)
        served_s = median(times[1:])
        ssh = _ssh_round_trip(args, tmp, runs, table, reps)
    report.values.update(status_in_process_ms=in_process * 1e3, status_subprocess_ms=subprocess_s * 1e3,
                         status_served_local_ms=served_s * 1e3, status_answer_bytes=size,
                         status_answer_bytes_unchanged=delta_size,
                         status_ssh_ms=None if ssh is None else ssh["median"] * 1e3,
                         status_ssh_p90_ms=None if ssh is None else ssh["p90"] * 1e3,
                         status_ssh_exec_ms=None if ssh is None else ssh["exec_median"] * 1e3)
    report.note("`engine.status --serve` is started once per host over the open connection; each refresh is "
                "one request line and one answer line, computed when the request arrives; a run's history and "
                "gates are sent only when they changed (answer bytes: when nothing changed)")
    if ssh is not None:
        report.note(f"over SSH the channel is {ssh['exec_median'] / ssh['median']:.0f}x faster than one exec of "
                    "`python -m engine.status` per refresh (before), measured on the same connection")
    report.goal("status round trip, in-process", in_process * 1e3, 300, higher_is_better=False, unit=" ms")
    report.goal("status round trip, local status server", served_s * 1e3, 300, higher_is_better=False, unit=" ms")
    if ssh is not None:
        report.goal("status round trip, SSH on loopback (median)", ssh["median"] * 1e3, 300, higher_is_better=False,
                    unit=" ms")
        report.goal("status round trip, SSH on loopback (p90)", ssh["p90"] * 1e3, 300, higher_is_better=False,
                    unit=" ms")


def answer_sizes(runs: Path) -> tuple[int, int]:
    """Bytes of a whole status answer, and of the --serve answer when no run changed since the last one."""
    from engine.protocol.status import _leave_out_unchanged, probe

    first, second = probe(runs), probe(runs)
    size = len(json.dumps(first))
    _leave_out_unchanged(second["runs"], _leave_out_unchanged(first["runs"], {}))
    return size, len(json.dumps(second))


def add_epoch(runs_root: Path) -> None:
    """One more epoch in every run's metrics.json (so no history is unchanged at the next poll)."""
    from engine.protocol import rundir

    for d in sorted(runs_root.iterdir()):
        metrics = rundir.read_metrics(d).data
        last = dict(metrics["history"][-1])
        last["epoch"] += 1
        metrics["history"].append(last)
        rundir.write_metrics(d, metrics)


def _polled(fleet, host: str) -> None:
    snap = fleet.poll(host)
    if snap.status is None or snap.error:
        raise SystemExit(f"status bench: polling {host} failed: {snap.error}")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ssh_round_trip(args, tmp: Path, runs: Path, table, reps: int) -> dict[str, float] | None:
    """Fleet.poll over a real sshd on 127.0.0.1 (tests/sshd.py's SshLab), before and now; None without sshd."""
    if args.quick:
        table.add("SSH on loopback: not in --quick (needs an sshd started for it)", None, None, None, None)
        return None
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import sshd as lab_module   # the test suite's real-sshd helper; benchmarks may borrow it
    except ImportError as exc:
        table.add(f"SSH on loopback: skipped ({exc})", None, None, None, None)
        return None
    reason = lab_module.sshd_missing()
    if reason:
        table.add(f"SSH on loopback: skipped ({reason})", None, None, None, None)
        return None
    from engine.config import load_config
    from lenstui.fleet import Fleet

    lab = lab_module.SshLab(tmp / "lab", names=("h1",)).start()
    try:
        server = lab.servers["h1"]
        lab_module.install_engine(server.work_dir, standin=True)
        config_path = lab.write_config(tmp / "lab.toml", runs)
        config = load_config(config_path)
        write_runs(server.runs_root, config)
        size, delta_size = answer_sizes(server.runs_root)
        fleet = Fleet(config, config_path, ssh_options=lab.options())
        try:
            transport, paths = fleet.transport("h1"), fleet.paths("h1")
            # Before: one exec of `python -m engine.status` per refresh (what Fleet still does for an
            # engine without --serve), timed on the same connection, alternating with the channel.
            once, served = [], []
            first_served = _timed(lambda: _polled(fleet, "h1"))   # connects, starts the server
            for i in range(2 * reps):
                served.append(_timed(lambda: _polled(fleet, "h1")))
                if i % 4 == 0:
                    once.append(_timed(lambda: fleet._poll_once("h1", transport, paths)))
            changed = []
            for _ in range(max(3, reps // 2)):   # every run's history grew since the last poll: whole answers
                add_epoch(server.runs_root)
                changed.append(_timed(lambda: _polled(fleet, "h1")))
            bare = [_timed(lambda: transport.run(["true"], timeout=10)) for _ in range(max(3, reps // 4))]
        finally:
            fleet.close()
    finally:
        lab.close()
    table.add("Fleet.poll over SSH, one exec of `python -m engine.status` per refresh (before)", None,
              median(once) * 1e3, p90(once) * 1e3, size)
    table.add("Fleet.poll over SSH, the `engine.status --serve` channel (first: connect + start)",
              first_served * 1e3, median(served) * 1e3, p90(served) * 1e3, delta_size)
    table.add("the same channel when every run's history changed since the last poll", None,
              median(changed) * 1e3, p90(changed) * 1e3, answer_sizes(server.runs_root)[0])
    table.add("the same connection running `true` (sshd's cost per exec here)", None, median(bare) * 1e3,
              p90(bare) * 1e3, 0)
    return {"median": median(served), "p90": p90(served), "exec_median": median(once)}


# ---------------------------------------------------------------------------
# The TUI's idle CPU


def run_tui(args, report: Report) -> None:
    idle = 2.0 if args.quick else 10.0
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        out = Path(tmp) / "tui.json"
        argv = [sys.executable, "-m", "bench.bench_gates_status", "--part", "tui-child", "--idle", str(idle),
                "--json", str(out)]
        progress(f"tui: the app headless with 4 hosts and 10 runs, {idle:g}s idle (child process)")
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120 + idle)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"the TUI child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        r = json.loads(out.read_text())
    table = report.table("The TUI idle: 4 hosts (1 local, 1 ssh at a closed port, 2 disabled), 10 runs, refresh 2 s",
                         ["measure", "value"])
    table.add("start to first screen with the local host polled, s", r["startup_s"])
    table.add("idle window, wall s", r["wall_s"])
    table.add("process CPU in the window (all threads), s", r["cpu_s"])
    table.add("CPU, % of one core", r["cpu_percent"])
    table.add("polls finished in the window (all hosts)", r["polls"])
    table.add("enter to the run detail (curves, θ_E and sensitivity charts) drawn, s", r["detail_open_s"])
    table.add("CPU over the same idle window on the run detail, % of one core", r["detail_cpu_percent"])
    table.add("peak RSS MiB", r["peak_rss_mib"])
    report.values["tui"] = r
    report.note("headless (App.run_test): layout and rendering run, the terminal write does not")
    report.goal("TUI idle CPU", r["cpu_percent"], 5.0, higher_is_better=False, unit=" %")


async def _tui_child(idle: float) -> dict[str, Any]:
    """Run the app; measure CPU over `idle` seconds once the first polls are in. Child process only."""
    from engine.config import load_config
    from lenstui.app import make_app
    from lenstui.fleet import Fleet

    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        tmp = Path(tmp)
        runs = tmp / "runs"
        config_path = write_config(tmp / "experiments.toml", runs, closed_port())
        config = load_config(config_path)
        write_runs(runs, config)
        fleet = Fleet(config, config_path, ssh_options=ssh_options(tmp))
        polls = {"n": 0}
        poll = fleet.poll

        def counted(host: str):
            try:
                return poll(host)
            finally:
                polls["n"] += 1

        fleet.poll = counted   # count refreshes; the Fleet itself is the real one
        started = time.perf_counter()
        app = make_app(config_path, fleet=fleet)
        try:
            async with app.run_test(size=(160, 48)) as pilot:
                deadline = time.monotonic() + 60
                while not {"local", "lambda"} <= set(app.snapshots) and time.monotonic() < deadline:
                    await pilot.pause(0.05)
                startup = time.perf_counter() - started
                if "local" not in app.snapshots:
                    raise RuntimeError("the local host was never polled")
                await pilot.pause(0.5)   # let the first redraws settle
                n0 = polls["n"]
                c0, w0 = time.process_time(), time.perf_counter()
                await asyncio.sleep(idle)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                n1 = polls["n"]
                # The run detail of A1 (50 epochs): its curves and bars are the screen's charts.
                opened = time.perf_counter()
                await pilot.press("enter")
                while type(app.screen).__name__ != "DetailScreen" and time.perf_counter() - opened < 30:
                    await pilot.pause(0.01)
                await pilot.pause()
                detail_open = time.perf_counter() - opened
                await pilot.pause(0.5)
                c1, w1 = time.process_time(), time.perf_counter()
                await asyncio.sleep(idle)
                detail_cpu, detail_wall = time.process_time() - c1, time.perf_counter() - w1
        finally:
            fleet.close()
    return {"startup_s": startup, "wall_s": wall, "cpu_s": cpu, "cpu_percent": 100.0 * cpu / wall,
            "polls": n1 - n0, "detail_open_s": detail_open, "detail_cpu_s": detail_cpu,
            "detail_cpu_percent": 100.0 * detail_cpu / detail_wall, "peak_rss_mib": peak_rss_mib()}


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--part", choices=("gates", "status", "tui", "tui-child"), action="append",
                   help="run only these parts (repeatable; default all three)")
    p.add_argument("--idle", type=float, default=10.0, help=argparse.SUPPRESS)   # for the TUI child
    args = p.parse_args(argv)
    parts = args.part or ["gates", "status", "tui"]
    if parts == ["tui-child"]:
        write_json(args.json, asyncio.run(_tui_child(args.idle)))
        return 0
    report = Report("bench_gates_status", argv)
    if "gates" in parts:
        run_gates(args, report)
    if "status" in parts:
        run_status(args, report)
    if "tui" in parts:
        run_tui(args, report)
    report.values["peak_rss_mib"] = peak_rss_mib()
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
