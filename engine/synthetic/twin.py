"""A synthetic twin of the real paired lens shards: same Parquet/NPZ format, same failure modes.

This module writes a whole dataset (`write_dataset`, `python -m engine.synth`); what it draws is
priors.py, how it renders is render.py (with physics.py), one shard's rows are shard_writer.py.


Each LRG (elliptical Sérsic n≈4, PSF-convolved, sky + Poisson noise) is the control; each of its
injections adds a noiseless lensed arc (SIE + external shear, elliptical Sérsic source) to the
same control pixels, as real injections do. Shaped like the real data (the origin fixture shows
it): θ_E on the pipeline's grid, one value per LRG; two replicate injections per LRG, each
repeated byte for byte once per selection set (~12 rows per LRG); LRGs in sky bricks that share
a PSF and depth, binned into psf_bin/depth_bin by quartiles of the bricks, not of the rows.
Priors follow shared/SCIENCE.md ("Physics for a synthetic stand-in") and live in `Priors`; the
choices it leaves open are marked "our choice".

    python -m engine.synth --out data/synthetic-demo --scale 0.01 --seed 42 --if-missing
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.config import LENS_CATALOGUE, SPLITS
from engine.data.settings import DEFAULT_THETAE_BINS
from engine.data.shards import BLOB_CODEC
from engine.data.workers import InlineExecutor, default_jobs, executor
from engine.files import atomic_write_text, replace_dir
from engine.synthetic.priors import PRIORS, SPLIT_RA, Priors, SystemParams, rows_layout, sample_systems
from engine.synthetic.shard_writer import brick_quartiles, render_shard
from engine.protocol import exitcodes

# Plan §2.1 (unpaired manifest sizes); an unpaired view of a paired split has ≈ as many rows.
PLAN_ROWS = {"train": 29_108, "val": 100_240, "test": 88_528}
MARKER = "synth.json"
MIN_LRGS_PER_SPLIT = 4
MAX_SCALE = 10.0
# The twin's shape; 2: θ_E on the grid per LRG, replicate rows per selection set, bricks. A dataset
# made by an earlier layout still loads; --if-missing says it is older.
LAYOUT = 2
BYTES_PER_ROW = 100_000  # a stamp and a control blob, ~47 kB each: the disk-space check


# ---------------------------------------------------------------------------
# Dataset


@dataclass(frozen=True)
class DatasetSummary:
    """What write_dataset made (or found): counts, the θ_E histogram and the arc brightness."""

    root: str
    seed: int
    scale: float | None
    rows: dict[str, int]
    lrgs: dict[str, int]
    shards: dict[str, list[str]]
    theta_e_bins: list[float]
    theta_e_counts: dict[str, list[int]]
    median_arc_snr: float
    psf_edges: list[float]
    depth_edges: list[float]
    seconds: float
    reused: bool = False
    engine_version: str = ""
    blob_codec: str = ""  # engine.data.shards.CODECS: how the NPZ members were deflated
    layout: int = 1       # LAYOUT of the twin that made it (markers before layout 2 have none)
    priors: dict = field(default_factory=dict)   # the Priors fields set apart from the defaults
    lens_catalogue: dict | None = None   # per split: lens and non-lens LRGs and rows (lens_catalogue.py)

    def to_json(self) -> str:
        """The marker file's text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class SynthError(Exception):
    """A problem with what was asked (bad scale, unusable output folder), worded for a person."""


