"""Tiny datasets in the real shard format, for tests (any test may import these).

`write_tiny_dataset` makes a data root of a few LRGs with pixels: a round Gaussian
"LRG" at (32, 32) plus sky noise as the control, and the same control plus an
"arc" (a ring segment at θ_E) as the stamp, every row of an LRG sharing one
control as the real injections do. `write_index_dataset` makes a large data root
whose blobs are placeholders: manifests never read blobs, so stratification can be
tested on tens of thousands of rows in a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.config import SPLITS
from engine.data.shards import encode_blob

PIXEL_SCALE = 0.262
SIZE = 64
CENTER = 32


def lrg_image(rng: np.random.Generator, flux: float = 50.0, sigma_px: float = 2.5, noise: float = 0.05) -> np.ndarray:
    """(3, 64, 64) float32: a round Gaussian galaxy at (32, 32), redder in z, plus Gaussian sky noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r2 = (yy - CENTER) ** 2 + (xx - CENTER) ** 2
    profile = np.exp(-0.5 * r2 / sigma_px ** 2) / (2 * np.pi * sigma_px ** 2)
    colours = np.array([0.3, 1.0, 1.6])[:, None, None]
    return (flux * colours * profile + rng.normal(0.0, noise, (3, SIZE, SIZE))).astype(np.float32)


def arc_image(rng: np.random.Generator, theta_e: float, flux: float = 8.0, width_px: float = 1.0) -> np.ndarray:
    """(3, 64, 64) float32: a 120° ring segment at radius θ_E, blue, no noise (stamp = control + arc)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(yy - CENTER, xx - CENTER)
    phi = np.arctan2(yy - CENTER, xx - CENTER)
    start = rng.uniform(-np.pi, np.pi)
    in_arc = np.cos(phi - start) > np.cos(np.pi / 3)
    ring = np.exp(-0.5 * ((r - theta_e / PIXEL_SCALE) / width_px) ** 2) * in_arc
    ring /= max(ring.sum(), 1e-12)
    colours = np.array([1.0, 0.9, 0.7])[:, None, None]
    return (flux * colours * ring).astype(np.float32)


def write_shard(path: Path, columns: dict[str, list[Any] | np.ndarray], row_group_size: int | None = None) -> None:
    """One Parquet shard from a dict of columns (bytes columns become binary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, values in columns.items():
        if len(values) and isinstance(values[0], (bytes, type(None))) and name.endswith("_npz"):
            arrays[name] = pa.array(list(values), type=pa.binary())
        else:
            arrays[name] = pa.array(values)
    pq.write_table(pa.table(arrays), path, row_group_size=row_group_size)


def tiny_rows(n_lrgs: int, rows_per_lrg: int, seed: int, *, ra0: float, arc_flux: float = 8.0,
              encode: Callable[[np.ndarray], bytes] = encode_blob) -> dict[str, list[Any]]:
    """Columns of `n_lrgs` × `rows_per_lrg` rows with real pixels; LRGs at distinct ra from `ra0`."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {k: [] for k in ("stamp_npz", "ctrl_stamp_npz", "theta_e_arcsec", "psf_bin",
                                                  "depth_bin", "ra", "dec", "arc_snr", "brickname")}
    for i in range(n_lrgs):
        ctrl = lrg_image(rng, flux=float(rng.uniform(30, 80)))
        ctrl_blob = encode(ctrl)
        # Consecutive LRGs share a (psf_bin, depth_bin) cell, so even a tiny split has cells
        # of two or more LRGs: the unpaired view matches negatives to positives per cell.
        psf, depth = (i // 2) % 4, (i // 8) % 4
        ra, dec = ra0 + 0.01 * i, float(rng.uniform(-10, 10))
        for _ in range(rows_per_lrg):
            theta_e = float(rng.uniform(0.5, 3.0))
            cols["stamp_npz"].append(encode(ctrl + arc_image(rng, theta_e, arc_flux)))
            cols["ctrl_stamp_npz"].append(ctrl_blob)
            cols["theta_e_arcsec"].append(theta_e)
            cols["psf_bin"].append(psf)
            cols["depth_bin"].append(depth)
            cols["ra"].append(ra)
            cols["dec"].append(dec)
            cols["arc_snr"].append(float(rng.uniform(1, 20)))
            cols["brickname"].append(f"b{i:04d}")
    return cols


def write_tiny_dataset(root: Path, *, n_lrgs: dict[str, int] | None = None, rows_per_lrg: int = 3,
                       rows_per_shard: int = 12, seed: int = 0, arc_flux: float = 8.0) -> Path:
    """A data root of a few LRGs per split with real pixels; returns `root`."""
    n_lrgs = n_lrgs or {"train": 6, "val": 4, "test": 4}
    for split_no, split in enumerate(SPLITS):
        cols = tiny_rows(n_lrgs[split], rows_per_lrg, seed + split_no, ra0=10.0 + 50.0 * split_no,
                         arc_flux=arc_flux)
        n = len(cols["ra"])
        for shard_no, start in enumerate(range(0, n, rows_per_shard)):
            part = {k: v[start:start + rows_per_shard] for k, v in cols.items()}
            write_shard(root / split / f"shard-{shard_no:04d}.parquet", part)
    return root


def write_index_dataset(root: Path, *, rows: dict[str, int], rows_per_lrg: int = 12, seed: int = 0,
                        rows_per_shard: int = 5000) -> Path:
    """A large data root with placeholder blobs: realistic index columns, no pixels."""
    rng = np.random.default_rng(seed)
    for split_no, split in enumerate(SPLITS):
        n = rows[split]
        n_lrg = -(-n // rows_per_lrg)
        lrg = np.repeat(np.arange(n_lrg), rows_per_lrg)[:n]
        ra = 10.0 + 100.0 * split_no + lrg * 1e-4
        dec = np.full(n, -5.0) + (lrg % 7) * 1e-3
        psf = rng.integers(0, 4, n_lrg)[lrg]
        depth = rng.integers(0, 4, n_lrg)[lrg]
        # θ_E uniform in area (more large ones), so the bins are unequal, as in the real data.
        theta_e = np.sqrt(rng.uniform(0.5 ** 2, 3.0 ** 2, n))
        for shard_no, start in enumerate(range(0, n, rows_per_shard)):
            sl = slice(start, start + rows_per_shard)
            k = len(ra[sl])
            write_shard(root / split / f"shard-{shard_no:04d}.parquet", {
                "stamp_npz": [b"s"] * k, "ctrl_stamp_npz": [b"c"] * k,
                "theta_e_arcsec": theta_e[sl], "psf_bin": psf[sl], "depth_bin": depth[sl],
                "ra": ra[sl], "dec": dec[sl]})
    return root
