"""Pure-NumPy lensing physics for the synthetic data: Sérsic light, SIE + shear, Moffat PSF, noise.

Conventions (the same as lenstronomy's, so it can serve as the oracle in tests):
- Angles in arcsec; x along image columns, y along rows; a pixel (row i, col j) of an
  `n`-pixel stamp with centre pixel `c` sits at x = (j - c)·s, y = (i - c)·s.
- Position angles `phi` (radians) are the major axis's angle from +x, counter-clockwise;
  `q` = minor/major axis ratio. lenstronomy's e1, e2 = (1-q)/(1+q)·(cos 2phi, sin 2phi).
- Elliptical radius R = sqrt(q·x'² + y'²/q) (x' along the major axis): the "product
  average" radius, so Sérsic `r_eff` is the circularised half-light radius.
- SIE: κ = θ_E / (2·sqrt(q·x'² + y'²/q)), lenstronomy's SIE/NIE normalisation. θ_E is then the
  circularised Einstein radius (the critical curve of the unsheared SIE encloses area π θ_E²)
  and equals the SIS Einstein radius at q = 1. Kormann et al. (1994) and Keeton's gravlens write
  κ = b / (2·sqrt(q²x'² + y'²)); the two agree with b = θ_E·sqrt(q).
- External shear: ψ = γ1 (x² - y²)/2 + γ2 x y.
- Fluxes in nanomaggies (AB zero point 22.5); images hold flux per pixel.

Why one file of ~500 lines: every profile and the lens equation share the conventions above,
and tests/test_physics.py checks each against lenstronomy in one place; split by profile, the
conventions would have to be restated in each file.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

PIXEL_SCALE = 0.262  # arcsec per pixel, Legacy Surveys
STAMP_SIZE = 64
STAMP_CENTER = 32  # the LRG's pixel (row and column)
ZERO_POINT = 22.5  # AB magnitude of 1 nanomaggy
MOFFAT_BETA = 3.5


# ---------------------------------------------------------------------------
# Photometry


def mag_to_nmgy(mag: np.ndarray | float) -> np.ndarray:
    """AB magnitude -> flux in nanomaggies."""
    return np.power(10.0, (ZERO_POINT - np.asarray(mag, dtype=np.float64)) / 2.5)


# ---------------------------------------------------------------------------
# Sérsic light


def sersic_bn(n: np.ndarray | float) -> np.ndarray:
    """Sérsic b_n by the Ciotti & Bertin (1999) asymptotic series.

    Absolute error 2.5e-4 at n = 0.5, 4e-5 at n = 1, 5e-6 at n = 2 (the 1.9992n - 0.3271
    shortcut that lenstronomy uses is 0.02 off at n = 0.5).
    """
    n = np.asarray(n, dtype=np.float64)
    return (
        2.0 * n
        - 1.0 / 3.0
        + 4.0 / (405.0 * n)
        + 46.0 / (25515.0 * n**2)
        + 131.0 / (1148175.0 * n**3)
        - 2194697.0 / (30690717750.0 * n**4)
    )


def _lgamma(x: np.ndarray) -> np.ndarray:
    # NumPy has no vectorised log-gamma; this runs once per system, not per pixel.
    return np.array([math.lgamma(v) for v in np.ravel(x)], dtype=np.float64).reshape(np.shape(x))


def sersic_amplitude(
    flux: np.ndarray | float,
    r_eff: np.ndarray | float,
    n: np.ndarray | float,
    b_n: np.ndarray | float | None = None,
) -> np.ndarray:
    """Surface brightness at R = r_eff (flux/arcsec²) of a Sérsic profile with total `flux`.

    The elliptical contour R has area π R² whatever q, so the total is that of a round profile:
    F = I_e · 2π n r_eff² e^b b^(-2n) Γ(2n).
    """
    flux, r_eff, n = (np.asarray(v, dtype=np.float64) for v in (flux, r_eff, n))
    b = sersic_bn(n) if b_n is None else np.asarray(b_n, dtype=np.float64)
    log_norm = np.log(2.0 * np.pi * n) + 2.0 * np.log(r_eff) + b - 2.0 * n * np.log(b) + _lgamma(2.0 * n)
    return flux * np.exp(-log_norm)


def sersic_surface_brightness(
    x: np.ndarray,
    y: np.ndarray,
    *,
    amp: np.ndarray | float,
    r_eff: np.ndarray | float,
    n: np.ndarray | float,
    q: np.ndarray | float,
    phi: np.ndarray | float,
    x0: np.ndarray | float = 0.0,
    y0: np.ndarray | float = 0.0,
    b_n: np.ndarray | float | None = None,
) -> np.ndarray:
    """Elliptical Sérsic surface brightness I_e·exp(-b_n((R/r_eff)^(1/n) - 1)); arguments broadcast.

    Computes in the dtype of `x` (float32 is ~3x faster and accurate to ~1e-6 here).
    """
    dtype = np.result_type(x, y)
    b = sersic_bn(n) if b_n is None else np.asarray(b_n, dtype=np.float64)
    # Per-system constants, computed small in float64 then cast, so float32 stays float32.
    c = lambda v: np.asarray(v, dtype=np.float64).astype(dtype)  # noqa: E731
    u, v = sersic_frame(x, y, r_eff=r_eff, q=q, phi=phi, x0=x0, y0=y0)
    r2 = u * u
    r2 += v * v
    # (R/r_eff)^(1/n) through one log and one exp; the floor keeps log(0) finite at the centre.
    np.maximum(r2, 1e-30, out=r2)
    np.log(r2, out=r2)
    r2 *= c(0.5 / np.asarray(n, dtype=np.float64))
    np.exp(r2, out=r2)
    r2 *= c(-b)
    np.exp(r2, out=r2)
    r2 *= c(np.asarray(amp, dtype=np.float64) * np.exp(b))
    return r2


# ---------------------------------------------------------------------------
# Lens: singular isothermal ellipsoid + external shear


def _arctan(z: np.ndarray) -> np.ndarray:
    """arctan to ~3e-7 absolute in float32, ~3x faster than np.arctan (which has no SIMD path)."""
    # Two half-angle steps, atan z = 4 atan w with |w| < tan(pi/8), then the Taylor series to w^17.
    w = z.copy()
    t = np.empty_like(w)
    for _ in range(2):
        np.multiply(w, w, out=t)
        t += 1.0
        np.sqrt(t, out=t)
        t += 1.0
        w /= t
    w2 = np.multiply(w, w, out=t)
    acc = np.full_like(w, 1.0 / 17.0)
    for k in range(7, -1, -1):
        acc *= w2
        acc += (-1.0) ** k / (2 * k + 1)
    acc *= w
    acc *= 4.0
    return acc


def _arctanh(u: np.ndarray) -> np.ndarray:
    """arctanh via one log (np.arctanh has no SIMD path and costs ~8x more); |u| < 1."""
    out = 1.0 + u
    out /= 1.0 - u
    np.log(out, out=out)
    out *= 0.5
    return out


def sie_deflection(
    x: np.ndarray,
    y: np.ndarray,
    *,
    theta_e: np.ndarray | float,
    q: np.ndarray | float,
    phi: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Deflection (α_x, α_y) of an SIE centred at the origin, closed form (Kormann et al. 1994).

    Normalisation as lenstronomy's SIE (see the module docstring). In the lens frame, with
    b = θ_E√q, e = √(1-q²), ψ = √(q²x'² + y'²): α'_x = (b/e)·atan(e x'/ψ), α'_y = (b/e)·atanh(e y'/ψ).
    Computes in the dtype of `x`.
    """
    dtype = np.result_type(x, y)
    c = lambda v: np.asarray(v, dtype=np.float64).astype(dtype)  # noqa: E731
    # q = 1 is the SIS limit of the same formula; capping q keeps e > 0 (error ~1e-6 relative).
    q64 = np.minimum(np.asarray(q, dtype=np.float64), 1.0 - 1e-6)
    e64 = np.sqrt(1.0 - q64 * q64)
    e, q, scale = c(e64), c(q64), c(np.asarray(theta_e, dtype=np.float64) * np.sqrt(q64) / e64)
    cos, sin = c(np.cos(phi)), c(np.sin(phi))
    xp = cos * x + sin * y
    yp = cos * y - sin * x
    qx = q * xp
    psi = qx * qx
    psi += yp * yp
    np.sqrt(psi, out=psi)
    # At the singular centre the deflection direction is undefined; the floor picks 0 there.
    np.maximum(psi, 1e-12, out=psi)
    psi /= e  # now ψ/e
    xp /= psi
    yp /= psi
    ax_p = _arctan(xp)
    ax_p *= scale
    ay_p = _arctanh(yp)
    ay_p *= scale
    return cos * ax_p - sin * ay_p, sin * ax_p + cos * ay_p


