"""A synthetic twin of the real paired lens shards: same Parquet/NPZ format, same failure modes.

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
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.synthetic import physics as P
from engine.config import SPLITS
from engine.data.settings import DEFAULT_THETAE_BINS
from engine.data.shards import BLOB_CODEC, encode_blob
from engine.data.workers import InlineExecutor, default_jobs, executor
from engine.files import atomic_write_text, replace_dir
from engine.protocol import exitcodes

# Plan §2.1 (unpaired manifest sizes); an unpaired view of a paired split has ≈ as many rows.
PLAN_ROWS = {"train": 29_108, "val": 100_240, "test": 88_528}
LENS_MODEL = "SIE+shear"
MARKER = "synth.json"
MIN_LRGS_PER_SPLIT = 4
MAX_SCALE = 10.0
# Disjoint RA ranges keep the splits in separate sky regions, as the real ones are.
SPLIT_RA = {"train": (5.0, 115.0), "val": (125.0, 235.0), "test": (245.0, 355.0)}
DEC_RANGE = (-15.0, 30.0)
# Dark-sky brightness (mag/arcsec²) for g, r, z: sets the Poisson gain of the coadd (our choice).
SKY_MAG = np.array([22.0, 20.9, 18.7])
# Adaptive supersampling (radius around the profile's centre in units of r_eff, sub-pixels per
# side; see physics.integrate_pixels). Against a 12x12 (36x36 at the cusp) reference over the
# priors these keep every PSF-convolved arc pixel within 0.4% of the arc's peak and its flux
# within 0.7% (against lenstronomy at 16x16: 0.3% and 0.25%), at ~1/8 of the cost of uniform
# 5x5 sampling.
ARC_LEVELS = ((3.0, 3), (0.7, 6), (0.25, 12))
# The LRG's n≈4 cusp needs far finer sampling in its central pixel (0.2% of peak after the PSF).
# Even counts: an odd one puts a sub-pixel on the cusp itself, which overweights it.
LRG_LEVELS = ((1.5, 4), (0.3, 12), (0.06, 36))
# The 64-px kernels reach 32 px from their peak, so 64 + 32 px of padding make the LRG's
# convolution linear (no light wraps around the stamp).
LRG_FFT_SIZE = 96
# The twin's shape; 2: θ_E on the grid per LRG, replicate rows per selection set, bricks. A dataset
# made by an earlier layout still loads; --if-missing says it is older.
LAYOUT = 2
BYTES_PER_ROW = 100_000  # a stamp and a control blob, ~47 kB each: the disk-space check


# ---------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class Priors:
    """Every distribution the twin draws from, in one place (SCIENCE.md's, or our choice where marked).

    A new setting of the twin (a documented way to put a shortcut into the images, say) is a
    field here and the line of `sample_lrgs` or `sample_systems` that reads it.
    """

    # The data's layout, as the real pipeline writes it (the origin fixture shows it).
    theta_e_grid: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5)   # one value per LRG
    replicates: int = 2                 # injections per LRG; each repeated once per selection set
    lrgs_per_brick: float = 8.0         # mean LRGs per sky brick (1 + Poisson); our choice
    # Host LRG (SCIENCE.md): r in [17, 20.5] drawn from galaxy number counts dN/dm ∝ 10^(slope m).
    host_mag_r: tuple[float, float] = (17.0, 20.5)
    host_counts_slope: float = 0.5
    # Coadd per brick: r-band PSF FWHM (arcsec) and 5σ depth (AB).
    psf_fwhm_r: tuple[float, float, float, float] = (1.25, 0.15, 0.9, 1.6)   # mean, sd, clipped to [lo, hi]
    depth_r: tuple[float, float] = (23.4, 24.2)
    # Source (SCIENCE.md), unlensed r magnitude.
    src_mag_r: tuple[float, float] = (22.0, 25.0)


PRIORS = Priors()
BRICK_DEG = 0.25


@dataclass(frozen=True)
class LrgParams:
    """Per-LRG host light and coadd properties: arrays of shape (L,), per band (L, 3) in g, r, z.

    An LRG's PSF and depth are its sky brick's (`brick`, an index): the coadd is per brick.
    """

    ra: np.ndarray
    dec: np.ndarray
    mag_r: np.ndarray
    g_r: np.ndarray
    r_z: np.ndarray
    r_eff: np.ndarray  # circularised half-light radius, arcsec
    n: np.ndarray
    q: np.ndarray
    phi: np.ndarray
    psf_fwhm: np.ndarray  # (L, 3) arcsec
    depth: np.ndarray  # (L, 3) 5σ point-source depth, AB mag
    brick: np.ndarray  # (L,) index of the LRG's brick (bricks are numbered per draw)

    def take(self, idx: np.ndarray | slice) -> "LrgParams":
        """The LRGs at `idx`."""
        return LrgParams(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.ra)


@dataclass(frozen=True)
class SystemParams:
    """One entry per injection (N,), each pointing at its LRG through `lrg_index`.

    As in the real data, an LRG has one θ_E, one source brightness and size, and `replicates`
    injections (source position and angles, lens ellipticity, shear angle, colours differ);
    its `lrg_rows` rows repeat those injections, one per selection set (rows_layout).
    """

    lrg: LrgParams
    lrg_index: np.ndarray  # (N,) int, sorted: an LRG's injections are contiguous
    theta_e: np.ndarray  # arcsec, lenstronomy's SIE convention (see engine.synthetic.physics)
    lens_q: np.ndarray
    lens_phi: np.ndarray
    gamma1: np.ndarray
    gamma2: np.ndarray
    src_x: np.ndarray  # source position, arcsec from the lens centre
    src_y: np.ndarray
    src_mag_r: np.ndarray  # unlensed
    src_g_r: np.ndarray
    src_r_z: np.ndarray
    src_r_eff: np.ndarray
    src_n: np.ndarray
    src_q: np.ndarray
    src_phi: np.ndarray
    lrg_rows: np.ndarray | None = None  # (L,) rows of each LRG in the shards; None: one per injection

    def __len__(self) -> int:
        return len(self.theta_e)

    @property
    def rows_per_lrg(self) -> np.ndarray:
        """(L,) rows each LRG has in the shards."""
        if self.lrg_rows is not None:
            return self.lrg_rows
        return np.bincount(self.lrg_index, minlength=len(self.lrg))

    def take_lrgs(self, start: int, stop: int) -> "SystemParams":
        """The LRGs start..stop-1 and all their injections, with `lrg_index` re-based to 0."""
        lo, hi = np.searchsorted(self.lrg_index, [start, stop])
        per_injection = {f.name: getattr(self, f.name)[lo:hi] for f in fields(self)
                         if f.name not in ("lrg", "lrg_index", "lrg_rows")}
        rows = None if self.lrg_rows is None else self.lrg_rows[start:stop]
        return SystemParams(lrg=self.lrg.take(slice(start, stop)), lrg_index=self.lrg_index[lo:hi] - start,
                            lrg_rows=rows, **per_injection)


def rows_layout(params: SystemParams, replicates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per shard row: its injection, selection set and replicate.

    Row k of an LRG is replicate k mod (its injections) of selection set k // replicates, as the
    pipeline's rows are: each selection set that picked the LRG repeats its injections, byte for byte.
    """
    counts = params.rows_per_lrg
    first = np.searchsorted(params.lrg_index, np.arange(len(params.lrg)))
    n_inj = np.bincount(params.lrg_index, minlength=len(params.lrg))
    injection, selection, replicate = [], [], []
    for lrg, (rows, start, n) in enumerate(zip(counts.tolist(), first.tolist(), n_inj.tolist())):
        k = np.arange(rows)
        injection.append(start + k % n)
        selection.append(k // replicates)
        replicate.append(k % n)
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return join(injection), join(selection), join(replicate)


def _brickname(ra: np.ndarray, dec: np.ndarray) -> list[str]:
    # Legacy Surveys style, e.g. "1234p056": brick centre RA·10 and |Dec|·10 on a 0.25° grid.
    bra = (np.floor(ra / BRICK_DEG) + 0.5) * BRICK_DEG
    bdec = (np.floor(dec / BRICK_DEG) + 0.5) * BRICK_DEG
    return [f"{round(r * 10):04d}{'p' if d >= 0 else 'm'}{round(abs(d) * 10):03d}" for r, d in zip(bra, bdec)]


def _bricks(n_lrgs: int, rng: np.random.Generator, ra_range: tuple[float, float],
            priors: Priors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky bricks holding `n_lrgs` LRGs: each LRG's brick index, and its ra/dec inside that brick.

    Bricks lie on the 0.25° grid of the split's sky region (distinct bricks), LRGs uniform in
    their brick; a brick holds 1 + Poisson(lrgs_per_brick − 1) LRGs (our choice).
    """
    if n_lrgs == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    sizes = []
    while sum(sizes) < n_lrgs:
        sizes.append(1 + int(rng.poisson(max(priors.lrgs_per_brick - 1.0, 0.0))))
    sizes[-1] -= sum(sizes) - n_lrgs
    n_bricks = len(sizes)
    ra_cells = int((ra_range[1] - ra_range[0]) // BRICK_DEG)
    dec_lo, dec_hi = (math.floor(d / BRICK_DEG) for d in DEC_RANGE)
    cells = rng.choice(ra_cells * (dec_hi - dec_lo), size=n_bricks, replace=n_bricks > ra_cells * (dec_hi - dec_lo))
    ra0 = ra_range[0] + (cells % ra_cells) * BRICK_DEG
    dec0 = (dec_lo + cells // ra_cells) * BRICK_DEG
    brick = np.repeat(np.arange(n_bricks), sizes)
    ra = np.round(ra0[brick] + rng.uniform(0.0, BRICK_DEG, n_lrgs), 6)
    dec = np.round(dec0[brick] + rng.uniform(0.0, BRICK_DEG, n_lrgs), 6)
    while len(set(zip(ra, dec))) < n_lrgs:  # identity is ra/dec to 6 decimals: keep them unique
        ra = np.round(ra + rng.uniform(0, 1e-5, n_lrgs), 6)
    return brick, ra, dec


def sample_lrgs(n_lrgs: int, rng: np.random.Generator, ra_range: tuple[float, float] = (0.0, 360.0),
                priors: Priors = PRIORS) -> LrgParams:
    """Draw host LRGs in sky bricks, and each brick's coadd PSF and depth, from the priors."""
    brick, ra, dec = _bricks(n_lrgs, rng, ra_range, priors)
    n_bricks = int(brick.max()) + 1 if n_lrgs else 0
    # r in [17, 20.5] with galaxy number counts dN/dm ∝ 10^(0.5 m): faint hosts dominate
    # (median r ≈ 19.9), as in any magnitude-limited LRG sample (SDSS r-band galaxy counts rise
    # by roughly 0.45-0.6 dex per mag here, Yasuda et al. 2001); SCIENCE.md gives only the range.
    # It matters because raw_robust clips at ±50 sky-MADs and a host core already at the clip
    # hides the injected core light: flat in r, 31% of the r/z core-box pixels clip and the raw
    # core gate falls to ~0.77 (lenstronomy renders agree); with counts, ~8% and ~0.86.
    # docs/DATA.md, "Gate matrix on the synthetic twin", has the measurements.
    lo, hi = priors.host_mag_r
    slope = priors.host_counts_slope * math.log(10.0)
    mag_r = lo + np.log1p(rng.uniform(0, 1, n_lrgs) * math.expm1(slope * (hi - lo))) / slope
    # Brighter hosts are larger (median r_eff ≈ 0.9″).
    ln_re = np.log(0.9) - 0.2 * (mag_r - 19.9) + rng.normal(0.0, 0.25, n_lrgs)
    r_eff = np.clip(np.exp(ln_re), 0.5, 1.5)
    # The coadd's PSF and depth belong to the brick, shared by its LRGs (as psfsize_r and
    # psfdepth_r are in the real shards).
    mean, sd, psf_lo, psf_hi = priors.psf_fwhm_r
    psf_r = np.clip(rng.normal(mean, sd, n_bricks), psf_lo, psf_hi)
    # g a little wider, z a little narrower than r (atmospheric seeing ∝ λ^-0.2, plus scatter).
    psf = np.stack([psf_r * rng.uniform(1.04, 1.10, n_bricks), psf_r, psf_r * rng.uniform(0.90, 0.96, n_bricks)],
                   axis=1)
    depth_r = rng.uniform(*priors.depth_r, n_bricks)
    depth = np.stack([depth_r + 0.5 + rng.normal(0, 0.1, n_bricks), depth_r,
                      depth_r - 0.9 + rng.normal(0, 0.1, n_bricks)], axis=1)
    return LrgParams(
        ra=ra,
        dec=dec,
        mag_r=mag_r,
        g_r=rng.uniform(1.5, 1.9, n_lrgs),
        r_z=rng.uniform(0.8, 1.1, n_lrgs),
        r_eff=r_eff,
        n=rng.uniform(3.5, 4.5, n_lrgs),
        q=rng.uniform(0.6, 1.0, n_lrgs),
        phi=rng.uniform(0.0, np.pi, n_lrgs),
        psf_fwhm=psf[brick],
        depth=depth[brick],
        brick=brick,
    )


def sample_systems(rows_per_lrg: Sequence[int], rng: np.random.Generator, ra_range: tuple[float, float] = (0.0, 360.0),
                   priors: Priors = PRIORS) -> SystemParams:
    """Draw LRGs (one per entry of `rows_per_lrg`, its row count) and their injections.

    Per LRG, as the pipeline's configurations are: θ_E on the grid, the source's brightness, size,
    Sérsic index and axis ratio, the shear's strength. Per injection (min(rows, replicates) of
    them): the source position and angle, its colours, the lens's axis ratio and angle, the
    shear's angle.
    """
    counts = np.asarray(rows_per_lrg, dtype=np.int64)
    n_lrg = len(counts)
    lrg = sample_lrgs(n_lrg, rng, ra_range, priors)
    n_inj = np.minimum(counts, priors.replicates)
    lrg_index = np.repeat(np.arange(n_lrg), n_inj)
    n = int(n_inj.sum())
    per_lrg = lambda values: np.asarray(values)[lrg_index]  # noqa: E731
    theta_e = per_lrg(rng.choice(np.asarray(priors.theta_e_grid, dtype=np.float64), n_lrg))
    # β/θ_E in [0.1, 0.4], uniform in area (p ∝ β); position angle uniform.
    beta = theta_e * np.sqrt(rng.uniform(0.1**2, 0.4**2, n))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    # Mass roughly follows light: the SIE's axis near the LRG's (our choice).
    lens_phi = lrg.phi[lrg_index] + rng.normal(0.0, np.radians(10.0), n)
    # Shear: strength per LRG (|γ| of two N(0, 0.05) components), angle per injection.
    shear = per_lrg(np.hypot(rng.normal(0.0, 0.05, n_lrg), rng.normal(0.0, 0.05, n_lrg)))
    shear_angle = rng.uniform(0.0, np.pi, n)
    return SystemParams(
        lrg=lrg,
        lrg_index=lrg_index,
        theta_e=theta_e,
        lens_q=rng.uniform(0.5, 1.0, n),
        lens_phi=lens_phi,
        gamma1=shear * np.cos(2 * shear_angle),
        gamma2=shear * np.sin(2 * shear_angle),
        src_x=beta * np.cos(angle),
        src_y=beta * np.sin(angle),
        src_mag_r=per_lrg(rng.uniform(*priors.src_mag_r, n_lrg)),
        src_g_r=rng.normal(0.2, 0.2, n),
        src_r_z=rng.normal(0.1, 0.2, n),
        src_r_eff=per_lrg(rng.uniform(0.15, 0.5, n_lrg)),
        src_n=per_lrg(rng.uniform(0.5, 2.0, n_lrg)),
        src_q=per_lrg(rng.uniform(0.3, 1.0, n_lrg)),
        src_phi=rng.uniform(0.0, np.pi, n),
        lrg_rows=counts,
    )


# ---------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Optics:
    """Per-LRG, per-band PSF transforms and noise levels (L, 3, ...)."""

    psf_fft_arc: np.ndarray  # kernel_fft at 64 px (circular: arcs are compact)
    psf_fft_lrg: np.ndarray  # kernel_fft padded to LRG_FFT_SIZE (LRG light fills the stamp)
    sky_sigma: np.ndarray  # (L, 3) nanomaggies per pixel
    gain: np.ndarray  # (L, 3) photo-electrons per nanomaggy


@dataclass(frozen=True)
class RenderedBatch:
    """Controls (one per LRG), noiseless arcs (one per row), and what the metadata needs."""

    ctrl: np.ndarray  # (L, 3, 64, 64) float32
    arc: np.ndarray  # (N, 3, 64, 64) float32
    sky_sigma: np.ndarray  # (L, 3)
    src_flux: np.ndarray  # (N, 3) unlensed nanomaggies


def lrg_optics(lrg: LrgParams) -> Optics:
    """PSF kernels, sky noise from the 5σ depth and the Poisson gain for each LRG's coadd."""
    kernels = P.moffat_kernel(lrg.psf_fwhm)
    sky_sigma = P.sky_sigma_from_depth(lrg.depth, kernels)
    return Optics(
        psf_fft_arc=P.kernel_fft(kernels),
        psf_fft_lrg=P.kernel_fft(kernels, pad_to=LRG_FFT_SIZE),
        sky_sigma=sky_sigma,
        gain=P.counts_per_nmgy(sky_sigma, SKY_MAG[None, :]),
    )


def _band_fluxes(mag_r: np.ndarray, g_r: np.ndarray, r_z: np.ndarray) -> np.ndarray:
    return P.mag_to_nmgy(np.stack([mag_r + g_r, mag_r, mag_r - r_z], axis=-1))


def render_lrg_light(lrg: LrgParams, optics: Optics) -> np.ndarray:
    """Noiseless PSF-convolved LRG images (L, 3, 64, 64), nanomaggies per pixel."""
    unit = P.render_sersic(r_eff=lrg.r_eff, n=lrg.n, q=lrg.q, phi=lrg.phi, levels=LRG_LEVELS)
    light = P.fft_convolve(unit[:, None], optics.psf_fft_lrg, pad_to=LRG_FFT_SIZE)
    return light * _band_fluxes(lrg.mag_r, lrg.g_r, lrg.r_z)[:, :, None, None]


def render_unit_arcs(params: SystemParams) -> np.ndarray:
    """Lensed source images before the PSF (N, 64, 64), flux per pixel for unit unlensed flux."""
    return P.render_lensed_sersic(
        theta_e=params.theta_e,
        lens_q=params.lens_q,
        lens_phi=params.lens_phi,
        gamma1=params.gamma1,
        gamma2=params.gamma2,
        src_x=params.src_x,
        src_y=params.src_y,
        src_r_eff=params.src_r_eff,
        src_n=params.src_n,
        src_q=params.src_q,
        src_phi=params.src_phi,
        levels=ARC_LEVELS,
    )


def render_batch(params: SystemParams, rng: np.random.Generator) -> RenderedBatch:
    """Render every LRG's noisy control once and every row's noiseless arc."""
    optics = lrg_optics(params.lrg)
    light = render_lrg_light(params.lrg, optics)
    # Sky noise plus the LRG's own Poisson noise (Gaussian limit), as in a real coadd.
    sd = np.sqrt(optics.sky_sigma[:, :, None, None] ** 2 + np.maximum(light, 0.0) / optics.gain[:, :, None, None])
    ctrl = (light + sd * rng.standard_normal(light.shape)).astype(np.float32)

    # Single precision from here: ~3x faster FFTs, and float32 is what the blobs store.
    spectrum = np.fft.rfft2(render_unit_arcs(params).astype(np.float32))
    src_flux = _band_fluxes(params.src_mag_r, params.src_g_r, params.src_r_z)
    psf = optics.psf_fft_arc.astype(np.complex64)
    product = np.empty(spectrum.shape[:1] + (3,) + spectrum.shape[1:], dtype=np.complex64)
    bounds = np.searchsorted(params.lrg_index, np.arange(len(params.lrg) + 1))
    for lrg, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):  # per LRG, not per image
        np.multiply(spectrum[lo:hi, None], psf[lrg], out=product[lo:hi])
    product *= src_flux[:, :, None, None].astype(np.complex64)
    arc = np.fft.irfft2(product, s=(P.STAMP_SIZE, P.STAMP_SIZE)).astype(np.float32, copy=False)
    return RenderedBatch(ctrl=ctrl, arc=arc, sky_sigma=optics.sky_sigma, src_flux=src_flux)


def render_systems(params: SystemParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Controls and noiseless arcs, float32 (N, 3, 64, 64) in g, r, z nanomaggies; stamp = ctrl + arc.

    An LRG's rows share one control (same pixels, same noise), as in the real injections.
    """
    batch = render_batch(params, rng)
    return batch.ctrl[params.lrg_index], batch.arc


# ---------------------------------------------------------------------------
# Encoding and writing


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
) -> DatasetSummary:
    """Write a complete synthetic dataset at `out` (atomically) and return its summary.

    Give `scale` (the plan's sizes times scale) or `rows` (rows per split, explicit). A shard
    holds whole LRGs, at most `shard_rows` rows; each worker renders and writes whole shards.
    The same arguments give the same bytes whatever `jobs` (worker processes) is: every batch
    of `lrgs_per_batch` LRGs has its own seeded generator.
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
        split: sample_systems(allocate_rows(rows[split], rows_per_lrg), np.random.default_rng(seeds[split][0]), SPLIT_RA[split])
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
        summary = _summary(out, seed, scale, params, shards, np.concatenate(snr), psf_edges, depth_edges, started)
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
        theta_e_counts={s: np.histogram(p.theta_e[rows_layout(p, PRIORS.replicates)[0]], bins=DEFAULT_THETAE_BINS)[0].tolist()
                        for s, p in params.items()},
        median_arc_snr=float(np.median(snr)),
        psf_edges=psf_edges.tolist(),
        depth_edges=depth_edges.tolist(),
        seconds=round(time.monotonic() - started, 3),
        engine_version=getattr(engine, "ENGINE_VERSION", ""),
        blob_codec=BLOB_CODEC,
        layout=LAYOUT,
    )


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
    except ConfigError as exc:
        raise SynthError(str(exc)) from None
    dataset = config.dataset_for(host)
    if dataset.kind != "synthetic":
        raise SynthError(f"{args.config}: hosts.{host.name} uses dataset {dataset.name!r}, which is "
                         f"kind {dataset.kind!r}, not 'synthetic': there is nothing to make")
    root = Path(os.path.expanduser(host.resolve(dataset.root)))   # a host's root may be ~/data/...
    if not root.is_absolute() and host.work_dir == ".":
        root = args.config.resolve().parent / root  # '.' is the config file's folder
    args.out = args.out or root
    args.scale = dataset.scale if args.scale is None else args.scale
    args.seed = dataset.seed if args.seed is None else args.seed


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
        if args.if_missing:
            found = load_summary(args.out)
            if found is not None:
                note = ""
                if (found.scale, found.seed) != (args.scale, args.seed):
                    note = f" (made with scale {found.scale}, seed {found.seed}; asked scale {args.scale}, seed {args.seed}; delete it to remake)"
                elif found.layout != LAYOUT:
                    note = (f" (made by an earlier twin, layout {found.layout}: θ_E drawn per row, no replicate rows or "
                            f"bricks; delete it to remake it in layout {LAYOUT})")
                print(f"synth: reusing the complete dataset at {args.out}{note}")
                return exitcodes.OK
        args.jobs = default_jobs() if args.jobs is None else args.jobs
        if args.jobs < 1:
            raise SynthError(f"--jobs must be at least 1, got {args.jobs}")
        summary = write_dataset(args.out, scale=args.scale, seed=args.seed, jobs=args.jobs, progress=sys.stderr.isatty())
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
    if summary.blob_codec != "isal-1":
        print(f"synth: blobs deflated with {summary.blob_codec}; `pip install isal` deflates them ~3x faster",
              file=sys.stderr)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
