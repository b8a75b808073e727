"""The shortcut gates on pairs rendered by lenstronomy, independently of engine.synth.

A science check, not a speed benchmark: SCIENCE.md's priors rendered with lenstronomy (the
field's reference code), one injection per LRG (the issue's "1000 pairs"), then the engine's own
preprocessing and gates. It prints what decides the raw core gate (how many host-core pixels
sit at the ±50 clip) beside the gate matrix, with and without the clip. docs/DATA.md ("Gate
matrix on the synthetic twin") holds its numbers.

    .venv/bin/python -m bench.twin_gates_lenstronomy --host-prior flat     # ~5 min on one core
    .venv/bin/python -m bench.twin_gates_lenstronomy --host-prior counts

SCIENCE.md gives the host's r as a range (17-20.5); `flat` draws it uniformly, `counts` with
galaxy number counts dN/dm ∝ 10^(0.5 m) as engine.synth does. Everything else is drawn flat
over SCIENCE.md's ranges (host r_eff log-normal about 0.9″). Needs lenstronomy (a test extra).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np

from engine.data.gates import core_box_slice, shortcut_gates
from engine.data.preprocess import CLIP, _robust_scale, raw_robust, residual

SCALE = 0.262
SKY_MAG = (22.0, 20.9, 18.7)  # g, r, z dark sky (mag/arcsec²): the host's Poisson gain
SUPERSAMPLING = 6  # even: an odd factor puts a sub-pixel on the n≈4 cusp and brightens it


def nmgy(mag: float) -> float:
    return 10 ** ((22.5 - mag) / 2.5)


def moffat_kernel(fwhm: float, beta: float = 3.5, size: int = 41, over: int = 9) -> np.ndarray:
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    sub = ((np.arange(size * over) + 0.5) / over - 0.5 - size // 2) * SCALE
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    k = ((1 + (xx**2 + yy**2) / alpha**2) ** (-beta)).reshape(size, over, size, over).mean(axis=(1, 3))
    return k / k.sum()


def render(n_lrgs: int, host_prior: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Controls and noiseless arcs (N, 3, 64, 64) in g, r, z nanomaggies, and r-band sky σ (N,)."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import param_util

    rng = np.random.default_rng(seed)
    data = ImageData(image_data=np.zeros((64, 64)), ra_at_xy_0=-32 * SCALE, dec_at_xy_0=-32 * SCALE,
                     transform_pix2angle=np.array([[SCALE, 0.0], [0.0, SCALE]]))
    sersic = LightModel(["SERSIC_ELLIPSE"])

    def amp_for(flux: float, profile: dict) -> float:  # lenstronomy's amp is I_e, not the total flux
        return flux / sersic.total_flux([dict(amp=1.0, **profile)])[0]

    ctrl = np.zeros((n_lrgs, 3, 64, 64))
    arcs = np.zeros((n_lrgs, 3, 64, 64))
    sky_r = np.zeros(n_lrgs)
    no_lens = [dict(theta_E=1.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0), dict(gamma1=0.0, gamma2=0.0)]
    for i in range(n_lrgs):
        if host_prior == "flat":
            mag = rng.uniform(17.0, 20.5)
        else:
            slope = 0.5 * math.log(10)
            mag = 17.0 + math.log1p(rng.uniform() * math.expm1(slope * 3.5)) / slope
        r_eff = float(np.clip(0.9 * math.exp(rng.normal(0, 0.3)), 0.5, 1.5))
        e1, e2 = param_util.phi_q2_ellipticity(rng.uniform(0, np.pi), rng.uniform(0.6, 1.0))
        host = dict(R_sersic=r_eff, n_sersic=rng.uniform(3.5, 4.5), e1=e1, e2=e2, center_x=0.0, center_y=0.0)
        host_mags = np.array([mag + rng.uniform(1.5, 1.9), mag, mag - rng.uniform(0.8, 1.1)])
        fwhm_r, depth_r = rng.uniform(0.9, 1.6), rng.uniform(23.4, 24.2)

        theta_e = rng.uniform(0.5, 3.0)
        le1, le2 = param_util.phi_q2_ellipticity(rng.uniform(0, np.pi), rng.uniform(0.5, 1.0))
        lens = [dict(theta_E=theta_e, e1=le1, e2=le2, center_x=0.0, center_y=0.0),
                dict(gamma1=rng.normal(0, 0.05), gamma2=rng.normal(0, 0.05), ra_0=0.0, dec_0=0.0)]
        beta, angle = theta_e * math.sqrt(rng.uniform(0.01, 0.16)), rng.uniform(0, 2 * np.pi)
        se1, se2 = param_util.phi_q2_ellipticity(rng.uniform(0, np.pi), rng.uniform(0.3, 1.0))
        src = dict(R_sersic=rng.uniform(0.15, 0.5), n_sersic=rng.uniform(0.5, 2.0), e1=se1, e2=se2,
                   center_x=beta * math.cos(angle), center_y=beta * math.sin(angle))
        src_r = rng.uniform(22.0, 25.0)
        src_mags = np.array([src_r + rng.normal(0.2, 0.2), src_r, src_r - rng.normal(0.1, 0.2)])

        for b, (fwhm, depth) in enumerate(zip((fwhm_r * 1.07, fwhm_r, fwhm_r * 0.93), (depth_r + 0.5, depth_r, depth_r - 0.9))):
            kernel = moffat_kernel(fwhm)
            model = ImageModel(data, PSF(psf_type="PIXEL", kernel_point_source=kernel),
                               lens_model_class=LensModel(["SIE", "SHEAR"]), source_model_class=sersic,
                               lens_light_model_class=sersic,
                               kwargs_numerics={"supersampling_factor": SUPERSAMPLING, "supersampling_convolution": False})
            light = model.image(kwargs_lens=no_lens, kwargs_lens_light=[dict(amp=amp_for(nmgy(host_mags[b]), host), **host)],
                                kwargs_source=[dict(amp=0.0, **src)], source_add=False)
            arcs[i, b] = model.image(kwargs_lens=lens, kwargs_source=[dict(amp=amp_for(nmgy(src_mags[b]), src), **src)],
                                     kwargs_lens_light=[dict(amp=0.0, **host)], lens_light_add=False)
            # Sky noise from the 5σ point-source depth, plus the host's own Poisson noise.
            sigma = nmgy(depth) / (5 * math.sqrt(1.0 / np.sum(kernel**2)))
            sky_level = nmgy(SKY_MAG[b]) * SCALE**2
            sd = np.sqrt(sigma**2 + np.maximum(light, 0.0) * sigma**2 / sky_level)
            ctrl[i, b] = light + sd * rng.standard_normal(light.shape)
            if b == 1:
                sky_r[i] = sigma
    return ctrl.astype(np.float32), arcs.astype(np.float32), sky_r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host-prior", choices=("flat", "counts"), default="flat")
    parser.add_argument("--n", type=int, default=1000, help="LRGs, one injection each")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # lenstronomy's FFT calls

    started = time.perf_counter()
    ctrl, arcs, sky_r = render(args.n, args.host_prior, args.seed)
    print(f"lenstronomy: {args.n} pairs, host prior {args.host_prior}, seed {args.seed}, "
          f"rendered in {time.perf_counter() - started:.0f} s")
    print(f"median arc_snr {np.median(arcs[:, 1].max(axis=(1, 2)) / sky_r):.2f}")
    ctrl, stamp = ctrl[:, :, 1:, 1:], (ctrl + arcs)[:, :, 1:, 1:]   # the engine's 63-px crop
    box = core_box_slice(63, 10)
    scaled = _robust_scale(ctrl)
    print(f"host centre pixel in sky-MADs (median g, r, z): {np.median(scaled[:, :, 31, 31], axis=0).round(1)}")
    print(f"r/z core-box pixels at the +{CLIP:g} clip: {(scaled[:, 1:, box, box] >= CLIP).mean():.1%}")

    n = len(ctrl)
    lrg = np.arange(n)
    paired = (np.concatenate([stamp, ctrl]), np.r_[np.ones(n), np.zeros(n)].astype(int), np.r_[lrg, lrg])
    pos = np.random.default_rng(0).permutation(n) < n // 2   # unpaired: disjoint halves of the LRGs
    unpaired = (np.concatenate([stamp[pos], ctrl[~pos]]), np.r_[np.ones(pos.sum()), np.zeros((~pos).sum())].astype(int),
                np.r_[lrg[pos], lrg[~pos]])
    no_clip = _robust_scale   # raw_robust before its final clip: the same numbers otherwise
    print("| mode     | preprocessing      | mask |     n | core  | radial |")
    print("|----------|--------------------|------|-------|-------|--------|")
    for name, fn, radius in (("raw_robust", raw_robust, 0), ("raw_robust no clip", no_clip, 0),
                             ("residual", residual, 0), ("residual", residual, 7)):
        for mode, (images, labels, groups) in (("paired", paired), ("unpaired", unpaired)):
            result = shortcut_gates(fn(images), labels, groups, n_samples=2000, mask_radius=radius)
            print(f"| {mode:<8} | {name:<18} | {radius:>4} | {result.n_samples:>5} | "
                  f"{result.core_lr_auc:.3f} | {result.radial_lr_auc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
