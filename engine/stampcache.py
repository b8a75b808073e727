"""Decoded, preprocessed stamps of one split, packed once into a float16 file and memory-mapped after.

A cache folder holds `images.f16` (raw C-order float16, (N, 3, 63, 63)), `meta.npz`
(label, θ_E, LRG id, bins and manifest position of each kept entry) and `info.json`
(shape, bad rows, provenance). It is keyed by content: the manifest view's SHA-256,
the split, the preprocessing and its version, so a changed shard, sample or
preprocessing makes a new folder and never a stale read.

Building decodes shard by shard, a batch at a time, preprocesses the batch and
appends it to the file: peak memory is one batch plus one record batch of blobs, not
the split. The folder is published by an atomic rename under a lock (see
`manifest.build_dir_once`), so two runs that want the same cache at once both get it,
built once.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine import shards
from engine.manifest import build_dir_once
from engine.preprocess import PREPROCESS_VERSION, PREPROCESSINGS, preprocess
from engine.shards import BadRow

CACHE_VERSION = 1
IMAGES_FILE = "images.f16"
META_FILE = "meta.npz"
INFO_FILE = "info.json"
IMAGE_SHAPE = (3, shards.CROP_SIZE, shards.CROP_SIZE)
META_COLUMNS = {"label": np.uint8, "theta_e": np.float32, "lrg_id": np.int64,
                "psf_bin": np.int8, "depth_bin": np.int8}


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

    @property
    def packed_bytes(self) -> int:
        return int(self.images.size) * 2


def stamp_cache_key(manifest_sha256: str, *, mode: str, sample: str, split: str, preprocessing: str) -> str:
    """The content key of one split's cache."""
    knobs = {"cache": CACHE_VERSION, "preprocess": PREPROCESS_VERSION, "manifest": manifest_sha256,
             "mode": mode, "sample": sample, "split": split, "preprocessing": preprocessing,
             "crop": "[1:64, 1:64]", "dtype": "float16"}
    return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:16]


def load_or_build(data_root: str | Path, entries: pd.DataFrame, *, cache_root: str | Path, name: str,
                  key: str, preprocessing: str, chunk_rows: int = 256) -> StampCache:
    """The cache `cache_root/<name>-<key>`, built from `entries` (one split of a manifest view) if missing."""
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {preprocessing!r}; expected one of {', '.join(PREPROCESSINGS)}")
    final = Path(cache_root) / f"{name}-{key}"
    built = build_dir_once(final, lambda tmp: _build(tmp, Path(data_root), entries, preprocessing, chunk_rows, key))
    return open_cache(final, built=built)


def _build(tmp: Path, root: Path, entries: pd.DataFrame, preprocessing: str, chunk_rows: int, key: str) -> None:
    started = time.perf_counter()
    entries = entries.reset_index(drop=True)
    kept: list[np.ndarray] = []
    bad: list[BadRow] = []
    n = 0
    with open(tmp / IMAGES_FILE, "wb") as out:
        for shard, group in entries.groupby("shard", sort=False):
            chunks = shards.iter_decoded(root / shard, group["row"].to_numpy(), group["blob"].to_numpy(),
                                         shard_name=shard, chunk_rows=chunk_rows)
            for chunk in chunks:
                bad.extend(chunk.bad)
                if len(chunk.index):
                    out.write(preprocess(chunk.images, preprocessing).astype(np.float16).tobytes())
                    kept.append(group.index.to_numpy()[chunk.index])
                    n += len(chunk.index)
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    meta = {col: entries[col].to_numpy()[keep].astype(dtype) for col, dtype in META_COLUMNS.items()}
    meta["entry"] = keep.astype(np.int64)
    np.savez(tmp / META_FILE, **meta)
    info = {"version": CACHE_VERSION, "key": key, "preprocessing": preprocessing,
            "preprocess_version": PREPROCESS_VERSION, "shape": [n, *IMAGE_SHAPE], "dtype": "float16",
            "requested": int(len(entries)), "bad_rows": [b.__dict__ for b in bad],
            "build_seconds": round(time.perf_counter() - started, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))


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