def rows_for_scale(scale: float, rows_per_lrg: int = 12) -> dict[str, int]:
    """Rows per split for `--scale`: the plan's sizes times scale, at least a few LRGs each."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= MAX_SCALE):
        raise SynthError(f"scale must be a number in (0, {MAX_SCALE:g}], got {scale!r} (1.0 gives the plan's full sizes)")
    floor = MIN_LRGS_PER_SPLIT * rows_per_lrg
    return {split: max(round(scale * PLAN_ROWS[split]), floor) for split in SPLITS}


def allocate_rows(n_rows: int, rows_per_lrg: int) -> np.ndarray:
    """Rows per LRG: as close to `rows_per_lrg` as divides `n_rows`, at least a few LRGs."""
    n_lrgs = min(max(MIN_LRGS_PER_SPLIT, round(n_rows / rows_per_lrg)), n_rows)
    counts = np.full(n_lrgs, n_rows // n_lrgs, dtype=np.int64)
    counts[: n_rows % n_lrgs] += 1
    return counts


def read_marker(root: Path) -> dict | None:
    """The marker of a complete dataset at `root`, or None if there is none (or it is damaged)."""
    try:
        marker = json.loads((root / MARKER).read_text())
        complete = all((root / split / name).is_file() for split in SPLITS for name in marker["shards"][split])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return marker if complete else None


def _progress(enabled: bool) -> Callable[[str, int, int, int, int], None]:
    start = time.monotonic()

    def report(split: str, done: int, total: int, all_done: int, all_total: int) -> None:
        if not enabled:
            return
        rate = all_done / max(time.monotonic() - start, 1e-9)
        eta = (all_total - all_done) / rate if rate > 0 else 0.0
        width = 30
        fill = int(width * all_done / max(all_total, 1))
        sys.stderr.write(
            f"\rsynth [{'#' * fill}{'.' * (width - fill)}] {split} {done}/{total}  "
            f"{all_done}/{all_total} rows  {rate:,.0f} rows/s  eta {eta:,.0f}s "
        )
        if all_done >= all_total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _prepare_output(out: Path) -> None:
    """Refuse to replace anything but an earlier synthetic dataset or an empty folder."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SynthError(f"{out} holds files that are not a synthetic dataset: choose another --out or empty it")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Folders left by interrupted runs (their process is gone) are ours to clean up.
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def write_dataset(
    out: Path,
    *,
    scale: float | None = None,
    rows: Mapping[str, int] | None = None,
    seed: int = 42,
    rows_per_lrg: int = 12,
    shard_rows: int = 2000,
    lrgs_per_batch: int = 16,  # ~190 rows; larger batches render no faster (8–64 measured), only use more memory
    jobs: int = 1,
    progress: bool = False,
    priors: Priors = PRIORS,
) -> DatasetSummary:
    """Write a complete synthetic dataset at `out` (atomically) and return its summary.

    Give `scale` (the plan's sizes times scale) or `rows` (rows per split, explicit). A shard
    holds whole LRGs, at most `shard_rows` rows; each worker renders and writes whole shards.
    The same arguments give the same bytes whatever `jobs` (worker processes) is: every batch
    of `lrgs_per_batch` LRGs has its own seeded generator. `priors`: what the twin draws from
    (`priors_with`); with selected lens hosts it also writes the lens catalogue (lens_catalogue.py).
    """
    started = time.monotonic()
    out = Path(out)
    if (scale is None) == (rows is None):
        raise SynthError("give exactly one of scale and rows")
    if rows is None:
        rows = rows_for_scale(scale, rows_per_lrg)
    rows = {split: int(rows.get(split, 0)) for split in SPLITS}
    bad = {s: n for s, n in rows.items() if n < 2}
    if bad:
        raise SynthError(f"each split needs at least 2 rows (2 LRGs), got {bad}")
    if rows_per_lrg < 1 or shard_rows < 1 or lrgs_per_batch < 1 or jobs < 1:
        raise SynthError("rows_per_lrg, shard_rows, lrgs_per_batch and jobs must be positive")
    _prepare_output(out)
    need = sum(rows.values()) * BYTES_PER_ROW
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise SynthError(f"{sum(rows.values()):,} rows need about {need / 1e9:.1f} GB; {out.parent} has {free / 1e9:.1f} GB free")

    # Per split: one stream for the parameters, one that seeds each render batch.
    seeds = {split: ss.spawn(2) for split, ss in zip(SPLITS, np.random.SeedSequence(seed).spawn(len(SPLITS)))}
    params = {
        split: sample_systems(allocate_rows(rows[split], rows_per_lrg), np.random.default_rng(seeds[split][0]),
                              SPLIT_RA[split], priors)
        for split in SPLITS
    }
    # psf_bin / depth_bin: quartiles of the sky bricks (each brick once), as the pipeline bins
    # them, not of the rows: a brick with many LRGs does not move the edges.
    psf_edges, depth_edges = brick_quartiles(params.values())

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    report = _progress(progress)
    total = sum(rows.values())
    done = dict.fromkeys(SPLITS, 0)
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    snr: list[np.ndarray] = []
    tasks = _shard_tasks(params, {s: seeds[s][1] for s in SPLITS}, shard_rows, lrgs_per_batch)
    try:
        for split in SPLITS:
            (tmp / split).mkdir(parents=True)
        # Processes, not threads: rendering is many small NumPy operations that hold the GIL.
        with executor(jobs, initializer=_worker_init) as pool:
            for task, shard_snr in _run_in_order(pool, tasks, tmp, jobs, lrgs_per_batch, psf_edges, depth_edges):
                shards[task.split].append(task.name)
                snr.append(shard_snr)
                done[task.split] += int(task.params.rows_per_lrg.sum())
                report(task.split, done[task.split], rows[task.split], sum(done.values()), total)
        catalogue = None
        if priors.lens_host_luminosity_weight > 0:
            from engine.synthetic.lens_catalogue import write_lens_catalogue

            catalogue = write_lens_catalogue(tmp, params, seed, priors)
        summary = _summary(out, seed, scale, params, shards, np.concatenate(snr), psf_edges, depth_edges, started,
                           priors, catalogue)
        # The marker goes last and atomically: its presence means every shard is in place.
        atomic_write_text(tmp / MARKER, summary.to_json())
        replace_dir(tmp, out)   # an earlier dataset there is removed only afterwards
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _worker_init() -> None:
    """Make a render worker keep its memory between batches instead of faulting it in again.

    A batch allocates tens of MB of short-lived arrays and blobs; glibc hands blocks that large
    back to the kernel on free, and faulting them in again cost ~30 page faults a row (0.1 ms or
    more of system time a row on the development VM; docs/PERFORMANCE.md §3).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): their allocators behave differently; leave them be
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    libc.mallopt(m_mmap_threshold, 512 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)
    pa.set_memory_pool(pa.system_memory_pool())  # Arrow's buffers from the same, now sticky, heap


@dataclass(frozen=True)
class _ShardTask:
    """One shard to render and write: whole LRGs, and a noise seed per batch of them."""

    split: str
    name: str
    params: SystemParams
    seeds: list[np.random.SeedSequence]


def plan_shards(rows_per_lrg: np.ndarray, shard_rows: int) -> list[tuple[int, int]]:
    """LRG ranges [start, stop) of a split's shards: whole LRGs, at most `shard_rows` rows (at least one LRG).

    An LRG never straddles two files, so its control is stored once, beside all its rows.
    """
    ranges, start, rows = [], 0, 0
    for i, count in enumerate(np.asarray(rows_per_lrg).tolist()):
        if rows and rows + count > shard_rows:
            ranges.append((start, i))
            start, rows = i, 0
        rows += count
    ranges.append((start, len(rows_per_lrg)))
    return ranges


def _shard_tasks(params: Mapping[str, SystemParams], batch_seeds: Mapping[str, np.random.SeedSequence],
                 shard_rows: int, lrgs_per_batch: int) -> list[_ShardTask]:
    """Every shard of every split, in order; batch i of a split gets the split's i-th child seed.

    The seeds depend only on the arguments of write_dataset, never on `jobs`: same data for any.
    """
    tasks = []
    for split in SPLITS:
        counts = params[split].rows_per_lrg
        ranges = plan_shards(counts, shard_rows)
        n_batches = [-(-(stop - start) // lrgs_per_batch) for start, stop in ranges]
        children = batch_seeds[split].spawn(sum(n_batches))
        first = 0
        for k, ((start, stop), n) in enumerate(zip(ranges, n_batches)):
            tasks.append(_ShardTask(split, f"shard-{k:05d}.parquet", params[split].take_lrgs(start, stop),
                                    children[first:first + n]))
            first += n
    return tasks


def _run_in_order(
    pool: "ProcessPoolExecutor | InlineExecutor",
    tasks: Sequence[_ShardTask],
    root: Path,
    jobs: int,
    lrgs_per_batch: int,
    psf_edges: np.ndarray,
    depth_edges: np.ndarray,
) -> Iterator[tuple[_ShardTask, np.ndarray]]:
    """(task, arc_snr) per written shard, in task order, with at most 2·jobs shards in flight.

    One stream over all three splits: no worker waits while a split drains.
    """
    inflight: list[tuple[_ShardTask, Future]] = []
    for task in tasks:
        path = root / task.split / task.name
        inflight.append((task, pool.submit(render_shard, path, task.params, task.seeds, lrgs_per_batch,
                                           psf_edges, depth_edges)))
        if len(inflight) >= 2 * jobs:
            first, fut = inflight.pop(0)
            yield first, fut.result()
    for task, fut in inflight:
        yield task, fut.result()


def _summary(
    out: Path,
    seed: int,
    scale: float | None,
    params: Mapping[str, SystemParams],
    shards: dict[str, list[str]],
    snr: np.ndarray,
    psf_edges: np.ndarray,
    depth_edges: np.ndarray,
    started: float,
    priors: Priors = PRIORS,
    catalogue: dict | None = None,
) -> DatasetSummary:
    import engine

    return DatasetSummary(
        root=str(out),
        seed=seed,
        scale=scale,
        rows={s: int(p.rows_per_lrg.sum()) for s, p in params.items()},
        lrgs={s: len(p.lrg) for s, p in params.items()},
        shards=shards,
        theta_e_bins=list(DEFAULT_THETAE_BINS),
        theta_e_counts={s: np.histogram(p.theta_e[rows_layout(p, priors.replicates)[0]], bins=DEFAULT_THETAE_BINS)[0].tolist()
                        for s, p in params.items()},
        median_arc_snr=float(np.median(snr)),
        psf_edges=psf_edges.tolist(),
        depth_edges=depth_edges.tolist(),
        seconds=round(time.monotonic() - started, 3),
        engine_version=getattr(engine, "ENGINE_VERSION", ""),
        blob_codec=BLOB_CODEC,
        layout=LAYOUT,
        priors=priors_set(priors),
        lens_catalogue=catalogue,
    )


def priors_with(overrides: Mapping[str, object], where: str = "priors") -> Priors:
    """The twin's priors with `overrides` (field name -> value); SynthError naming `where` for a name
    `Priors` does not have or a value of the wrong shape."""
    known = {f.name: f for f in fields(Priors)}
    values = {}
    for name, value in overrides.items():
        if name not in known:
            raise SynthError(f"{where}.{name}: the twin has no such prior; known: {', '.join(known)} "
                             "(engine/synthetic/priors.py)")
        default = getattr(PRIORS, name)
        if isinstance(default, tuple) != isinstance(value, (tuple, list)) or (
                isinstance(default, tuple) and len(default) != len(value)):
            raise SynthError(f"{where}.{name}: expected {'a list of ' + str(len(default)) + ' numbers' if isinstance(default, tuple) else 'a number'} "
                             f"like the default {default!r}, found {value!r}")
        values[name] = tuple(float(v) for v in value) if isinstance(default, tuple) else type(default)(value)
    return replace(PRIORS, **values)


def priors_set(priors: Priors) -> dict:
    """The fields of `priors` that differ from the defaults (what a dataset's marker records)."""
    return {f.name: getattr(priors, f.name) for f in fields(Priors) if getattr(priors, f.name) != getattr(PRIORS, f.name)}


def load_summary(root: Path) -> DatasetSummary | None:
    """The summary of the complete dataset at `root`, or None."""
    marker = read_marker(Path(root))
    if marker is None:
        return None
    known = {f.name for f in fields(DatasetSummary)}
    return replace(DatasetSummary(**{k: v for k, v in marker.items() if k in known}), reused=True)


# ---------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.synth",
        description="Write a synthetic paired lens dataset in the real shards' format.",
    )
    p.add_argument("--out", type=Path, help="dataset root; gets train/ val/ test/ and synth.json")
    p.add_argument("--scale", type=float, default=None, help="fraction of the plan's split sizes (1.0: 29,108 / 100,240 / 88,528 rows; default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="default 42")
    p.add_argument("--config", type=Path, help="take --out, --scale and --seed from this experiments.toml ...")
    p.add_argument("--host", default="local", help="... for this host's synthetic dataset (default local)")
    p.add_argument("--dataset", help="... or for this synthetic dataset of the config (its root relative to the "
                   "config's folder), e.g. synthetic-shortcut")
    p.add_argument("--if-missing", action="store_true", help="reuse a complete dataset already at --out")
    p.add_argument("--jobs", type=int, default=None,
                   help=f"worker processes (default: the CPUs this process may use, here {default_jobs()}; "
                        "the output is the same for any value)")
    return p


def _fill_from_config(args: argparse.Namespace) -> None:
    """Out/scale/seed from the host's dataset in experiments.toml (one source of truth for `make demo`)."""
    from engine.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        host = config.host(args.host)
        if args.dataset is not None and args.dataset not in config.datasets:
            raise ConfigError(config.source, "datasets", f"unknown dataset {args.dataset!r}",
                              f"known: {', '.join(config.datasets)}")
    except ConfigError as exc:
        raise SynthError(str(exc)) from None
    dataset = config.datasets[args.dataset] if args.dataset else config.dataset_for(host)
    whose = f"dataset {dataset.name!r}" if args.dataset else f"hosts.{host.name} uses dataset {dataset.name!r}, which"
    if dataset.kind != "synthetic":
        raise SynthError(f"{args.config}: {whose} is kind {dataset.kind!r}, not 'synthetic': there is nothing to make")
    if args.dataset:
        root = Path(os.path.expanduser(dataset.root))
        if not root.is_absolute():
            root = args.config.resolve().parent / root
    else:
        root = Path(os.path.expanduser(host.resolve(dataset.root)))   # a host's root may be ~/data/...
        if not root.is_absolute() and host.work_dir == ".":
            root = args.config.resolve().parent / root  # '.' is the config file's folder
    args.out = args.out or root
    args.scale = dataset.scale if args.scale is None else args.scale
    args.seed = dataset.seed if args.seed is None else args.seed
    args.priors = priors_with(dataset.priors, f"{args.config}: datasets.{dataset.name}.priors")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.config is not None:
            _fill_from_config(args)
        if args.out is None:
            parser.error("give --out ROOT (or --config experiments.toml to use its synthetic dataset)")
        args.scale = 1.0 if args.scale is None else args.scale
        args.seed = 42 if args.seed is None else args.seed
        priors = getattr(args, "priors", PRIORS)
        if args.if_missing:
            found = load_summary(args.out)
            if found is not None:
                note = ""
                asked = json.loads(json.dumps(priors_set(priors)))   # as the marker holds them (lists)
                if (found.scale, found.seed) != (args.scale, args.seed):
                    note = f" (made with scale {found.scale}, seed {found.seed}; asked scale {args.scale}, seed {args.seed}; delete it to remake)"
                elif found.priors != asked:
                    note = f" (made with priors {found.priors or 'the defaults'}; asked {asked or 'the defaults'}; delete it to remake)"
                elif found.layout != LAYOUT:
                    note = (f" (made by an earlier twin, layout {found.layout}: θ_E drawn per row, no replicate rows or "
                            f"bricks; delete it to remake it in layout {LAYOUT})")
                print(f"synth: reusing the complete dataset at {args.out}{note}")
                return exitcodes.OK
        args.jobs = default_jobs() if args.jobs is None else args.jobs
        if args.jobs < 1:
            raise SynthError(f"--jobs must be at least 1, got {args.jobs}")
        summary = write_dataset(args.out, scale=args.scale, seed=args.seed, jobs=args.jobs, progress=sys.stderr.isatty(),
                                priors=priors)
    except SynthError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except KeyboardInterrupt:
        print("synth: interrupted; nothing was left at --out", file=sys.stderr)
        return 130
    rows = ", ".join(f"{s} {summary.rows[s]:,}" for s in SPLITS)
    rate = sum(summary.rows.values()) / max(summary.seconds, 1e-9)
    print(
        f"synth: wrote {args.out} ({rows} rows) in {summary.seconds:.1f}s, {rate:,.0f} rows/s "
        f"with --jobs {args.jobs}; median arc_snr {summary.median_arc_snr:.2f}"
    )
    if summary.lens_catalogue:
        lens = ", ".join(f"{s} {c['lens_lrgs']} lens / {c['non_lens_lrgs']} non-lens LRGs"
                         for s, c in summary.lens_catalogue.items())
        print(f"synth: lens hosts selected ({summary.priors}): the lens catalogue is {Path(args.out) / LENS_CATALOGUE} "
              f"({lens}); the dataset's unpaired_manifest names it")
    if summary.blob_codec != "isal-1":
        print(f"synth: blobs deflated with {summary.blob_codec}; `pip install isal` deflates them ~3x faster",
              file=sys.stderr)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
