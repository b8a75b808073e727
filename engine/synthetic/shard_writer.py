"""One shard of the twin: a batch's renders laid out as the pipeline's Parquet rows, blobs encoded.

The schema is the real shards' (stamp and control NPZ blobs, θ_E, psf/depth bins, ra/dec, the
pipeline's metadata and its selection-set, replicate and cut-out columns); a worker renders
and writes whole shards, a row group per batch, so no pixels travel between processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.data.shards import encode_blob
from engine.synthetic.priors import PRIORS, SystemParams, _brickname, rows_layout
from engine.synthetic.render import render_batch


LENS_MODEL = "SIE+shear"

SCHEMA = pa.schema(
    [
        ("stamp_npz", pa.binary()),
        ("ctrl_stamp_npz", pa.binary()),
        ("theta_e_arcsec", pa.float64()),
        ("psf_bin", pa.int64()),
        ("depth_bin", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("arc_snr", pa.float64()),
        ("src_reff_arcsec", pa.float64()),
        ("src_dmag", pa.float64()),
        ("magnification", pa.float64()),
        ("psfsize_r", pa.float64()),
        ("psfdepth_r", pa.float64()),
        ("lens_model", pa.string()),
        ("brickname", pa.string()),
        # As the pipeline writes them: which selection set and replicate a row is, and its cut-out
        # flag (always 1 here: the twin has no failed cut-outs; tests add them where needed).
        ("selection_set_id", pa.string()),
        ("replicate", pa.int32()),
        ("cutout_ok", pa.int32()),
    ]
)

def brick_quartiles(params: "Iterable[SystemParams]") -> tuple[np.ndarray, np.ndarray]:
    """The quartile edges of r-band PSF FWHM and depth over the bricks of every split, each brick once."""
    psf, depth = [], []
    for p in params:
        _, first = np.unique(p.lrg.brick, return_index=True)
        psf.append(p.lrg.psf_fwhm[first, 1])
        depth.append(p.lrg.depth[first, 1])
    quartiles = [0.25, 0.5, 0.75]
    return np.quantile(np.concatenate(psf), quartiles), np.quantile(np.concatenate(depth), quartiles)

def quartile_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin 0–3 of each value given the three quartile edges."""
    return np.searchsorted(edges, values, side="right").astype(np.int64)

def batch_table(params: SystemParams, rng: np.random.Generator, psf_edges: np.ndarray, depth_edges: np.ndarray,
                replicates: int = PRIORS.replicates) -> pa.Table:
    """Render a batch's injections and lay them out as rows of the shard schema (rows_layout)."""
    out = render_batch(params, rng)
    li = params.lrg_index
    stamps = out.ctrl[li] + out.arc  # one vectorised add per injection (float32, as stored)
    ctrl_blobs = [encode_blob(c) for c in out.ctrl]
    stamp_blobs = [encode_blob(stamp) for stamp in stamps]
    inj, selection, replicate = rows_layout(params, replicates)
    lrg = li[inj]
    psf_r = params.lrg.psf_fwhm[lrg, 1]
    depth_r = params.lrg.depth[lrg, 1]
    bricks = _brickname(params.lrg.ra, params.lrg.dec)
    snr = out.arc[:, 1].max(axis=(-2, -1)) / out.sky_sigma[li, 1]
    # Lensed over unlensed flux; the PSF conserves flux, so the r-band arc sum serves.
    magnification = out.arc[:, 1].sum(axis=(-2, -1), dtype=np.float64) / out.src_flux[:, 1]
    columns = {
        "stamp_npz": [stamp_blobs[i] for i in inj],
        "ctrl_stamp_npz": [ctrl_blobs[i] for i in lrg],
        "theta_e_arcsec": params.theta_e[inj],
        "psf_bin": quartile_bins(psf_r, psf_edges),
        "depth_bin": quartile_bins(depth_r, depth_edges),
        "ra": params.lrg.ra[lrg],
        "dec": params.lrg.dec[lrg],
        "arc_snr": snr[inj],
        "src_reff_arcsec": params.src_r_eff[inj],
        # Our definition: unlensed source r mag minus host LRG r mag.
        "src_dmag": (params.src_mag_r - params.lrg.mag_r[li])[inj],
        "magnification": magnification[inj],
        "psfsize_r": psf_r,
        "psfdepth_r": depth_r,
        "lens_model": [LENS_MODEL] * len(inj),
        "brickname": [bricks[i] for i in lrg],
        "selection_set_id": [f"set{k}" for k in selection],
        "replicate": replicate.astype(np.int32),
        "cutout_ok": np.ones(len(inj), np.int32),
    }
    return pa.table(columns, schema=SCHEMA)

PARQUET_OPTIONS = dict(
    # Dictionary-encoding the blobs stores each LRG's control once, not ~12x, and each injection
    # once, not once per selection set: an LRG's rows are all in one batch, so in one row group.
    use_dictionary=["stamp_npz", "ctrl_stamp_npz", "lens_model", "brickname", "selection_set_id"],
    dictionary_pagesize_limit=256 << 20,
    compression="none",  # the blobs are deflated already; the rest is small
)

def render_shard(path: Path, params: SystemParams, seeds: Sequence[np.random.SeedSequence], lrgs_per_batch: int,
                 psf_edges: np.ndarray, depth_edges: np.ndarray) -> np.ndarray:
    """Render one shard's LRGs a batch at a time and write it, a row group per batch; returns its arc_snr.

    Batch i of the shard draws its noise from `seeds[i]`. A worker process writes its own
    shards, so no pixels travel between processes.
    """
    snr = []
    with pq.ParquetWriter(path, SCHEMA, **PARQUET_OPTIONS) as writer:
        for seed, start in zip(seeds, range(0, len(params.lrg), lrgs_per_batch), strict=True):
            batch = params.take_lrgs(start, start + lrgs_per_batch)
            table = batch_table(batch, np.random.default_rng(seed), psf_edges, depth_edges)
            writer.write_table(table)
            snr.append(_injection_snr(table))
    return np.concatenate(snr)

def _injection_snr(table: pa.Table) -> np.ndarray:
    """arc_snr once per injection (selection set 0 of each LRG), not once per repeated row."""
    first_set = np.asarray(table.column("selection_set_id").to_pylist()) == "set0"
    return table.column("arc_snr").to_numpy()[first_set]
