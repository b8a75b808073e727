"""Decoded, preprocessed stamps of one split, packed once into a float16 file and memory-mapped after.

A cache folder holds `images.f16` (raw C-order float16, (N, 3, 63, 63)), `meta.npz`
(label, θ_E, LRG id, bins and manifest position of each kept entry) and `info.json`
(shape, bad rows, provenance). It is keyed by content: the manifest view's SHA-256,
the split, the preprocessing and its version, so a changed shard, sample or
preprocessing makes a new folder and never a stale read.

Building splits the entries into tasks of whole shards (or runs of a shard's row groups)
and runs them on every core of the host, each in its own process: decode a batch,
preprocess it, write it at the task's place in the file. Peak memory is one batch plus one
record batch of blobs per worker, not the split. Bad rows leave their slots empty until a
last pass closes the gaps, so the file is the same bytes whatever the number of workers.
(Decoding dominates: ~1.6 ms a stamp against ~0.4 ms of preprocessing; the full data's
~435k images are minutes on 16 cores, not half an hour on one: docs/PERFORMANCE.md.)
The folder is published by an atomic rename under a lock (engine/files.py's `build_dir_once`),
so two runs that want the same cache at once both get it, built once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from engine.data import shards
from engine.data.workers import default_jobs, executor
from engine.files import build_dir_once, timestamp
from engine.config import PREPROCESSINGS
from engine.data.preprocess import PREPROCESS_VERSION, preprocess
from engine.data.shards import BadRow

CACHE_VERSION = 1
IMAGES_FILE = "images.f16"
META_FILE = "meta.npz"
INFO_FILE = "info.json"
IMAGE_SHAPE = (3, shards.CROP_SIZE, shards.CROP_SIZE)
META_COLUMNS = {"label": np.uint8, "theta_e": np.float32, "lrg_id": np.int64,
                "psf_bin": np.int8, "depth_bin": np.int8}
if TYPE_CHECKING:   # not imported at run time: the build's workers import this module, and need neither
    import pandas as pd

IMAGE_BYTES = 2 * int(np.prod(IMAGE_SHAPE))
TASK_ENTRIES = 1024        # a task is at least this many entries (or one row group), when a shard has more
PARALLEL_MIN_ENTRIES = 2048   # below this a build runs in this process: starting workers costs ~1 s


@dataclass(frozen=True)
class StampCache:
    """One split's packed stamps, opened read-only."""

    directory: Path
    images: np.ndarray               # (N, 3, 63, 63) float16 read-only memmap
    meta: dict[str, np.ndarray]      # META_COLUMNS plus "entry": position in the manifest split
    bad_rows: tuple[BadRow, ...]
    requested: int                   # entries the manifest asked for (kept + bad)
    built: bool                      # True when this call built it, False on a cache hit
    info: dict


def stamp_cache_key(manifest_sha256: str, *, mode: str, sample: str, split: str, preprocessing: str) -> str:
    """The content key of one split's cache."""
    knobs = {"cache": CACHE_VERSION, "preprocess": PREPROCESS_VERSION, "manifest": manifest_sha256,
             "mode": mode, "sample": sample, "split": split, "preprocessing": preprocessing,
             "crop": "[1:64, 1:64]", "dtype": "float16"}
    return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:16]


def load_or_build(data_root: str | Path, entries: pd.DataFrame, *, cache_root: str | Path, name: str,
                  key: str, preprocessing: str, chunk_rows: int = 256, jobs: int | None = None,
                  parallel_min_entries: int = PARALLEL_MIN_ENTRIES) -> StampCache:
    """The cache `cache_root/<name>-<key>`, built from `entries` (one split of a manifest view) if missing.

    A cold build uses `jobs` worker processes (default: every CPU) when it has at least
    `parallel_min_entries` entries and more than one task; the result is the same bytes either way.
    """
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {preprocessing!r}; expected one of {', '.join(PREPROCESSINGS)}")
    final = Path(cache_root) / f"{name}-{key}"
    jobs = default_jobs() if jobs is None else jobs
    built = build_dir_once(final, lambda tmp: _build(tmp, Path(data_root), entries, preprocessing, chunk_rows, key,
                                                     jobs, parallel_min_entries))
    return open_cache(final, built=built)


@dataclass(frozen=True)
class _Task:
    """Entries first..first+len(rows)-1 of the split: rows of one shard, in some of its row groups."""

    shard: str
    first: int
    rows: np.ndarray
    blobs: np.ndarray
    row_groups: tuple[int, ...] | None   # None: the whole shard


def plan_tasks(root: Path, entries: pd.DataFrame, target: int = TASK_ENTRIES) -> list[_Task]:
    """The split's entries cut into tasks: each shard's run of entries, split at row-group bounds
    into pieces of at least `target` entries where the shard has several row groups."""
    if not len(entries):
        return []
    shard = entries["shard"].astype(str).to_numpy()
    rows, blobs = entries["row"].to_numpy(np.int64), entries["blob"].astype(str).to_numpy()
    bounds = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1], True])
    tasks = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a <= target:
            tasks.append(_Task(shard[a], int(a), rows[a:b], blobs[a:b], None))
            continue
        starts = shards.row_group_starts(root / shard[a])
        group = np.searchsorted(starts, rows[a:b], side="right") - 1
        lo = 0
        while lo < b - a:
            hi = min(lo + target, b - a)
            hi = hi + int(np.searchsorted(group[hi:], group[hi - 1], side="right"))  # whole row groups
            groups = tuple(range(int(group[lo]), int(group[hi - 1]) + 1))
            tasks.append(_Task(shard[a], int(a + lo), rows[a + lo:a + hi], blobs[a + lo:a + hi], groups))
            lo = hi
    return tasks


