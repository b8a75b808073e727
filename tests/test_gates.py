"""Shortcut gates: a planted shortcut is found, noise is not, and the numbers are scikit-learn's own."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from data_fixtures import write_tiny_dataset
from engine.data.gates import GateResult, balanced_sample, cv_auc, cv_splits, radial_features, shortcut_gates
from engine.data.gates import main as gates_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pairs(n_pairs: int, seed: int, core_signal: float = 0.0, twin_noise: float = 0.05):
    """Paired-view arrays: each LRG gives a stamp (1) and a near-identical control (0)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_pairs, 3, 63, 63)).astype(np.float32)
    twins = base + rng.normal(0, twin_noise, base.shape).astype(np.float32)
    images = np.concatenate([twins, base])
    labels = np.concatenate([np.ones(n_pairs, np.uint8), np.zeros(n_pairs, np.uint8)])
    images[labels == 1, :, 30:33, 30:33] += core_signal        # light added within r < 2 of the centre
    groups = np.concatenate([np.arange(n_pairs), np.arange(n_pairs)]).astype(np.int64)
    return images.astype(np.float16), labels, groups


def test_a_planted_core_shortcut_is_found():
    images, labels, groups = _pairs(300, seed=1, core_signal=1.0)
    result = shortcut_gates(images, labels, groups, n_samples=600)
    assert isinstance(result, GateResult) and result.n_samples == 600
    assert result.core_lr_auc > 0.95
    assert result.radial_lr_auc > 0.9          # the central rings carry it too


def test_label_noise_gives_half():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(1200, 3, 63, 63)).astype(np.float16)
    labels = rng.integers(0, 2, 1200).astype(np.uint8)
    result = shortcut_gates(images, labels, np.arange(1200), n_samples=1000)
    assert abs(result.core_lr_auc - 0.5) < 0.07
    assert abs(result.radial_lr_auc - 0.5) < 0.07


def test_intervals_over_lrgs_bracket_the_value_and_widen_when_few_lrgs_are_sampled():
    images, labels, groups = _pairs(400, seed=5, core_signal=0.25)
    many = shortcut_gates(images, labels, groups, n_samples=800, intervals=True)
    few = shortcut_gates(images, labels, groups, n_samples=160, intervals=True)
    for r in (many, few):
        assert r.core_interval[0] < r.core_lr_auc < r.core_interval[1]
        assert r.radial_interval[0] <= r.radial_lr_auc <= r.radial_interval[1]
    width = lambda r: r.core_interval[1] - r.core_interval[0]
    assert width(few) > 1.5 * width(many)
    # Rows of one LRG move together: an interval over rows would be narrower than over LRGs.
    assert shortcut_gates(images, labels, groups, n_samples=800).core_interval is None


def test_a_mask_hides_a_shortcut_inside_its_radius():
    images, labels, groups = _pairs(300, seed=3, core_signal=1.0)
    masked = shortcut_gates(images, labels, groups, n_samples=600, mask_radius=3)
    assert abs(masked.core_lr_auc - 0.5) < 0.1 and abs(masked.radial_lr_auc - 0.5) < 0.1


