"""Rendering the twin's images: each LRG's noisy control once, each injection's noiseless arc.

An LRG (elliptical Sérsic n≈4) is convolved with its brick's PSF and gets sky and Poisson noise;
an injection adds a lensed arc (SIE + external shear, elliptical Sérsic source, engine/synthetic/
physics.py) to the same control pixels, as real injections do. In g, r, z nanomaggies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.synthetic import physics as P
from engine.synthetic.priors import LrgParams, SystemParams


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
