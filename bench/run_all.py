"""Run every benchmark, one after the other, each in its own process; print their tables and goals.

    .venv/bin/python -m bench.run_all [--quick] [--only datapath,train,synth,gates_status,stampcache] [--out DIR]

Each writes `<out>/<name>.json` and `<out>/<name>.txt` (default out: cache/bench/results);
`<out>/summary.txt` lists every goal. A benchmark that fails is reported and the rest run;
the exit status is 1 if any failed. Goals that are not met do not fail the run: speed is
measured here, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common import DEFAULT_WORK, REPO, fmt, machine

BENCHES = {
    "datapath": ["bench.bench_datapath"],
    "train": ["bench.bench_train"],
    "synth": ["bench.bench_synth"],
    "gates_status": ["bench.bench_gates_status"],
    "stampcache": ["bench.bench_stampcache"],
}
FULL_ONLY = {"train": ["--e2e"]}   # the end-to-end training run takes a minute: not in --quick


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's few-second smoke mode")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHES)}")
    p.add_argument("--out", type=Path, default=DEFAULT_WORK / "results")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="bench datasets and caches")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    m = machine()
    print(f"# lenstui benchmarks: {m['cpu_model']}, {m['cores']} cores, load {m['loadavg_1_5_15']}, "
          f"python {m['python']}", flush=True)

    failed, lines = [], []
    for name in names:
        module, *extra = BENCHES[name]
        json_path = args.out / f"{name}.json"
        argv_b = [sys.executable, "-m", module, *extra, "--work", str(args.work), "--json", str(json_path)]
        argv_b += ["--quick"] if args.quick else FULL_ONLY.get(name, [])
        print(f"\n$ {' '.join(argv_b[1:])}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(argv_b, cwd=REPO, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        print(done.stdout, end="", flush=True)
        (args.out / f"{name}.txt").write_text(done.stdout)
        if done.returncode != 0 or not json_path.exists():
            failed.append(name)
            lines.append(f"{name}: FAILED (exit {done.returncode}) after {seconds:.0f}s")
            continue
        result = json.loads(json_path.read_text())
        lines.append(f"{name} ({seconds:.0f}s):")
        for goal in result.get("goals", []):
            verdict = {True: "met", False: "NOT met", None: "no value"}[goal["met"]]
            op = ">=" if goal["higher_is_better"] else "<"
            lines.append(f"  {goal['name']} {op} {fmt(goal['target'])}{goal['unit']}: "
                         f"{fmt(goal['value'])}{goal['unit']} ({verdict})")
        if not result.get("goals"):
            lines.append("  (no goal: see its tables)")
    summary = "\n".join(lines)
    (args.out / "summary.txt").write_text(summary + "\n")
    print(f"\n# Goals\n{summary}\n\nresults in {args.out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
