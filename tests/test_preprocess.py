"""Preprocessing agrees with a per-image reading of SCIENCE.md, and does what each step is for."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import preprocess, shards
from engine.data.preprocess import radial_profile, radius_map, raw_robust, residual
from origin_fixture import origin_data


def _reference_raw_robust(img: np.ndarray) -> np.ndarray:
    """One image, one band at a time, straight from the text: annulus 20 ≤ r < 32, whatever the size."""
    size = img.shape[-1]
    r = radius_map(size)
    annulus = (r >= 20) & (r < 32)
    out = np.empty_like(img, dtype=np.float64)
    for b in range(img.shape[0]):
        ring = img[b][annulus].astype(np.float64)
        med = np.median(ring)
        mad = np.median(np.abs(ring - med))
        out[b] = (img[b] - med) / (mad + 1e-8)
    return out


def _reference_profile(img: np.ndarray, n_rings: int) -> np.ndarray:
    ring = np.floor(radius_map(img.shape[-1]))
    return np.array([[np.median(img[b][ring == k]) for k in range(n_rings)] for b in range(img.shape[0])])


def _reference_residual(img: np.ndarray) -> np.ndarray:
    x = _reference_raw_robust(img)
    n_rings = 32
    profile = _reference_profile(x, n_rings)
    ring = np.minimum(np.floor(radius_map(img.shape[-1])).astype(int), n_rings - 1)
    return np.clip(x - profile[:, ring], -50, 50)


@pytest.fixture
def batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:63, 0:63]
    galaxy = np.exp(-0.5 * ((yy - 31) ** 2 + (xx - 31) ** 2) / 3.0 ** 2)
    scale = rng.uniform(0.5, 3.0, (5, 3, 1, 1))
    return (scale * galaxy + rng.normal(0, 0.02, (5, 3, 63, 63)) + rng.normal(0, 0.1, (5, 3, 1, 1))).astype(np.float32)


def test_raw_robust_matches_the_per_image_definition(batch):
    out = raw_robust(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    for i in range(len(batch)):
        np.testing.assert_allclose(out[i], np.clip(_reference_raw_robust(batch[i]), -50, 50), rtol=1e-4, atol=1e-3)


def test_raw_robust_centres_and_scales_the_outer_annulus(batch):
    out = raw_robust(batch)
    r = radius_map(63)
    annulus = (r >= 20) & (r < 32)
    ring = out[..., annulus]
    np.testing.assert_allclose(np.median(ring, axis=-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.median(np.abs(ring), axis=-1), 1.0, rtol=1e-3)


def test_radial_profile_is_the_median_of_each_integer_ring(batch):
    prof = radial_profile(batch)
    assert prof.shape == (5, 3, 32)
    for i in range(len(batch)):
        np.testing.assert_allclose(prof[i], _reference_profile(batch[i], 32), rtol=1e-6)
    # float16 input (the cache's dtype) gives the same profile up to float16 rounding
    np.testing.assert_allclose(radial_profile(batch.astype(np.float16)), prof, atol=2e-3, rtol=2e-3)


def test_residual_matches_the_definition_and_uses_the_last_ring_beyond_it(batch):
    out = residual(batch)
    for i in range(len(batch)):
        np.testing.assert_allclose(out[i], _reference_residual(batch[i]), rtol=1e-4, atol=2e-3)
    # corner pixel (r ≈ 43.8) is modelled by ring 31
    x = preprocess._robust_scale(batch[:1])
    corner = x[0, 1, 0, 0] - _reference_profile(x[0], 32)[1, 31]
    assert out[0, 1, 0, 0] == pytest.approx(corner, abs=1e-4)


def test_residual_removes_round_light_and_keeps_an_arc():
    yy, xx = np.mgrid[0:63, 0:63]
    r = np.hypot(yy - 31, xx - 31)
    rng = np.random.default_rng(1)
    round_light = 5.0 * np.exp(-np.floor(r) / 4.0) + rng.normal(0, 0.01, (63, 63))
    arc = 2.0 * ((np.abs(r - 8) < 1) & (xx > 31))
    lens = np.stack([round_light + arc] * 3)[None].astype(np.float32)
    no_lens = np.stack([round_light] * 3)[None].astype(np.float32)
    res_lens, res_none = residual(lens), residual(no_lens)
    assert np.abs(res_none).max() < 5.0                     # round light is gone (only noise remains)
    assert np.abs(raw_robust(no_lens)).max() == 50.0        # while raw_robust keeps it (clipped)
    arc_pixels = arc > 0
    assert res_lens[0, 1][arc_pixels].mean() > 20 * max(np.abs(res_none[0, 1][arc_pixels]).mean(), 1.0)


def test_nan_and_inf_become_zero_and_values_are_clipped(batch):
    x = batch.copy()
    x[0, 0, 31, 31] = np.nan
    x[1, 2, 5, 5] = np.inf
    x[2, 1, 31, 40] = 1e6      # off-centre: ring 9 has many pixels, so the residual keeps it
    for fn in (raw_robust, residual):
        out = fn(x)
        assert np.isfinite(out).all()
        assert out[0, 0, 31, 31] == 0.0 and out[1, 2, 5, 5] == 0.0
        assert out.max() <= 50.0 and out.min() >= -50.0
        assert out[2, 1, 31, 40] == 50.0


def test_preprocess_dispatches_and_refuses_an_unknown_name(batch):
    np.testing.assert_array_equal(preprocess.preprocess(batch, "residual"), residual(batch))
    with pytest.raises(ValueError, match="unknown preprocessing 'resid'.*raw_robust, residual"):
        preprocess.preprocess(batch, "resid")


def test_large_batches_are_processed_in_chunks_with_the_same_result():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(preprocess._CHUNK + 7, 3, 63, 63)).astype(np.float32)
    np.testing.assert_allclose(residual(x)[-7:], residual(x[-7:]), atol=1e-6)
    np.testing.assert_allclose(radial_profile(x)[-7:], radial_profile(x[-7:]))


# ---------------------------------------------------------------------------
# Parity with the published pipeline, on data its own code wrote


def _origin_formula(stamp64: np.ndarray, mode: str) -> np.ndarray:
    """The published preprocessing as its text describes it, on the 64-px stamp, in float32.

    Per band: r from pixel (32, 32); annulus 20 ≤ r < 32; x ← (x − median) / (MAD + 1e-8), the
    median and MAD taken in float32 and the division done in float32; for the residual, the
    median of each ring k ≤ r < k+1 for k = 0…31 and model profile[min(floor r, 31)]
    subtracted; NaN/Inf → 0; clip ±50. Written from that description, one band at a time.
    """
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.sqrt((xx - 32) ** 2 + (yy - 32) ** 2)
    annulus = (r >= 20) & (r < 32)
    rings = np.clip(np.floor(r).astype(int), 0, 31)
    out = []
    for band in stamp64.astype(np.float32):
        values = band[annulus]
        med = float(np.median(values))
        mad = float(np.median(np.abs(values - np.float32(med)))) + 1e-8
        x = (band - np.float32(med)) / np.float32(mad)
        if mode == "residual":
            profile = np.array([np.median(x[(r >= k) & (r < k + 1)]) for k in range(32)], np.float32)
            x = x - profile[rings]
        out.append(np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -50.0, 50.0))
    return np.stack(out)


@pytest.fixture(scope="module")
def origin_stamps() -> np.ndarray:
    """Every stamp and control of the origin fixture's val split, (272, 3, 64, 64) float32."""
    out = []
    for shard in sorted((origin_data() / "val").glob("*.parquet")):
        table = shards.read_columns(shard, ["stamp_npz", "ctrl_stamp_npz"])
        out += [shards.decode_blob(b.as_py()) for col in table.columns for b in col]
    return np.stack(out)


