"""The synthetic data's physics: closed forms against first principles and against lenstronomy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.synthetic import physics as P
from engine.synthetic.render import ARC_LEVELS  # the sampling the dataset uses

S = P.PIXEL_SCALE


def _random_lens(rng: np.random.Generator) -> dict[str, float]:
    return dict(
        theta_e=rng.uniform(0.5, 3.0),
        q=rng.uniform(0.5, 1.0),
        phi=rng.uniform(0, np.pi),
        gamma1=rng.normal(0, 0.05),
        gamma2=rng.normal(0, 0.05),
    )


# ---------------------------------------------------------------------------
# Sérsic


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 4.0])
def test_sersic_bn_puts_half_the_light_inside_r_eff(n: float) -> None:
    # Integrate a round profile numerically: the flux inside r_eff must be half the total.
    r = np.concatenate([[0.0], np.geomspace(1e-8, 400.0, 400_001)])
    profile = np.exp(-P.sersic_bn(n) * (r ** (1.0 / n) - 1.0))
    ring = 2 * np.pi * r * profile
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (ring[1:] + ring[:-1]) * np.diff(r))])
    assert np.interp(1.0, r, cum) / cum[-1] == pytest.approx(0.5, abs=2e-4)
    # ... and the analytic total used by sersic_amplitude matches the integral.
    assert 1.0 / P.sersic_amplitude(1.0, 1.0, n) == pytest.approx(cum[-1], rel=2e-4)


def test_sersic_bn_matches_exact_values() -> None:
    # n = 0.5 is a Gaussian, exp(-b (R/Re)²), so b = ln 2 exactly; the series is 2.5e-4 high
    # there (0.04%), the 1.9992n - 0.3271 shortcut 3% low.
    assert P.sersic_bn(0.5) == pytest.approx(math.log(2), abs=3e-4)
    assert P.sersic_bn(1.0) == pytest.approx(1.67835, abs=1e-4)
    assert P.sersic_bn(4.0) == pytest.approx(7.66925, abs=1e-4)


def test_rendered_sersic_has_unit_flux_and_sits_on_the_centre_pixel() -> None:
    # Compact enough that the light beyond the stamp is < 1e-4 of the total.
    img = P.render_sersic(r_eff=np.array([0.6, 0.5]), n=np.array([1.0, 2.0]), q=0.7, phi=0.4, levels=((3, 4), (0.3, 12), (0.06, 36)))
    assert img.shape == (2, 64, 64)
    assert img.sum(axis=(1, 2)) == pytest.approx([1.0, 1.0], abs=1e-3)
    for im in img:
        assert np.unravel_index(im.argmax(), im.shape) == (32, 32)


# ---------------------------------------------------------------------------
# SIE + shear


def test_sie_divergence_is_twice_the_convergence_and_curl_is_zero() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-4, 4, (2, 2000))
    x, y = x[np.hypot(x, y) > 0.05], y[np.hypot(x, y) > 0.05]
    h = 1e-6
    for _ in range(5):
        lens = dict(theta_e=rng.uniform(0.5, 3), q=rng.uniform(0.3, 1), phi=rng.uniform(0, np.pi))
        axp, ayp = P.sie_deflection(x + h, y, **lens)
        axm, aym = P.sie_deflection(x - h, y, **lens)
        bxp, byp = P.sie_deflection(x, y + h, **lens)
        bxm, bym = P.sie_deflection(x, y - h, **lens)
        div = (axp - axm + byp - bym) / (2 * h)
        curl = (ayp - aym - (bxp - bxm)) / (2 * h)
        np.testing.assert_allclose(div, 2 * P.sie_convergence(x, y, **lens), rtol=1e-5)
        np.testing.assert_allclose(curl, 0.0, atol=1e-5 * np.abs(div).max())


def test_sie_tends_to_the_sis_and_float32_matches_float64() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-4, 4, (2, 1000))
    ax, ay = P.sie_deflection(x, y, theta_e=1.7, q=1.0, phi=0.3)
    r = np.hypot(x, y)
    np.testing.assert_allclose(ax, 1.7 * x / r, atol=1e-5)
    np.testing.assert_allclose(ay, 1.7 * y / r, atol=1e-5)
    lens = dict(theta_e=2.0, q=0.55, phi=1.1)
    a64 = P.sie_deflection(x, y, **lens)
    a32 = P.sie_deflection(x.astype(np.float32), y.astype(np.float32), **lens)
    assert a32[0].dtype == np.float32
    np.testing.assert_allclose(a32[0], a64[0], atol=2e-5)
    np.testing.assert_allclose(a32[1], a64[1], atol=2e-5)


def test_shear_deflection_is_the_gradient_of_its_potential() -> None:
    x, y = np.meshgrid(np.linspace(-3, 3, 7), np.linspace(-3, 3, 7))
    g1, g2, h = 0.04, -0.03, 1e-6
    psi = lambda x, y: g1 * (x * x - y * y) / 2 + g2 * x * y  # noqa: E731
    ax, ay = P.shear_deflection(x, y, gamma1=g1, gamma2=g2)
    np.testing.assert_allclose(ax, (psi(x + h, y) - psi(x - h, y)) / (2 * h), atol=1e-8)
    np.testing.assert_allclose(ay, (psi(x, y + h) - psi(x, y - h)) / (2 * h), atol=1e-8)


def test_adaptive_pixel_integration_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 4
    args = dict(
        theta_e=rng.uniform(0.5, 3, n),
        lens_q=rng.uniform(0.5, 1, n),
        lens_phi=rng.uniform(0, np.pi, n),
        gamma1=rng.normal(0, 0.05, n),
        gamma2=rng.normal(0, 0.05, n),
        src_x=rng.uniform(-0.3, 0.3, n),
        src_y=rng.uniform(-0.3, 0.3, n),
        src_r_eff=rng.uniform(0.15, 0.5, n),
        src_n=rng.uniform(0.5, 2, n),
        src_q=rng.uniform(0.3, 1, n),
        src_phi=rng.uniform(0, np.pi, n),
    )
    fast = P.render_lensed_sersic(levels=ARC_LEVELS, **args)
    slow = P.render_lensed_sersic(levels=((1e3, 10), (1.0, 30)), **args)
    k = P.kernel_fft(P.moffat_kernel(0.8))
    fast_c, slow_c = P.fft_convolve(fast, k), P.fft_convolve(slow, k)
    peak = slow_c.max(axis=(1, 2), keepdims=True)
    assert np.abs(fast_c - slow_c).max(axis=(1, 2)).max() / peak.min() < 0.01
    np.testing.assert_allclose(fast.sum(axis=(1, 2)), slow.sum(axis=(1, 2)), rtol=0.01)
    assert (slow.sum(axis=(1, 2)) > 1.5).all()  # lensed sources are magnified


# ---------------------------------------------------------------------------
# PSF, noise, convolution


def test_moffat_kernel_is_normalised_centred_and_has_the_asked_fwhm() -> None:
    k = P.moffat_kernel(np.array([0.9, 1.3, 1.6]))
    assert k.shape == (3, 64, 64)
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0)
    assert all(np.unravel_index(kk.argmax(), kk.shape) == (32, 32) for kk in k)
    inner = k[:, 1:, 1:]  # centred at (31, 31): symmetric under flips
    np.testing.assert_allclose(inner, inner[:, ::-1, ::-1], rtol=1e-12)
    np.testing.assert_allclose(inner, inner.transpose(0, 2, 1), rtol=1e-12)
    fwhm = 1.3
    a = P.moffat_alpha(fwhm)
    assert (1 + (fwhm / 2 / a) ** 2) ** -P.MOFFAT_BETA == pytest.approx(0.5)
    assert P.n_eff(k)[0] < P.n_eff(k)[1] < P.n_eff(k)[2]


def test_depth_sets_a_five_sigma_point_source() -> None:
    # A point source at the 5σ depth, measured with the optimal PSF-weighted filter, has S/N = 5.
    k = P.moffat_kernel(1.2)
    m5 = 23.8
    sigma = P.sky_sigma_from_depth(m5, k)
    flux = P.mag_to_nmgy(m5)
    snr = flux * np.sqrt(np.sum(k**2)) / sigma
    assert snr == pytest.approx(5.0)
    assert 0.004 < sigma < 0.02  # DECaLS-like r-band coadd noise, nanomaggies per pixel
    gain = P.counts_per_nmgy(sigma, 20.9)
    sky = P.mag_to_nmgy(20.9) * S * S
    assert sky / gain == pytest.approx(sigma**2)


def test_padded_fft_convolution_is_the_linear_convolution() -> None:
    rng = np.random.default_rng(4)
    n = 16
    img = rng.random((n, n))
    ker = rng.random((n, n))
    ker /= ker.sum()
    got = P.fft_convolve(img, P.kernel_fft(ker, pad_to=n + n // 2), pad_to=n + n // 2)
    want = np.zeros((n, n))
    for dy in range(-n // 2, n // 2):
        for dx in range(-n // 2, n // 2):
            shifted = np.zeros((n, n))
            src = img[max(0, -dy) : n - max(0, dy), max(0, -dx) : n - max(0, dx)]
            shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
            want += ker[dy + n // 2, dx + n // 2] * shifted
    np.testing.assert_allclose(got, want, atol=1e-12)
    delta = np.zeros((n, n))
    delta[n // 2, n // 2] = 1.0
    np.testing.assert_allclose(P.fft_convolve(img, P.kernel_fft(delta)), img, atol=1e-12)


# ---------------------------------------------------------------------------
# lenstronomy as the oracle


def test_deflection_matches_lenstronomy() -> None:
    pytest.importorskip("lenstronomy")
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.Util import param_util

    rng = np.random.default_rng(5)
    x, y = rng.uniform(-5, 5, (2, 500))
    model = LensModel(["SIE", "SHEAR"])
    for _ in range(10):
        lens = _random_lens(rng)
        e1, e2 = param_util.phi_q2_ellipticity(lens["phi"], lens["q"])
        kwargs = [
            dict(theta_E=lens["theta_e"], e1=e1, e2=e2, center_x=0.0, center_y=0.0),
            dict(gamma1=lens["gamma1"], gamma2=lens["gamma2"], ra_0=0.0, dec_0=0.0),
        ]
        want = model.ray_shooting(x, y, kwargs)
        got = P.ray_shoot(x, y, **lens)
        np.testing.assert_allclose(got[0], want[0], atol=1e-7)
        np.testing.assert_allclose(got[1], want[1], atol=1e-7)


def _lenstronomy_image(lens: dict, src: dict, kernel: np.ndarray, supersampling: int) -> np.ndarray:
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import param_util

    # Pixel (row i, col j) at x = (j - 32)·s, y = (i - 32)·s: the stamp's convention.
    data = ImageData(
        image_data=np.zeros((64, 64)),
        ra_at_xy_0=-32 * S,
        dec_at_xy_0=-32 * S,
        transform_pix2angle=np.array([[S, 0.0], [0.0, S]]),
    )
    # lenstronomy wants an odd kernel: our 64-px kernel less its first row and column.
    psf = PSF(psf_type="PIXEL", kernel_point_source=kernel[1:, 1:] / kernel[1:, 1:].sum())
    model = ImageModel(
        data,
        psf,
        lens_model_class=LensModel(["SIE", "SHEAR"]),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": supersampling, "supersampling_convolution": False},
    )
    e1, e2 = param_util.phi_q2_ellipticity(lens["phi"], lens["q"])
    se1, se2 = param_util.phi_q2_ellipticity(src["phi"], src["q"])
    bn = 1.9992 * src["n"] - 0.3271  # lenstronomy's b_n
    kwargs_lens = [
        dict(theta_E=lens["theta_e"], e1=e1, e2=e2, center_x=0.0, center_y=0.0),
        dict(gamma1=lens["gamma1"], gamma2=lens["gamma2"], ra_0=0.0, dec_0=0.0),
    ]
    kwargs_source = [
        dict(
            amp=float(P.sersic_amplitude(src["flux"], src["r_eff"], src["n"], b_n=bn)),
            R_sersic=src["r_eff"],
            n_sersic=src["n"],
            e1=se1,
            e2=se2,
            center_x=src["x"],
            center_y=src["y"],
        )
    ]
    # ImageModel.image returns flux per pixel already: no pixel-area factor.
    return model.image(kwargs_lens=kwargs_lens, kwargs_source=kwargs_source)


# lenstronomy's own FFT calls trip NumPy 2's deprecation of rfftn(s=..., axes=None).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_lensed_convolved_source_matches_lenstronomy() -> None:
    pytest.importorskip("lenstronomy")
    rng = np.random.default_rng(6)
    worst_pix, worst_flux = 0.0, 0.0
    for _ in range(4):
        lens = _random_lens(rng)
        beta = lens["theta_e"] * math.sqrt(rng.uniform(0.01, 0.16))
        ang = rng.uniform(0, 2 * np.pi)
        src = dict(
            x=beta * math.cos(ang),
            y=beta * math.sin(ang),
            r_eff=rng.uniform(0.15, 0.5),
            n=rng.uniform(0.5, 2.0),
            q=rng.uniform(0.3, 1.0),
            phi=rng.uniform(0, np.pi),
            flux=rng.uniform(0.5, 5.0),
        )
        kernel = P.moffat_kernel(rng.uniform(0.85, 1.6))
        want = _lenstronomy_image(lens, src, kernel, supersampling=12)
        unit = P.render_lensed_sersic(
            theta_e=lens["theta_e"],
            lens_q=lens["q"],
            lens_phi=lens["phi"],
            gamma1=lens["gamma1"],
            gamma2=lens["gamma2"],
            src_x=src["x"],
            src_y=src["y"],
            src_r_eff=src["r_eff"],
            src_n=src["n"],
            src_q=src["q"],
            src_phi=src["phi"],
            levels=ARC_LEVELS,
            b_n=np.array([1.9992 * src["n"] - 0.3271]),
        )
        got = src["flux"] * P.fft_convolve(unit, P.kernel_fft(kernel))[0]
        worst_flux = max(worst_flux, abs(got.sum() / want.sum() - 1))
        worst_pix = max(worst_pix, np.abs(got - want).max() / want.max())
    assert worst_flux < 0.01, f"total flux differs from lenstronomy's by {worst_flux:.2%}"
    assert worst_pix < 0.02, f"a pixel differs from lenstronomy's by {worst_pix:.2%} of the peak"


# lenstronomy's own FFT calls trip NumPy 2's deprecation of rfftn(s=..., axes=None).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_host_lrg_matches_lenstronomy() -> None:
    # The host's n≈4 cusp sets how many core pixels reach the preprocessing clip, and with it
    # what the raw core gate can see; so its central pixels are checked, not only its flux.
    pytest.importorskip("lenstronomy")
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import param_util

    from engine.synthetic.render import LRG_FFT_SIZE, LRG_LEVELS

    data = ImageData(
        image_data=np.zeros((64, 64)),
        ra_at_xy_0=-32 * S,
        dec_at_xy_0=-32 * S,
        transform_pix2angle=np.array([[S, 0.0], [0.0, S]]),
    )
    light = LightModel(["SERSIC_ELLIPSE"])
    rng = np.random.default_rng(8)
    for _ in range(3):
        r_eff, n, q, phi = rng.uniform(0.5, 1.5), rng.uniform(3.5, 4.5), rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
        kernel = P.moffat_kernel(rng.uniform(0.9, 1.6))
        bn = 1.9992 * n - 0.3271  # lenstronomy's b_n
        unit = P.render_sersic(r_eff=np.array([r_eff]), n=np.array([n]), q=np.array([q]), phi=np.array([phi]),
                               levels=LRG_LEVELS, b_n=np.array([bn]))
        got = P.fft_convolve(unit, P.kernel_fft(kernel, pad_to=LRG_FFT_SIZE), pad_to=LRG_FFT_SIZE)[0]
        e1, e2 = param_util.phi_q2_ellipticity(phi, q)
        profile = dict(R_sersic=r_eff, n_sersic=n, e1=e1, e2=e2, center_x=0.0, center_y=0.0)
        amp = 1.0 / light.total_flux([dict(amp=1.0, **profile)])[0]
        # An even supersampling: an odd one puts a sub-pixel on the cusp and overweights it.
        model = ImageModel(
            data,
            PSF(psf_type="PIXEL", kernel_point_source=kernel[1:, 1:] / kernel[1:, 1:].sum()),
            lens_light_model_class=light,
            kwargs_numerics={"supersampling_factor": 16, "supersampling_convolution": False},
        )
        want = model.image(kwargs_lens_light=[dict(amp=amp, **profile)])
        assert got.sum() == pytest.approx(want.sum(), rel=5e-3)
        assert np.abs(got - want).max() < 5e-3 * want.max()
