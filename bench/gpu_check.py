"""The Python steps of bench/gpu.sh: environment, GPU sampler, stamp cache warm-up, and the report.

    python -m bench.gpu_check env --out DIR               # versions, GPU, CPU -> DIR/env.json
    python -m bench.gpu_check sample --out FILE            # NVML utilisation every 0.5 s until killed
    python -m bench.gpu_check cache --data-root D --json F # build A1's stamp caches, timed
    python -m bench.gpu_check report --out DIR             # DIR/gpu-check.json + gpu-check.txt

Torch-free at module level: the sampler runs beside training and must stay small.
No textual, no paramiko anywhere (the GPU host has neither).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench.common import (PLAN_FULL, REPO, Goal, Table, cpu_model, median, phase_times, read_timestamped,
                          run_summary, write_json)

PLAN_EPOCHS = 50
GATE_EVENTS = 1 + PLAN_EPOCHS // 5      # before training, then every gate_every_epochs (plan §5.2)
SENSITIVITY_PASSES = 6                  # R = 0, 3, 5, 7, 10, 15 (plan §5.5)


# ---------------------------------------------------------------------------
# env


def cmd_env(args: argparse.Namespace) -> int:
    """What this host is: Python, torch, CUDA, the GPU, the CPU; and whether CUDA works."""
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
        "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()),
        "hostname": os.uname().nodename, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "blocked_modules": {m: _importable(m) for m in ("textual", "paramiko", "pynvml")},
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    write_json(Path(args.out) / "env.json", info)
    print(json.dumps(info, indent=1))
    if not info["cuda_available"] and not args.cpu_ok:
        print("gpu-check: torch sees no CUDA GPU (check nvidia-smi); run with --cpu-smoke for the CPU rehearsal",
              file=sys.stderr)
        return 3
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------
# sample


def cmd_sample(args: argparse.Namespace) -> int:
    """Append `time,gpu,util_percent,memory_used_mib,power_w` rows every --interval s until SIGTERM."""
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "gpu", "util_percent", "memory_used_mib", "power_w"])
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:   # no nvidia-ml-py, or no driver (the CPU rehearsal): say so and stop
            w.writerow([f"{time.time():.3f}", "", "", "", f"NVML unavailable: {exc}"])
            return 0
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        while not stop["now"]:
            now = time.time()
            for i, h in enumerate(handles):
                try:
                    util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
                    mem = pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
                    power = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
                except Exception:   # a board that does not report one value: skip the sample
                    continue
                w.writerow([f"{now:.3f}", i, util, f"{mem:.0f}", f"{power:.1f}"])
            f.flush()
            time.sleep(args.interval)
        pynvml.nvmlShutdown()
    return 0


# ---------------------------------------------------------------------------
# cache


def cmd_cache(args: argparse.Namespace) -> int:
    """Build (or find) the stamp caches engine.train will read for the experiment, and time them."""
    from engine.config import load_config
    from engine.data.load import cache_dir_for, load_split
    from engine.data.settings import DataSettings
    from engine.data.manifest import build_manifests

    config = load_config(args.config)
    exp = config.experiment(args.experiment)
    settings = DataSettings.from_config(config)
    started = time.perf_counter()
    # The same settings as engine.train's (DataSettings.from_config), so training finds these caches.
    build_manifests(args.data_root, cache_dir_for(args.data_root, settings).manifests, **settings.manifest_options())
    result: dict[str, Any] = {"experiment": exp.id, "mode": exp.data_mode, "sample": exp.sample,
                              "preprocessing": exp.preprocessing, "manifests_s": time.perf_counter() - started,
                              "splits": {}}
    for split in ("train", "val", "test"):
        started = time.perf_counter()
        arrays = load_split(args.data_root, mode=exp.data_mode, sample=exp.sample, split=split,
                            preprocessing=exp.preprocessing, settings=settings)
        seconds = time.perf_counter() - started
        result["splits"][split] = {"images": len(arrays), "seconds": seconds, "cache_hit": arrays.info["cache_hit"],
                                   "positive": arrays.info["positive"]}
        print(f"cache {split}: {len(arrays):,} images in {seconds:.1f}s "
              f"({'hit' if arrays.info['cache_hit'] else 'built'})", flush=True)
    built = [v for v in result["splits"].values() if not v["cache_hit"]]
    images = sum(v["images"] for v in built)
    seconds = sum(v["seconds"] for v in built)
    result["build_images_per_s"] = images / seconds if built and seconds > 0 else None
    write_json(args.json, result)
    return 0


# ---------------------------------------------------------------------------
# report


def gpu_utilisation(samples: Path, phases: Path) -> tuple[dict[str, dict[str, float]], str | None]:
    """Mean and max utilisation, and peak memory, of GPU 0 per phase of gpu.sh; or why there is none."""
    if not samples.exists():
        return {}, "no sampler output"
    rows, note = [], None
    with open(samples, newline="") as f:
        for r in csv.DictReader(f):
            if r["gpu"] == "":
                note = r["power_w"]
            elif r["gpu"] == "0":
                rows.append((float(r["time"]), float(r["util_percent"]), float(r["memory_used_mib"])))
    if not rows:
        return {}, note or "no samples"
    spans = read_phases(phases)
    out = {}
    for name, (start, end) in spans.items():
        inside = [(u, m) for t, u, m in rows if start <= t <= end]
        if inside:
            out[name] = {"mean_util": sum(u for u, _ in inside) / len(inside), "max_util": max(u for u, _ in inside),
                         "max_memory_mib": max(m for _, m in inside), "samples": len(inside)}
    return out, note


def read_phases(path: Path) -> dict[str, tuple[float, float]]:
    """{phase: (start, end)} from gpu.sh's `<time>\\t<phase>\\t<start|end>\\t<rc>` lines."""
    spans: dict[str, list[float]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            spans.setdefault(parts[1], [float(parts[0]), float(parts[0])])
            if parts[2] == "end":
                spans[parts[1]][1] = float(parts[0])
    return {k: (v[0], v[1]) for k, v in spans.items()}


def step_results(path: Path) -> dict[str, int | None]:
    """{phase: exit code} of gpu.sh's steps (None for a step that started and never ended)."""
    out: dict[str, int | None] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4 and parts[2] == "end":
                out[parts[1]] = int(parts[3])
            elif len(parts) >= 3 and parts[2] == "start":
                out.setdefault(parts[1], None)
    return out


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def project_full_run(run: dict, phases: dict, cache: dict | None, label: str) -> tuple[Table, float | None, list[str]]:
    """The wall time of FULL: 29,108 train + 100,240 val per epoch for 50 epochs, every metric on.

    From one A1 run's own rates (run_summary: the training part of its median epoch and the
    val prediction that follows), scaled by rows to the plan's full sizes; the phases around
    the epochs (data, final gates, test) from its timestamped log.
    """
    notes: list[str] = []
    table = Table(f"Projected full-data run, {label} (plan §2.1 sizes, 50 epochs, every §5 metric)",
                  ["term", "how", "seconds"])
    rows = run.get("rows") or {}
    n_train, n_val, n_test = rows.get("train"), rows.get("val"), rows.get("test")
    train_ips, val_ips = run.get("train_img_s"), run.get("val_img_s")
    if not train_ips or not val_ips or not n_train or not n_val:
        notes.append(f"no projection for {label}: the run or its per-epoch train_time_sec is missing")
        return table, None, notes
    epoch_full = PLAN_FULL["train"] / train_ips + PLAN_FULL["val"] / val_ips
    table.add("one epoch", f"29,108 / {train_ips:,.0f} train img/s + 100,240 / {val_ips:,.0f} val img/s "
              "(A1's median epoch, measured by the engine)", epoch_full)
    total = PLAN_EPOCHS * epoch_full
    table.add(f"{PLAN_EPOCHS} epochs", f"{PLAN_EPOCHS} x one epoch", PLAN_EPOCHS * epoch_full)
    # Between epochs: last.pt/best.pt and metrics.json writes, not part of epoch_time_sec.
    epochs_wall = phases.get("epochs")
    gates = run.get("gate_time_sec") or []
    if epochs_wall is not None and run.get("epoch_time_sec"):
        # The phase starts once the gate before training has printed: later gates only are inside it.
        per_epoch_io = max(0.0, (epochs_wall - sum(run["epoch_time_sec"]) - sum(gates[1:]))
                           / len(run["epoch_time_sec"]))
        table.add("checkpoints + metrics between epochs", f"{per_epoch_io:.2f}s per epoch (A1, size-independent)",
                  PLAN_EPOCHS * per_epoch_io)
        total += PLAN_EPOCHS * per_epoch_io
    gate_s = median(gates) if gates else 0.0
    gate_n = max([n for n in run.get("gate_n_samples") or [] if n] or [0])
    table.add(f"gates every 5 epochs ({GATE_EVENTS}x, on the CPU)",
              f"{GATE_EVENTS} x {gate_s:.2f}s (A1's median gate, n={gate_n:,}; the plan's n is 2,000)",
              GATE_EVENTS * gate_s)
    total += GATE_EVENTS * gate_s
    final = phases.get("final_val")
    if final is not None:
        passes = SENSITIVITY_PASSES * n_val / val_ips
        final_gate = max(0.0, final - passes)
        full_final = final_gate * PLAN_FULL["val"] / n_val + SENSITIVITY_PASSES * PLAN_FULL["val"] / val_ips
        table.add("end: final gates on all val + sensitivity curve",
                  f"A1's final gates ({final_gate:.1f}s on {n_val:,}) x 100,240/{n_val:,} (linear; CPU) "
                  f"+ {SENSITIVITY_PASSES} val passes", full_final)
        total += full_final
        notes.append("the final gate's linear scaling is optimistic if the radial features or CV split grow "
                     "faster than n: bench_gates_status measures the exponent on the CPU")
    test = phases.get("test")
    if test is not None and n_test:
        passes = SENSITIVITY_PASSES * n_test / val_ips
        load = max(0.0, test - passes)
        full_test = load * PLAN_FULL["test"] / n_test + SENSITIVITY_PASSES * PLAN_FULL["test"] / val_ips
        table.add("test: load + evaluate + sensitivity", f"A1 load {load:.1f}s scaled by rows + "
                  f"{SENSITIVITY_PASSES} test passes", full_test)
        total += full_test
    data = phases.get("data")
    if data is not None:
        full_data = data * (PLAN_FULL["train"] + PLAN_FULL["val"]) / (n_train + n_val)
        table.add("data to the GPU at start (warm cache)", "A1's data phase scaled by rows", full_data)
        total += full_data
    table.add("TOTAL (cache already built)", "sum of the above", total)
    rate = (cache or {}).get("build_images_per_s")
    if rate:
        images = sum(PLAN_FULL.values())
        table.add("once per dataset: stamp cache build (all three splits)",
                  f"{images:,} images / {rate:,.0f} img/s (decode + residual, one process)", images / rate)
    notes.append("no early stopping assumed (patience 15 may end sooner)")
    return table, total, notes


TRAIN_IMG_S_GOAL = 20_000      # issue 8: training on one H100 with AMP
FULL_RUN_GOAL_S = 300          # issue 8: a full-data experiment projected under 5 minutes
GATE_2K_GOAL_S = 2.0           # issue 8: gates on 2,000 samples
AUROC_AGREEMENT = 0.02         # the CUDA-graph run learns what the eager run learns (not bit for bit)


def goals(run: dict, graph_run: dict, totals: dict[str, float | None]) -> list[Goal]:
    """Issue 8's GPU goals, from the eager A1 run and the --cuda-graph one beside it."""
    out: list[Goal] = []
    for label, r in (("eager", run), ("--cuda-graph", graph_run)):
        amp = r.get("precision") in ("bf16", "fp16")
        out.append(Goal(f"engine training img/s, A1 {label} ({r.get('precision') or 'not run'}"
                        f"{'' if amp or not r else ', NOT mixed precision'})",
                        r.get("train_img_s") if amp else None, TRAIN_IMG_S_GOAL))
        out.append(Goal(f"projected full-data 50-epoch run, {label}", totals.get(label), FULL_RUN_GOAL_S,
                        higher_is_better=False, unit=" s"))
    gates = [t for n, t in run.get("gate_n_and_time") or [] if n == 2000]
    out.append(Goal("gates on 2,000 samples (median, eager run)", median(gates) if gates else None,
                    GATE_2K_GOAL_S, higher_is_better=False, unit=" s"))
    for key in ("best_val_auroc", "test_auroc"):
        a, b = run.get(key), graph_run.get(key)
        gap = abs(a - b) if a is not None and b is not None else None
        out.append(Goal(f"{key} gap, --cuda-graph vs eager", gap, AUROC_AGREEMENT, higher_is_better=False))
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """Assemble every step's output under --out into gpu-check.json and gpu-check.txt."""
    out = Path(args.out)
    env = _load(out / "env.json") or {}
    steps = step_results(out / "phases.tsv")
    spans = read_phases(out / "phases.tsv")
    synth = _load(out / "synth.json") or {}
    cache = _load(out / "cache.json")
    train = (_load(out / "bench_train.json") or {}).get("values", {})
    compiled = (_load(out / "bench_train_compile.json") or {}).get("values", {})
    probe = _load(out / "step_probe.json") or {}
    run = run_summary(out / "A1") if (out / "A1" / "metrics.json").exists() else {}
    phases = phase_times(read_timestamped(out / "train.log")) if (out / "train.log").exists() else {}
    util, util_note = gpu_utilisation(out / "gpu-samples.csv", out / "phases.tsv")
    notes: list[str] = []

    tables = []
    t = Table("Steps of the check", ["step", "exit", "seconds", "GPU util mean %", "GPU util max %",
                                     "GPU memory max MiB"])
    for name, code in steps.items():
        span = spans.get(name, (0.0, 0.0))
        u = util.get(name, {})
        t.add(name, code, span[1] - span[0], u.get("mean_util"), u.get("max_util"), u.get("max_memory_mib"))
    tables.append(t)

    if run:
        t = Table(f"A1 end to end ({run.get('device')}, {run.get('precision')}; "
                  f"train {run['rows'].get('train')}, val {run['rows'].get('val')}, test {run['rows'].get('test')} "
                  f"images; {run['epochs_done']} epochs, overrides {run.get('overrides')})", ["measure", "value"])
        for key, label in (("startup", "start-up s"), ("data", "data to device s (cache warm)"),
                           ("epochs", "gates + epochs + checkpoints s"), ("final_val", "final gates + sensitivity s"),
                           ("test", "test evaluation s"), ("total", "total wall s")):
            t.add(label, phases.get(key))
        t.add("first epoch s (cudnn autotune included)", run.get("first_epoch_time"))
        t.add("median epoch s (train + val predict)", run.get("epoch_time_median"))
        t.add("median epoch's training part s", run.get("train_time_median"))
        t.add("training img/s (the engine's, augmentation included)", run.get("train_img_s"))
        t.add("val predict img/s (the engine's)", run.get("val_img_s"))
        if run.get("epoch_time_median") and run["rows"].get("train"):
            t.add("images per epoch-second (train + val)",
                  (run["rows"]["train"] + run["rows"]["val"]) / run["epoch_time_median"])
        gate_n = max([n for n in run.get("gate_n_samples") or [] if n] or [0])
        t.add(f"gate s (median; n={gate_n:,}; on the CPU)",
              median(run["gate_time_sec"]) if run.get("gate_time_sec") else None)
        t.add("best val AUROC", run.get("best_val_auroc"))
        t.add("test AUROC", run.get("test_auroc"))
        tables.append(t)
    results = train.get("results", []) + compiled.get("results", [])
    if results:
        t = Table("Step throughput (bench.bench_train)", ["stem", "variant", "precision", "train img/s",
                                                          "eval img/s by batch", "first step s", "peak MiB"])
        for r in results:
            t.add(r["stem"], r["variant"], r["precision"], r["train_img_s"],
                  ", ".join(f"{b}: {v:,.0f}" for b, v in r["eval_img_s"].items()), r.get("first_step_s"),
                  r.get("cuda_peak_mib"))
        tables.append(t)
    graph_run = run_summary(out / "A1-graph") if (out / "A1-graph" / "metrics.json").exists() else {}
    if graph_run:
        t = Table("A1 with the training step as a CUDA graph (engine.train --cuda-graph) beside the eager run",
                  ["measure", "eager", "--cuda-graph"])
        for key, label in (("first_epoch_time", "first epoch s"), ("epoch_time_median", "median epoch s"),
                           ("train_time_median", "median epoch's training part s"),
                           ("train_img_s", "training img/s"), ("best_val_auroc", "best val AUROC"),
                           ("test_auroc", "test AUROC")):
            t.add(label, run.get(key), graph_run.get(key))
        tables.append(t)
    if probe.get("img_s"):
        t = Table(f"Where a training step's time goes (bench.gpu_step_probe, batch {probe.get('batch')})",
                  ["what", "ms per step", "img/s"])
        for name, rate in probe["img_s"].items():
            t.add(name, 1e3 * probe["batch"] / rate, rate)
        tables.append(t)
    totals: dict[str, float | None] = {}
    for label, r, log in (("eager", run, "train.log"), ("--cuda-graph", graph_run, "train_graph.log")):
        if not r:
            continue
        run_phases = phase_times(read_timestamped(out / log)) if (out / log).exists() else {}
        projection, totals[label], more = project_full_run(r, run_phases, cache, f"A1 {label}")
        notes += more if label == "eager" else [n for n in more if n.startswith("no projection")]
        tables.append(projection)
    total = totals.get("eager")
    checked = goals(run, graph_run, totals)
    t = Table("Issue 8's GPU goals", ["goal", "target", "value", "verdict"])
    for g in checked:
        t.add(g.name, ("< " if not g.higher_is_better else ">= ") + f"{g.target:,}{g.unit}", g.value,
              {True: "met", False: "NOT met", None: "not measured"}[g.met])
    tables.append(t)
    if util_note:
        notes.append(f"GPU sampler: {util_note}")
    if synth:
        notes.append(f"synthetic data: scale {synth.get('scale')}, rows {synth.get('rows')}, "
                     f"{synth.get('seconds')}s to write")
    if cache:
        notes.append("stamp cache (A1's view): " + "; ".join(
            f"{k} {v['images']:,} images {v['seconds']:.1f}s ({'hit' if v['cache_hit'] else 'built'})"
            for k, v in (cache.get("splits") or {}).items()))

    failed = [k for k, v in steps.items() if v != 0]
    summary = {"ok": not failed, "failed_steps": failed, "env": env, "steps": steps, "synth": synth, "cache": cache,
               "a1": {"phases": phases, **run}, "bench_train": train.get("results", []),
               "bench_train_compile": compiled.get("results", []), "step_probe": probe, "a1_cuda_graph": graph_run,
               "gpu_utilisation": util,
               "projected_full_run_s": total, "projected_full_run_h": None if total is None else total / 3600,
               "projected_full_run_s_by_step": totals, "goals": [g.as_dict() for g in checked],
               "tables": [x.as_dict() for x in tables], "notes": notes}
    write_json(out / "gpu-check.json", summary)
    head = (f"# GPU check: {env.get('gpu', 'no GPU')} | {env.get('cpu_model')} x{env.get('cpu_count')} | "
            f"python {env.get('python')} torch {env.get('torch')} | {env.get('time')}\n")
    text = head + "\n" + "\n\n".join(x.markdown() for x in tables) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    for label, seconds in totals.items():
        if seconds is not None:
            text += f"\n\nprojected full-data 50-epoch run, {label}: {seconds / 3600:.2f} h ({seconds:,.0f} s)"
    counts = {v: sum(1 for g in checked if g.met is k) for k, v in ((True, "met"), (False, "NOT met"),
                                                                     (None, "not measured"))}
    text += "\n\nissue 8's goals: " + ", ".join(f"{n} {v}" for v, n in counts.items())
    text += f"\n\nresult: {'OK' if not failed else 'FAILED steps: ' + ', '.join(failed)}\n"
    (out / "gpu-check.txt").write_text(text)
    print(text)
    return 0


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--cpu-ok", action="store_true", help="no GPU is not an error (the CPU rehearsal)")
    s = sub.add_parser("sample")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--interval", type=float, default=0.5)
    c = sub.add_parser("cache")
    c.add_argument("--data-root", required=True, type=Path)
    c.add_argument("--experiment", default="A1")
    c.add_argument("--config", type=Path, default=REPO / "experiments.toml")
    c.add_argument("--json", required=True, type=Path)
    r = sub.add_parser("report")
    r.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    return {"env": cmd_env, "sample": cmd_sample, "cache": cmd_cache, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