def _run_task(root: str, task: _Task, preprocessing: str, chunk_rows: int, out_path: str) -> tuple[np.ndarray, list]:
    """Decode and preprocess one task; write its kept images from slot `task.first` on.

    Returns the kept entries (positions within the task) and the bad rows. Runs in a worker
    process or in this one: the same code either way.
    """
    fd = os.open(out_path, os.O_WRONLY)
    kept: list[np.ndarray] = []
    bad: list[BadRow] = []
    slot = task.first
    try:
        for chunk in shards.iter_decoded(Path(root) / task.shard, task.rows, task.blobs, shard_name=task.shard,
                                         chunk_rows=chunk_rows, row_groups=task.row_groups):
            bad.extend(chunk.bad)
            if len(chunk.index):
                data = memoryview(preprocess(chunk.images, preprocessing).astype(np.float16).tobytes())
                offset = slot * IMAGE_BYTES
                while len(data):
                    written = os.pwrite(fd, data, offset)
                    data, offset = data[written:], offset + written
                kept.append(chunk.index)
                slot += len(chunk.index)
    finally:
        os.close(fd)
    return (np.concatenate(kept) if kept else np.zeros(0, np.int64)), bad


def _build(tmp: Path, root: Path, entries: pd.DataFrame, preprocessing: str, chunk_rows: int, key: str,
           jobs: int, parallel_min_entries: int) -> None:
    started = time.perf_counter()
    entries = entries.reset_index(drop=True)
    tasks = plan_tasks(root, entries)
    out_path = tmp / IMAGES_FILE
    with open(out_path, "wb") as fh:
        fh.truncate(len(entries) * IMAGE_BYTES)   # sparse: each task writes its own slots
    parallel = jobs > 1 and len(tasks) > 1 and len(entries) >= parallel_min_entries
    pool = executor(min(jobs, len(tasks)) if parallel else 1)
    kept: list[np.ndarray] = []
    bad: list[BadRow] = []
    n = 0
    try:
        with _workers_without_the_main_module():   # the workers start during the submits
            futures = [pool.submit(_run_task, str(root), t, preprocessing, chunk_rows, str(out_path)) for t in tasks]
        with open(out_path, "r+b") as fh:
            for task, fut in zip(tasks, futures):
                local, task_bad = fut.result()
                bad.extend(task_bad)
                if len(local) and n != task.first:   # close the gap that bad rows before this task left
                    _move(fh, task.first, n, len(local))
                kept.append(task.first + local)
                n += len(local)
            fh.truncate(n * IMAGE_BYTES)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    meta = {col: entries[col].to_numpy()[keep].astype(dtype) for col, dtype in META_COLUMNS.items()}
    meta["entry"] = keep.astype(np.int64)
    np.savez(tmp / META_FILE, **meta)
    info = {"version": CACHE_VERSION, "key": key, "preprocessing": preprocessing,
            "preprocess_version": PREPROCESS_VERSION, "shape": [n, *IMAGE_SHAPE], "dtype": "float16",
            "requested": int(len(entries)), "bad_rows": [b.__dict__ for b in bad],
            "build_seconds": round(time.perf_counter() - started, 3), "build_jobs": jobs if parallel else 1,
            "built_at": timestamp()}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))


@contextmanager
def _workers_without_the_main_module() -> Iterator[None]:
    """Workers spawned meanwhile import only what their tasks need, not the command that started them.

    A spawned child re-imports the parent's `__main__` module (found by its `__spec__` or
    `__file__`), which for `python -m engine.train` is torch: ~5 s and ~0.7 GB per worker here,
    for workers that need NumPy and pyarrow. Without either attribute (as in an interactive
    interpreter), multiprocessing skips that import; the attributes are back when the block ends.
    """
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _move(fh, src_slot: int, dst_slot: int, count: int, block: int = 256) -> None:
    """Copy `count` images from slot `src_slot` down to `dst_slot` (< src_slot), a block at a time."""
    for i in range(0, count, block):
        k = min(block, count - i)
        fh.seek((src_slot + i) * IMAGE_BYTES)
        data = fh.read(k * IMAGE_BYTES)
        fh.seek((dst_slot + i) * IMAGE_BYTES)
        fh.write(data)


def open_cache(directory: Path, *, built: bool = False) -> StampCache:
    """Open a finished cache folder read-only (memory-mapped images)."""
    info = json.loads((directory / INFO_FILE).read_text())
    shape = tuple(info["shape"])
    path = directory / IMAGES_FILE
    expected = int(np.prod(shape)) * 2
    if path.stat().st_size != expected:
        raise shards.ShardError(f"{path}: {path.stat().st_size} bytes, expected {expected} for shape {shape}; "
                                f"the cache is damaged: delete {directory} and load again")
    if shape[0] == 0:
        images = np.zeros(shape, np.float16)
    else:
        images = np.memmap(path, dtype=np.float16, mode="r", shape=shape)
    with np.load(directory / META_FILE) as npz:
        meta = {k: npz[k] for k in npz.files}
    return StampCache(directory, images, meta, tuple(BadRow(**b) for b in info["bad_rows"]),
                      int(info["requested"]), built, info)