def shear_deflection(
    x: np.ndarray, y: np.ndarray, *, gamma1: np.ndarray | float, gamma2: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Deflection of an external shear ψ = γ1(x² - y²)/2 + γ2·x·y about the origin."""
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


def sie_convergence(
    x: np.ndarray, y: np.ndarray, *, theta_e: np.ndarray | float, q: np.ndarray | float, phi: np.ndarray | float
) -> np.ndarray:
    """SIE convergence κ = θ_E / (2·sqrt(q x'² + y'²/q))."""
    cos, sin = np.cos(phi), np.sin(phi)
    xp = cos * x + sin * y
    yp = cos * y - sin * x
    return theta_e / (2.0 * np.sqrt(q * xp * xp + yp * yp / q))


def ray_shoot(
    x: np.ndarray,
    y: np.ndarray,
    *,
    theta_e: np.ndarray | float,
    q: np.ndarray | float,
    phi: np.ndarray | float,
    gamma1: np.ndarray | float,
    gamma2: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Lens equation β = θ - α(θ) for SIE + external shear, both centred on the origin."""
    dtype = np.result_type(x, y)
    g1 = np.asarray(gamma1, dtype=np.float64).astype(dtype)
    g2 = np.asarray(gamma2, dtype=np.float64).astype(dtype)
    ax, ay = sie_deflection(x, y, theta_e=theta_e, q=q, phi=phi)
    # β = (1 - Γ)θ - α_SIE with the shear matrix Γ = [[γ1, γ2], [γ2, -γ1]].
    bx = (1.0 - g1) * x - g2 * y
    bx -= ax
    by = (1.0 + g1) * y - g2 * x
    by -= ay
    return bx, by


# ---------------------------------------------------------------------------
# Pixel integration (batched, adaptive supersampling)

# f(x, y, idx) -> surface brightness at points (x, y) for systems idx; shapes broadcast.
SurfaceBrightness = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# g(x, y, idx) -> source-plane positions of image-plane points for systems idx.
LensMapping = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# h(x, y, idx) -> source-plane positions in the light profile's own frame, where its elliptical
# radius in units of r_eff is sqrt(u² + v²) (a linear map, so boxes map to boxes' bounds).
Frame = LensMapping


def sersic_frame(
    x: np.ndarray,
    y: np.ndarray,
    *,
    r_eff: np.ndarray | float,
    q: np.ndarray | float,
    phi: np.ndarray | float,
    x0: np.ndarray | float = 0.0,
    y0: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) with u² + v² = (q x'² + y'²/q) / r_eff²: the Sérsic's radius in units of r_eff."""
    dtype = np.result_type(x, y)
    c = lambda v: np.asarray(v, dtype=np.float64).astype(dtype)  # noqa: E731
    cos, sin, sq = c(np.cos(phi)), c(np.sin(phi)), c(np.sqrt(q))
    inv_r = c(1.0 / np.asarray(r_eff, dtype=np.float64))
    dx = x - c(x0)
    dy = y - c(y0)
    return (cos * dx + sin * dy) * (sq * inv_r), (cos * dy - sin * dx) * (inv_r / sq)


def integrate_pixels(
    sb: SurfaceBrightness,
    mapping: LensMapping,
    n_systems: int,
    *,
    frame: Frame,
    levels: Sequence[tuple[float, int]],
    always_active: np.ndarray | None = None,
    n_pix: int = STAMP_SIZE,
    center: int = STAMP_CENTER,
    scale: float = PIXEL_SCALE,
    dtype: type = np.float32,
    chunk_points: int = 1 << 16,
) -> np.ndarray:
    """Flux per pixel (N, n_pix, n_pix), float64, of surface brightness `sb` seen through `mapping`.

    Why adaptive: a compact source covers a few hundred of 4096 pixels, and supersampling every
    pixel would cost ~25x. Every pixel gets the mean of its 4 corners (which neighbours share).
    Then, for each level (radius, s) in order, a pixel whose corners, mapped to the source plane
    and into the profile's `frame`, span a box that comes within `radius` (in units of r_eff) of
    the profile's centre is redone as the mean over s² sub-pixels; later levels (smaller radius,
    larger s) refine the cusp. `always_active` pixels (e.g. the lens centre, where the mapping
    folds) join the first level. Work runs in chunks of ~`chunk_points` points so the
    temporaries stay in cache.
    """
    edges = ((np.arange(n_pix + 1) - center - 0.5) * scale).astype(dtype)
    cy, cx = (g.ravel()[None, :] for g in np.meshgrid(edges, edges, indexing="ij"))
    image = np.empty((n_systems, n_pix, n_pix), dtype=np.float64)
    # Squared distance from the profile's centre to each pixel's bounding box in its frame.
    gap2 = np.zeros((n_systems, n_pix, n_pix), dtype=np.float32)

    per_chunk = max(1, chunk_points // cx.size)
    for start in range(0, n_systems, per_chunk):
        k = np.arange(start, min(start + per_chunk, n_systems))[:, None]
        bx, by = mapping(cx, cy, k)
        csb = sb(bx, by, k).reshape(-1, n_pix + 1, n_pix + 1)
        image[k[:, 0]] = 0.25 * (csb[:, :-1, :-1] + csb[:, 1:, :-1] + csb[:, :-1, 1:] + csb[:, 1:, 1:])
        for b in frame(bx, by, k):
            b = b.reshape(-1, n_pix + 1, n_pix + 1)
            four = (b[:, :-1, :-1], b[:, 1:, :-1], b[:, :-1, 1:], b[:, 1:, 1:])
            lo = np.minimum(np.minimum(four[0], four[1]), np.minimum(four[2], four[3]))
            hi = np.maximum(np.maximum(four[0], four[1]), np.maximum(four[2], four[3]))
            gap2[k[:, 0]] += np.square(np.maximum(np.maximum(lo, -hi), 0.0))

    for level, (radius, supersample) in enumerate(levels):
        active = gap2 < radius * radius
        if level == 0 and always_active is not None:
            active |= always_active[None, :, :]
        _supersample(image, active, sb, mapping, supersample, center, scale, dtype, chunk_points)
    image *= scale * scale
    return image


def _supersample(
    image: np.ndarray,
    active: np.ndarray,
    sb: SurfaceBrightness,
    mapping: LensMapping,
    supersample: int,
    center: int,
    scale: float,
    dtype: type,
    chunk_points: int,
) -> None:
    """Replace the `active` pixels of `image` (in place) by the mean over supersample² sub-pixels."""
    sys_i, row, col = np.nonzero(active)
    if not sys_i.size:
        return
    sub = ((np.arange(supersample) + 0.5) / supersample - 0.5) * scale
    sub_y, sub_x = (g.ravel().astype(dtype)[None, :] for g in np.meshgrid(sub, sub, indexing="ij"))
    px = ((col - center) * scale).astype(dtype)[:, None]
    py = ((row - center) * scale).astype(dtype)[:, None]
    per_chunk = max(1, chunk_points // sub_x.size)
    for start in range(0, sys_i.size, per_chunk):
        sl = slice(start, start + per_chunk)
        k = sys_i[sl, None]
        fx, fy = mapping(px[sl] + sub_x, py[sl] + sub_y, k)
        image[sys_i[sl], row[sl], col[sl]] = sb(fx, fy, k).mean(axis=1, dtype=np.float64)


def _column(v: np.ndarray | float, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).astype(np.float32)[:, None]


def render_lensed_sersic(
    *,
    theta_e: np.ndarray,
    lens_q: np.ndarray,
    lens_phi: np.ndarray,
    gamma1: np.ndarray,
    gamma2: np.ndarray,
    src_x: np.ndarray,
    src_y: np.ndarray,
    src_r_eff: np.ndarray,
    src_n: np.ndarray,
    src_q: np.ndarray,
    src_phi: np.ndarray,
    levels: Sequence[tuple[float, int]],
    b_n: np.ndarray | None = None,
) -> np.ndarray:
    """Lensed Sérsic sources before the PSF (N, 64, 64): flux per pixel for unit unlensed flux.

    Arguments are (N,) arrays (or scalars); SIE + shear centred on the stamp's centre pixel.
    The image sums to the magnification (less light that falls off the stamp).
    """
    n = int(np.broadcast(theta_e, src_x, src_r_eff).size)
    b = sersic_bn(src_n) if b_n is None else b_n
    amp = _column(sersic_amplitude(1.0, np.broadcast_to(src_r_eff, (n,)), np.broadcast_to(src_n, (n,)), b_n=b), n)
    bn, re, sn, sq, sphi, sx, sy = (_column(v, n) for v in (b, src_r_eff, src_n, src_q, src_phi, src_x, src_y))
    te, lq, lphi, g1, g2 = (_column(v, n) for v in (theta_e, lens_q, lens_phi, gamma1, gamma2))

    def sb(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> np.ndarray:
        k = k[:, 0]
        return sersic_surface_brightness(
            x, y, amp=amp[k], r_eff=re[k], n=sn[k], q=sq[k], phi=sphi[k], x0=sx[k], y0=sy[k], b_n=bn[k]
        )

    def mapping(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = k[:, 0]
        return ray_shoot(x, y, theta_e=te[k], q=lq[k], phi=lphi[k], gamma1=g1[k], gamma2=g2[k])

    def frame(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = k[:, 0]
        return sersic_frame(x, y, r_eff=re[k], q=sq[k], phi=sphi[k], x0=sx[k], y0=sy[k])

    # The lens centre's pixels: the mapping folds there and a counter-image's core can sit there.
    centre = np.zeros((STAMP_SIZE, STAMP_SIZE), dtype=bool)
    centre[STAMP_CENTER - 1 : STAMP_CENTER + 2, STAMP_CENTER - 1 : STAMP_CENTER + 2] = True
    return integrate_pixels(sb, mapping, n, frame=frame, levels=levels, always_active=centre)


def render_sersic(
    *,
    r_eff: np.ndarray,
    n: np.ndarray,
    q: np.ndarray,
    phi: np.ndarray,
    levels: Sequence[tuple[float, int]],
    b_n: np.ndarray | None = None,
) -> np.ndarray:
    """Unlensed Sérsic profiles centred on the stamp's centre pixel (N, 64, 64), unit total flux."""
    count = int(np.broadcast(r_eff, n).size)
    b = sersic_bn(n) if b_n is None else b_n
    amp = _column(sersic_amplitude(1.0, np.broadcast_to(r_eff, (count,)), np.broadcast_to(n, (count,)), b_n=b), count)
    bn, re, sn, sq, sphi = (_column(v, count) for v in (b, r_eff, n, q, phi))

    def sb(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> np.ndarray:
        k = k[:, 0]
        return sersic_surface_brightness(x, y, amp=amp[k], r_eff=re[k], n=sn[k], q=sq[k], phi=sphi[k], b_n=bn[k])

    def frame(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = k[:, 0]
        return sersic_frame(x, y, r_eff=re[k], q=sq[k], phi=sphi[k])

    return integrate_pixels(sb, lambda x, y, k: (x, y), count, frame=frame, levels=levels)


# ---------------------------------------------------------------------------
# PSF and noise


def moffat_alpha(fwhm: np.ndarray | float, beta: float = MOFFAT_BETA) -> np.ndarray:
    """Moffat core width α from the FWHM: FWHM = 2α·sqrt(2^(1/β) - 1)."""
    return np.asarray(fwhm, dtype=np.float64) / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_kernel(
    fwhm: np.ndarray | float,
    *,
    n_pix: int = STAMP_SIZE,
    center: int = STAMP_CENTER,
    scale: float = PIXEL_SCALE,
    beta: float = MOFFAT_BETA,
    oversample: int = 5,
    core: int = 8,
) -> np.ndarray:
    """Pixel-integrated Moffat PSFs (..., n_pix, n_pix), peak at (center, center), each summing to 1.

    Pixels within `core` of the peak are integrated on an oversample² grid; beyond, the profile
    is smooth on the pixel scale (FWHM >= 3 px here) and its pixel-centre value is used.
    """
    fwhm = np.asarray(fwhm, dtype=np.float64)
    inv_a2 = (1.0 / np.square(moffat_alpha(fwhm, beta))).astype(np.float32).reshape(fwhm.shape + (1, 1))

    def profile(r2: np.ndarray) -> np.ndarray:
        # (1 + r²/α²)^-β as exp(-β log(...)) in float32: ~10x faster than float64 np.power.
        out = r2.astype(np.float32) * inv_a2
        out += 1.0
        np.log(out, out=out)
        out *= -beta
        return np.exp(out, out=out)

    pix = (np.arange(n_pix) - center) * scale
    yy, xx = np.meshgrid(pix, pix, indexing="ij")
    prof = profile(xx * xx + yy * yy).astype(np.float64)
    lo, hi = max(center - core, 0), min(center + core + 1, n_pix)
    sub = ((np.arange((hi - lo) * oversample) + 0.5) / oversample - 0.5 + lo - center) * scale
    sy, sx = np.meshgrid(sub, sub, indexing="ij")
    fine = profile(sx * sx + sy * sy)
    fine = fine.reshape(fwhm.shape + (hi - lo, oversample, hi - lo, oversample)).mean(axis=(-3, -1), dtype=np.float64)
    prof[..., lo:hi, lo:hi] = fine
    return prof / prof.sum(axis=(-2, -1), keepdims=True)


def n_eff(kernel: np.ndarray) -> np.ndarray:
    """Effective number of pixels of a normalised PSF, 1/Σk² (noise-equivalent area in pixels)."""
    return 1.0 / np.sum(np.square(kernel, dtype=np.float64), axis=(-2, -1))


def sky_sigma_from_depth(depth_mag: np.ndarray | float, kernel: np.ndarray) -> np.ndarray:
    """Per-pixel sky noise (nanomaggies) for a 5σ point-source depth: 5σ√N_eff = 10^((22.5-m5)/2.5)."""
    return mag_to_nmgy(depth_mag) / (5.0 * np.sqrt(n_eff(kernel)))


def counts_per_nmgy(sky_sigma: np.ndarray | float, sky_mag_arcsec2: np.ndarray | float, scale: float = PIXEL_SCALE) -> np.ndarray:
    """Effective gain (photo-electrons per nanomaggy) of a sky-limited coadd.

    If the sky of surface brightness `sky_mag_arcsec2` is what sets σ_sky, its per-pixel level s
    (nmgy) has Poisson variance s/g = σ_sky², so g = s/σ_sky²; a source of f nmgy then has
    Poisson variance f/g.
    """
    sky_level = mag_to_nmgy(sky_mag_arcsec2) * scale * scale
    return sky_level / np.square(np.asarray(sky_sigma, dtype=np.float64))


def kernel_fft(kernel: np.ndarray, pad_to: int | None = None) -> np.ndarray:
    """rfft2 of centred kernels (..., n, n), shifted so the peak sits at the origin, for fft_convolve."""
    n = kernel.shape[-1]
    size = pad_to or n
    centred = np.zeros(kernel.shape[:-2] + (size, size), dtype=np.float64)
    centred[..., :n, :n] = kernel
    # Roll the kernel's peak (pixel n//2) to index 0: a circular convolution then does not shift.
    centred = np.roll(centred, (-(n // 2), -(n // 2)), axis=(-2, -1))
    return np.fft.rfft2(centred)


def fft_convolve(images: np.ndarray, k_fft: np.ndarray, pad_to: int | None = None) -> np.ndarray:
    """Convolve images (..., n, n) with kernels given by kernel_fft (same padding); shapes broadcast.

    With `pad_to` = None the convolution is circular: fine for arcs, whose PSF-spread light is
    ~1e-5 of the peak 30 pixels away. For light that fills the stamp, like an LRG's, pad to
    n + n//2 (the kernel's reach) or more: the result is then the linear ("same") convolution.
    """
    n = images.shape[-1]
    size = pad_to or n
    out = np.fft.irfft2(np.fft.rfft2(images, s=(size, size)) * k_fft, s=(size, size))
    return out[..., :n, :n]