def test_grouping_by_lrg_keeps_near_identical_twins_apart():
    # No signal, twins nearly identical: grouped CV stays near 0.5, plain stratified CV
    # (a twin in training, its pair in testing) falls well below it, as SCIENCE.md warns.
    images, labels, groups = _pairs(500, seed=4, core_signal=0.0, twin_noise=0.02)
    grouped = shortcut_gates(images, labels, groups, n_samples=1000).core_lr_auc
    x = images[:, :, 26:36, 26:36].reshape(1000, -1).astype(np.float64)
    plain = roc_auc_score(labels, cross_val_predict(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), x, labels,
        cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")[:, 1])
    assert abs(grouped - 0.5) < 0.08
    assert plain < grouped - 0.1


def test_a_sorted_input_still_gives_a_balanced_random_sample():
    labels = np.concatenate([np.zeros(5000, np.uint8), np.ones(3000, np.uint8)])   # sorted by label
    idx = balanced_sample(labels, 2000, seed=1337)
    assert len(idx) == 2000 and labels[idx].sum() == 1000
    assert np.all(np.diff(idx) > 0)
    assert idx[idx < 5000].max() > 4000 and idx[idx >= 5000].max() > 7000   # spread, not the first N
    np.testing.assert_array_equal(idx, balanced_sample(labels, 2000, seed=1337))
    assert not np.array_equal(idx, balanced_sample(labels, 2000, seed=1))
    # a short class caps the sample, still balanced
    assert labels[balanced_sample(labels[:5100], 2000, 0)].sum() == 100
    with pytest.raises(ValueError, match="needs both classes; found 0 positives"):
        balanced_sample(np.zeros(10, np.uint8), 4, 0)


def test_numbers_equal_a_straightforward_scikit_learn_computation():
    images, labels, groups = _pairs(400, seed=5, core_signal=0.2)
    seed = 1337
    result = shortcut_gates(images, labels, groups, n_samples=600, seed=seed)

    idx = balanced_sample(labels, 600, seed)
    x, y, g = images[idx].astype(np.float64), labels[idx], groups[idx]
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=200))

    core_x = x[:, :, 26:36, 26:36].reshape(len(x), -1)          # the central 10×10 around (31, 31)
    assert core_x.shape[1] == 300
    with threadpool_limits(limits=1, user_api="blas"):    # speed only: one BLAS thread on 2 shared cores
        core = roc_auc_score(y, cross_val_predict(pipe, core_x, y, groups=g, cv=cv, method="predict_proba")[:, 1])

    ring = np.floor(np.hypot(*np.mgrid[0:63, 0:63] - 31.0))
    radial_x = np.stack([np.median(x[:, b][:, ring == k], axis=1) for b in range(3) for k in range(32)], axis=1)
    with threadpool_limits(limits=1, user_api="blas"):
        radial = roc_auc_score(y, cross_val_predict(pipe, radial_x, y, groups=g, cv=cv, method="predict_proba")[:, 1])

    assert result.core_lr_auc == pytest.approx(core, abs=1e-9)
    assert result.radial_lr_auc == pytest.approx(radial, abs=1e-9)
    assert 0.6 < result.core_lr_auc < 1.0                        # a real, non-trivial value was compared


def test_too_few_lrgs_for_grouped_folds_is_a_clear_error():
    images, labels, groups = _pairs(3, seed=6)
    with pytest.raises(ValueError, match="needs at least 5 LRGs in the gate sample, found 3"):
        shortcut_gates(images, labels, groups, n_samples=6)


def test_radial_features_zero_the_masked_rings():
    images = np.full((4, 3, 63, 63), 10.0, np.float16)
    feats = radial_features(images, mask_radius=5).reshape(4, 3, 32)
    assert np.all(feats[:, :, :5] == 0) and np.all(feats[:, :, 5:] != 0)


def test_cv_splits_are_grouped_and_stratified():
    _, labels, groups = _pairs(100, seed=8)
    splits = cv_splits(labels, groups, folds=5, seed=0)
    assert len(splits) == 5
    for train, test in splits:
        assert set(groups[train]).isdisjoint(groups[test])
        assert abs(labels[test].mean() - 0.5) < 0.1
    assert cv_auc(np.random.default_rng(0).normal(size=(200, 4)), labels, splits) == pytest.approx(0.5, abs=0.15)


