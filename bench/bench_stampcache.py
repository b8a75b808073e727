"""Benchmark: a cold stamp-cache build on the origin's own data scaled up, one core against all of them.

The data is `shared/fixtures/origin-v5-paired/` (written by the published pipeline's own jobs:
its NPZ blobs, its Parquet layout) with each shard linked K times into every split, so the
build decodes real pipeline blobs, K × 648 of them for the paired train view. Each build is
`engine.data.stampcache.load_or_build` into an empty folder, as `engine.train` does on first use:
decode, preprocess (residual), write float16. `jobs = 1` runs in this process; `jobs = N`
starts N worker processes (their start-up is in the time). The two caches must be
byte-identical, or the benchmark fails.

Also measured: the CPU seconds each build used (this process and its reaped workers) and so
the cores it actually got (CPU seconds / wall seconds). On a machine others load, the wall
speed-up is bounded by the cores the build is given; images per CPU second says whether the
parallel path costs extra work, whatever the load.

    .venv/bin/python -m bench.bench_stampcache [--quick] [--copies 16] [--json FILE]
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common import REPO, Report, parser, progress, ratio
from engine.data import stampcache
from engine.data.manifest import build_manifests
from engine.data.workers import default_jobs

FIXTURE = "fixtures/origin-v5-paired"
COPIES, QUICK_COPIES = 16, 2
FULL_DATA_IMAGES = 435_000      # the real data's images (the issue): stamps and controls of every split
GPU_HOST_CORES = 16


def fixture_root(given: Path | None) -> Path:
    for candidate in ([given] if given else [REPO.parent / "shared" / FIXTURE, Path("/work/shared") / FIXTURE]):
        if candidate is not None and (candidate / "train").is_dir():
            return candidate
    raise SystemExit(f"the origin fixture is not at {REPO.parent / 'shared' / FIXTURE} or /work/shared/{FIXTURE}; "
                     "pass --fixture")


def scaled_copy(fixture: Path, dest: Path, copies: int) -> Path:
    """`dest` with every shard of `fixture` linked `copies` times into its split (made once)."""
    if (dest / ".complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for split in ("train", "val", "test"):
        (dest / split).mkdir(parents=True)
        for shard in sorted((fixture / split).glob("*.parquet")):
            for k in range(copies):
                os.symlink(shard.resolve(), dest / split / f"copy{k:03d}-{shard.name}")
    (dest / ".complete").touch()
    return dest


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its children that have ended (the build's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--copies", type=int, default=None, help=f"links of each shard per split (default {COPIES}; "
                   f"--quick {QUICK_COPIES})")
    p.add_argument("--fixture", type=Path, default=None, help="the origin-v5-paired folder")
    p.add_argument("--jobs", type=int, default=None, help="workers of the parallel build (default: every CPU)")
    args = p.parse_args(argv)
    report = Report("bench_stampcache", argv)
    copies = args.copies or (QUICK_COPIES if args.quick else COPIES)
    jobs = args.jobs or default_jobs()
    root = scaled_copy(fixture_root(args.fixture), Path(args.work) / f"origin-x{copies}", copies)
    work = Path(args.work) / "stampcache-builds"
    shutil.rmtree(work, ignore_errors=True)
    entries = build_manifests(root, work / "manifests").entries("paired", "full", "train")
    progress(f"stampcache: {len(entries):,} entries (paired train view of the fixture x{copies}), "
             f"{entries['shard'].nunique()} shards")
    table = report.table(f"Cold stamp-cache build, paired train view, residual ({len(entries):,} images)",
                         ["jobs", "seconds", "images/s", "speed-up", "CPU s", "images / CPU s", "cores got"])
    results = {}
    for n in (1, jobs):
        if n in results:
            continue
        progress(f"stampcache: building with jobs={n}")
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        sc = stampcache.load_or_build(root, entries, cache_root=work / f"jobs{n}", name="train", key="bench",
                                      preprocessing="residual", jobs=n, parallel_min_entries=0)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        if len(sc.images) != len(entries) or sc.bad_rows:
            raise SystemExit(f"the build kept {len(sc.images)} of {len(entries)} images ({len(sc.bad_rows)} bad)")
        results[n] = (seconds, sc, cpu)
    one, many = results[1][0], results[jobs][0]
    same = (results[1][1].directory / "images.f16").read_bytes() == (results[jobs][1].directory / "images.f16").read_bytes()
    if not same:
        raise SystemExit("the parallel build's images differ from the one-core build's")
    for n, (seconds, _, cpu) in results.items():
        table.add(n, seconds, len(entries) / seconds, ratio(one, seconds), cpu, len(entries) / cpu, cpu / seconds)
    speedup = ratio(one, many)
    per_core = len(entries) / one
    cpu_one, cpu_many = results[1][2], results[jobs][2]
    report.values.update(entries=len(entries), copies=copies, jobs=jobs, one_core_s=one, all_cores_s=many,
                         speedup=speedup, images_per_s_one_core=per_core, identical=same,
                         cpu_s_one_core=cpu_one, cpu_s_all_cores=cpu_many,
                         cores_got_one=cpu_one / one, cores_got_all=cpu_many / many)
    report.note(f"CPU per image, all workers against one: {cpu_many / cpu_one:.2f}x (worker start-up included); "
                f"the parallel build got {cpu_many / many:.2f} cores of the {jobs} it asked for")
    report.note(f"identical bytes from 1 and {jobs} workers: {same}")
    per_cpu_s = len(entries) / cpu_many
    report.note(f"the real data's ~{FULL_DATA_IMAGES:,} images: {FULL_DATA_IMAGES / per_core / 60:.0f} min at this "
                f"one-core wall rate; {FULL_DATA_IMAGES / per_cpu_s / 60:.0f} CPU-minutes at the parallel build's "
                f"images per CPU second, so ~{FULL_DATA_IMAGES / per_cpu_s / 60 / GPU_HOST_CORES:.1f} min on an idle "
                f"{GPU_HOST_CORES}-core GPU host, if the disk keeps up (not measured there)")
    report.goal(f"speed-up with {jobs} workers (75% of linear)", speedup, 0.75 * jobs)
    report.finish(args.json)
    if not args.quick:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
