"""What the synthetic twin draws: every distribution in `Priors`, and the LRGs and injections drawn from them.

Shaped like the real data (the origin fixture shows it): θ_E on the pipeline's grid, one value
per LRG; `replicates` injections per LRG, each repeated byte for byte once per selection set
(~12 rows per LRG, `rows_layout`); LRGs in sky bricks that share a PSF and depth. Priors follow
shared/SCIENCE.md ("Physics for a synthetic stand-in"); the choices it leaves open are marked
"our choice".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np


# Disjoint RA ranges keep the splits in separate sky regions, as the real ones are.
SPLIT_RA = {"train": (5.0, 115.0), "val": (125.0, 235.0), "test": (245.0, 355.0)}

DEC_RANGE = (-15.0, 30.0)

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
    # Which LRGs are the lens hosts of the unpaired view (docs/DATA.md, "A residual core shortcut").
    # 0: none chosen here; the manifest halves each split's LRGs at random, as the origin's builder
    # does, so lens and non-lens hosts are alike. k > 0: a lens catalogue (lens_catalogue.py) whose
    # lens hosts are half the LRGs drawn with probability ∝ L_r^k, as a real lens sample is: the
    # lensing cross-section ∝ σ⁴ ∝ L (Faber–Jackson) gives k = 1, and a sample confirmed by
    # spectroscopy, whose completeness rises with the host's flux, weighs bright hosts once more.
    # The non-lens pool is the rest: fainter hosts, whose residual cores differ. Our choice.
    lens_host_luminosity_weight: float = 0.0

PRIORS = Priors()


def lens_hosts(mag_r: np.ndarray, rng: np.random.Generator, priors: Priors = PRIORS) -> np.ndarray:
    """(L,) bool: the LRGs a lens catalogue takes as lens hosts, half of them (rounded down), drawn
    without replacement with probability ∝ L_r^k (k = priors.lens_host_luminosity_weight)."""
    k = priors.lens_host_luminosity_weight
    weight = 10.0 ** (-0.4 * k * (np.asarray(mag_r, np.float64) - np.min(mag_r)))   # L^k, the brightest 1: no overflow
    chosen = rng.choice(len(weight), size=len(weight) // 2, replace=False, p=weight / weight.sum())
    out = np.zeros(len(weight), bool)
    out[chosen] = True
    return out

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