def test_cli_matrix_prints_every_row_beside_the_published_numbers(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "data", n_lrgs={"train": 6, "val": 10, "test": 4}, rows_per_lrg=3)
    assert gates_cli(["--data-root", str(root), "--matrix", "--sample", "full"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| paired") or line.startswith("| unpaired")]
    assert len(rows) == 5
    assert "0.951 / ~0.98" in rows[0] and "0.518 / ~0.50" in rows[4] and "|    7 |" in rows[4]


def test_cli_reports_a_bad_data_root_without_a_traceback(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "engine.gates", "--data-root", str(tmp_path / "nowhere")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "data root not found" in bad.stderr and "Traceback" not in bad.stderr


def _reference_radial_features(images: np.ndarray, mask_radius: int) -> np.ndarray:
    """radial_features the plain way: the whole sample to float32, masked, then the ring medians."""
    from engine.data.preprocess import radial_profile, radius_map

    x = np.asarray(images, dtype=np.float32)
    if mask_radius > 0:
        x = x * (radius_map(x.shape[-1]) >= mask_radius)
    return radial_profile(x).reshape(len(x), -1).astype(np.float64)


@pytest.mark.parametrize("mask_radius", [0, 5])
def test_radial_features_in_chunks_are_bit_identical_to_the_whole_sample_at_once(mask_radius):
    images, _, _ = _pairs(70, seed=11)           # 140 images, float16 as the stamp cache holds them
    want = _reference_radial_features(images, mask_radius)
    for chunk in (2048, 64, 7):                 # one chunk, a few, a ragged last one
        got = radial_features(images, mask_radius, chunk=chunk)
        assert got.dtype == np.float64 and got.shape == want.shape
        assert np.array_equal(got, want), chunk


def _unpaired(n_lrgs: int, rows: int, seed: int, ring: float = 0.0):
    """Unpaired-view arrays: lens and non-lens LRGs disjoint, an LRG's rows near-identical (one host and
    noise), a non-lens LRG's rows byte-identical (its one control); lenses get a round ring at r = 8."""
    from engine.data.preprocess import radius_map

    rng = np.random.default_rng(seed)
    lrg = rng.normal(size=(2 * n_lrgs, 3, 63, 63)).astype(np.float32)
    images = np.repeat(lrg, rows, axis=0)
    labels = np.repeat(np.r_[np.ones(n_lrgs), np.zeros(n_lrgs)].astype(np.uint8), rows)
    groups = np.repeat(np.arange(2 * n_lrgs, dtype=np.int64), rows)
    lens = labels == 1
    images[lens] += rng.normal(0, 0.05, images[lens].shape).astype(np.float32)
    images[lens] += ring * (np.abs(radius_map(63) - 8) < 1.0)
    return images, labels, groups


def test_the_ungrouped_value_recognises_lrgs_where_the_grouped_gate_sees_nothing():
    images, labels, groups = _unpaired(60, rows=5, seed=4)        # no signal at all: only LRG identity
    result = shortcut_gates(images.astype(np.float16), labels, groups, n_samples=600, ungrouped=True)
    assert abs(result.core_lr_auc - 0.5) < 0.1
    assert result.core_lr_auc_ungrouped > 0.9                     # plain folds: rows of one LRG on both sides
    plain = cv_splits(labels, groups, grouped=False)
    assert all(len(np.intersect1d(groups[tr], groups[te])) > 0 for tr, te in plain)


def test_a_radial_gate_on_residual_inputs_cannot_see_even_a_strong_ring():
    from engine.data.preprocess import raw_robust, residual

    images, labels, groups = _unpaired(60, rows=3, seed=5, ring=3.0)
    raw = shortcut_gates(raw_robust(images).astype(np.float16), labels, groups, n_samples=360)
    res = shortcut_gates(residual(images).astype(np.float16), labels, groups, n_samples=360)
    assert raw.radial_lr_auc > 0.95                               # the data carry a radial signal
    assert abs(res.radial_lr_auc - 0.5) < 0.15                    # the residual inputs do not
    assert res.radial_feature_max_abs < 1e-3 < raw.radial_feature_max_abs


def test_the_data_checks_ordering_verdict_reads_the_published_order_and_can_fail():
    from engine.data.gates import PUBLISHED, ordering_verdict

    published = {k: v[0] for k, v in PUBLISHED.items()}
    ok, words = ordering_verdict(published)
    assert ok and "unpaired: raw 0.949 > residual 0.694" in words
    flat = {**published, ("paired", "raw_robust", 0): 0.50}   # raw no better than residual: not the published order
    ok, words = ordering_verdict(flat)
    assert not ok and "fails: paired: raw 0.500 > residual 0.554" in words
    masked_worse = {**published, ("unpaired", "residual", 7): 0.75}
    assert not ordering_verdict(masked_worse)[0]