@pytest.mark.parametrize("mode", ["raw_robust", "residual"])
def test_the_63px_crop_gives_the_published_pipelines_numbers_on_its_own_data(origin_stamps, mode):
    engine = preprocess.preprocess(shards.crop(origin_stamps), mode)
    worst = 0.0
    for stamp, mine in zip(origin_stamps, engine):
        worst = max(worst, float(np.abs(mine - _origin_formula(stamp, mode)[:, 1:, 1:]).max()))
    assert worst <= 1e-5, worst


def test_the_annulus_is_not_rescaled_to_the_crop(origin_stamps):
    # The crop loses only row 0 and column 0, 32 px or more from the LRG: the annulus keeps its pixels.
    r64 = np.hypot(*(np.indices((64, 64)) - 32))
    assert not ((r64 < 32) & ((np.indices((64, 64))[0] == 0) | (np.indices((64, 64))[1] == 0))).any()
    assert len(preprocess._annulus_pixels(63)) == int(((r64 >= 20) & (r64 < 32)).sum()) == 1960
    # Numbers computed once from the fixture's first val stamp (val/part-00000, row 0); the
    # rescaled annulus (19.6875 ≤ r < 31.5) gave other values here, up to 1.6 MAD elsewhere.
    res = residual(shards.crop(origin_stamps[:1]))
    np.testing.assert_allclose(res[0, :, 31, 36], [-2.6055346, -1.4014549, 1.4156446], atol=1e-5)
    assert float(np.abs(res).sum(dtype=np.float64)) == pytest.approx(27325.16085527549, rel=1e-6)


def test_a_stamp_too_small_for_the_annulus_is_refused_in_words():
    with pytest.raises(ValueError, match="does not hold the whole annulus 20 ≤ r < 32.*at least 63 px"):
        raw_robust(np.zeros((1, 3, 32, 32), np.float32))
