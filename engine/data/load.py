"""The one entry point training and evaluation use to get a split's arrays.

    arrays = load_split(root, mode="unpaired", sample="10pct", split="train", preprocessing="residual",
                        settings=DataSettings.from_config(config, host))

Under the hood: the index-only manifests (engine.manifest, built once per data root
and settings), then the packed stamp cache of that split (engine.data.stampcache, built
once per manifest view, split and preprocessing). Both live in the data root's cache
folder (engine.data.cachedir: the host's cache_dir, else `<data_root>/.lenstui-cache` where
writable, else the user's cache). Rows the pipeline marked as failed are left out at
index time and counted; bad rows (a blob that does not decode, NaN/Inf pixels, a wrong
shape, a missing column or value) are dropped and returned while they stay under the
bad-row limit (data.bad_row_limit); above it, loading fails with the list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.data import shards, stampcache
from engine.data.cachedir import CacheDir, resolve_cache_dir
from engine.data.settings import DataSettings
from engine.config import DATA_MODES, PREPROCESSINGS, SAMPLES, SPLITS
from engine.data.manifest import build_manifests, check_bad_rows
from engine.data.shards import BadRow

@dataclass(frozen=True)
class SplitArrays:
    """One split of one data view, ready for a model (or, from load_raw_examples, for eyes)."""

    images: np.ndarray    # (N, 3, 63, 63) float16, preprocessed, C-contiguous (may be a read-only memmap)
    labels: np.ndarray    # (N,) uint8, 1 = lens (stamp), 0 = non-lens (control)
    theta_e: np.ndarray   # (N,) float32, θ_E of the row (for negatives: of the row the control came from)
    lrg_id: np.ndarray    # (N,) int64, group id (same LRG -> same id) for grouped CV
    psf_bin: np.ndarray   # (N,) int8
    depth_bin: np.ndarray # (N,) int8
    bad_rows: tuple[BadRow, ...]  # what was dropped: (shard, row, reason) records
    info: dict            # provenance: manifest path + hash, counts, cache path

    def __len__(self) -> int:
        return int(len(self.labels))

    def bad_rows_summary(self, limit: int = 100) -> dict:
        """What to put in metrics.json `bad_rows[split]`: the count, the limit in force, the failed
        cut-outs left out at index time (not bad rows), and the first `limit` bad rows."""
        return {"count": len(self.bad_rows), "of": int(self.info.get("requested", len(self))),
                "limit": self.info.get("bad_row_limit"), "failed_cutouts": int(self.info.get("failed_rows", 0)),
                "rows": [{"shard": b.shard, "row": b.row, "reason": b.reason} for b in self.bad_rows[:limit]]}


def cache_dir_for(data_root: str | Path, settings: DataSettings, cache_dir: str | Path | None = None) -> CacheDir:
    """The cache folder of `data_root`: `cache_dir` (a command's --cache-dir) or the settings' (engine.data.cachedir)."""
    settings = settings.with_cache_dir(cache_dir)
    return resolve_cache_dir(data_root, settings.cache_dir, setting=settings.cache_dir_setting)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


def load_split(data_root: str | Path, *, mode: str, sample: str, split: str, preprocessing: str,
               settings: DataSettings | None = None, cache_dir: str | Path | None = None) -> SplitArrays:
    """The preprocessed arrays of one split of one view; builds the manifests and the cache on first use.

    `settings` (DataSettings.from_config) pick the manifest, the bad-row limit and the cache
    folder; `cache_dir` overrides the folder (a command's --cache-dir).
    """
    started = time.perf_counter()
    settings = settings or DataSettings()
    _check_choice("data mode", mode, DATA_MODES)
    _check_choice("sample", sample, SAMPLES)
    _check_choice("split", split, SPLITS)
    _check_choice("preprocessing", preprocessing, PREPROCESSINGS)
    cache = cache_dir_for(data_root, settings, cache_dir)
    ms = build_manifests(data_root, cache.manifests, **settings.manifest_options())
    entries = ms.entries(mode, sample, split)
    view_sha = ms.sha256(mode, sample)
    key = stampcache.stamp_cache_key(view_sha, mode=mode, sample=sample, split=split, preprocessing=preprocessing)
    sc = stampcache.load_or_build(data_root, entries, cache_root=cache.stamps,
                                  name=f"{split}-{mode}-{sample}-{preprocessing}", key=key,
                                  preprocessing=preprocessing)
    bad = ms.bad_rows(split) + sc.bad_rows
    # Index-time bad rows are counted against the split's shard rows, decode-time ones
    # against the entries asked for: each is a share of what that step looked at.
    limit, setting = settings.bad_row_limit, settings.bad_row_limit_setting
    check_bad_rows(ms.bad_rows(split), ms.summary["shard_rows"][split], limit, f"{split} (index columns)", setting)
    check_bad_rows(sc.bad_rows, sc.requested, limit, f"{split} ({mode}/{sample} blobs)", setting)
    labels = sc.meta["label"]
    info = {"data_root": str(Path(data_root).resolve()), "mode": mode, "sample": sample, "split": split,
            "preprocessing": preprocessing, "manifest": str(ms.path(mode, sample)),
            "manifest_sha256": view_sha, "manifest_key": ms.key, "unpaired_method": ms.unpaired_method,
            "cache": str(sc.directory), "cache_dir": str(cache.path), "cache_dir_reason": cache.reason,
            "cache_hit": not sc.built, "requested": sc.requested, "count": int(len(labels)),
            "positive": int(np.count_nonzero(labels == 1)), "negative": int(np.count_nonzero(labels == 0)),
            "bad_rows": len(bad), "failed_rows": len(ms.failed_rows(split)),
            "bad_row_limit": limit, "load_seconds": round(time.perf_counter() - started, 3)}
    return SplitArrays(sc.images, labels, sc.meta["theta_e"], sc.meta["lrg_id"], sc.meta["psf_bin"],
                       sc.meta["depth_bin"], tuple(bad), info)


def load_raw_examples(data_root: str | Path, *, mode: str, split: str, n_per_class: int, seed: int,
                      cache_dir: str | Path | None = None, settings: DataSettings | None = None) -> SplitArrays:
    """A few un-preprocessed stamps per class (cropped to 63×63, float32 nanomaggies), for the cutout view.

    Draws at random (seeded) from the full view's manifest and decodes only those
    blobs; rows that fail to decode are listed in `bad_rows` and left out.
    """
    _check_choice("data mode", mode, DATA_MODES)
    _check_choice("split", split, SPLITS)
    settings = settings or DataSettings()
    cache = cache_dir_for(data_root, settings, cache_dir)
    ms = build_manifests(data_root, cache.manifests, **settings.manifest_options())
    entries = ms.entries(mode, "full", split)
    rng = np.random.default_rng(seed)
    labels = entries["label"].to_numpy()
    pick = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == lab), size=min(n_per_class, int(np.count_nonzero(labels == lab))),
                   replace=False) for lab in (1, 0)]))
    chosen = entries.iloc[pick].reset_index(drop=True)
    images, keep, bad = [], [], []
    for shard, group in chosen.groupby("shard", sort=False):
        for chunk in shards.iter_decoded(Path(data_root) / shard, group["row"].to_numpy(),
                                         group["blob"].to_numpy(), shard_name=shard):
            bad.extend(chunk.bad)
            images.append(chunk.images)
            keep.append(group.index.to_numpy()[chunk.index])
    keep_idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    kept = chosen.iloc[keep_idx]
    stack = np.concatenate(images) if images else np.zeros((0, *stampcache.IMAGE_SHAPE), np.float32)
    info = {"data_root": str(Path(data_root).resolve()), "mode": mode, "sample": "full", "split": split,
            "preprocessing": "none (nanomaggies, float32)", "manifest": str(ms.path(mode, "full")),
            "manifest_sha256": ms.sha256(mode, "full"), "requested": int(len(chosen)), "count": int(len(kept)),
            "seed": seed}
    return SplitArrays(np.ascontiguousarray(stack, dtype=np.float32), kept["label"].to_numpy(np.uint8),
                       kept["theta_e"].to_numpy(np.float32), kept["lrg_id"].to_numpy(np.int64),
                       kept["psf_bin"].to_numpy(np.int8), kept["depth_bin"].to_numpy(np.int8), tuple(bad), info)


