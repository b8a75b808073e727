"""The one bootstrap (engine/data/bootstrap.py): intervals over LRGs that agree with scikit-learn on
resampled LRGs, a paired interval for core_reliance, and why the LRG, not the row, is resampled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from engine.config import MetricsConfig
from engine.data.bootstrap import LrgDraws, percentile_interval
from engine.training.evaluate import evaluate_split
from engine.training.splits import DeviceSplit

torch.set_num_threads(1)


def repeated_lrgs(n_lrgs: int, rows_per_lrg: int, seed: int, signal: float = 1.0):
    """Unpaired-view-like data: each LRG gives `rows_per_lrg` near-identical rows of one label, and
    the score is mostly the LRG's own (hosts differ far more than the injections on one host)."""
    rng = np.random.default_rng(seed)
    lrg_label = rng.integers(0, 2, n_lrgs)
    lrg_score = rng.normal(0, 1, n_lrgs) + signal * lrg_label
    groups = np.repeat(np.arange(n_lrgs) * 10 + 7, rows_per_lrg)          # ids need not be 0..G-1
    labels = np.repeat(lrg_label, rows_per_lrg).astype(np.uint8)
    scores = np.repeat(lrg_score, rows_per_lrg) + rng.normal(0, 0.05, n_lrgs * rows_per_lrg)
    return labels, scores.astype(np.float32), groups


def resampled(groups: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows of one bootstrap draw, written out: every row of an LRG repeated as often as the LRG
    was drawn (the straightforward way, with no weights)."""
    _, inverse = np.unique(groups, return_inverse=True)
    return np.repeat(np.arange(len(groups)), counts[inverse].astype(int))


def test_every_draw_is_scikit_learns_auroc_of_the_resampled_lrgs_and_the_interval_their_percentiles():
    labels, scores, groups = repeated_lrgs(120, 8, seed=1)
    scores = np.round(scores, 1)                       # ties: they count one half, as in scikit-learn
    lrg = LrgDraws(groups, draws=300, seed=11)
    ours = lrg.auroc(labels, scores).numpy()
    counts = lrg.counts.numpy()
    reference = []
    for c in counts:
        rows = resampled(groups, c)
        reference.append(roc_auc_score(labels[rows], scores[rows]))
    reference = np.array(reference)
    assert np.abs(ours - reference).max() < 1e-12
    found = lrg.interval(torch.as_tensor(ours))
    assert (found.low, found.high) == pytest.approx(tuple(np.percentile(reference, [2.5, 97.5])), abs=1e-12)
    assert found.draws_used == 300
    # The same seed gives the same draws; another seed other ones.
    assert torch.equal(LrgDraws(groups, 300, seed=11).counts, lrg.counts)
    assert not torch.equal(LrgDraws(groups, 300, seed=12).counts, lrg.counts)


def test_the_interval_agrees_with_an_independent_resampling_loop():
    """A plain loop (NumPy's generator, LRGs drawn with replacement, scikit-learn on the rows) gives
    the same interval within the Monte-Carlo error of 2,000 draws."""
    labels, scores, groups = repeated_lrgs(200, 6, seed=2, signal=0.8)
    ours = LrgDraws(groups, draws=2000, seed=3)
    found = ours.interval(ours.auroc(labels, scores))
    rng = np.random.default_rng(99)
    ids = np.unique(groups)
    values = []
    for _ in range(2000):
        drawn = rng.choice(ids, size=len(ids), replace=True)
        rows = np.concatenate([np.flatnonzero(groups == g) for g in drawn])
        values.append(roc_auc_score(labels[rows], scores[rows]))
    low, high = np.percentile(values, [2.5, 97.5])
    assert found.low == pytest.approx(low, abs=0.01) and found.high == pytest.approx(high, abs=0.01)


def test_an_interval_over_rows_is_narrower_than_over_lrgs_when_lrgs_repeat():
    """Twelve near-duplicate rows per LRG: resampling rows treats them as twelve independent images."""
    labels, scores, groups = repeated_lrgs(80, 12, seed=4)
    over_lrgs = LrgDraws(groups, 1000, seed=5)
    over_rows = LrgDraws(np.arange(len(groups)), 1000, seed=5)      # every row its own unit
    by_lrg = over_lrgs.interval(over_lrgs.auroc(labels, scores))
    by_row = over_rows.interval(over_rows.auroc(labels, scores))
    width = lambda i: i.high - i.low
    assert width(by_row) < 0.5 * width(by_lrg)        # about 1/sqrt(12) of it
    # With one row per LRG the two are the same bootstrap.
    labels1, scores1, groups1 = repeated_lrgs(400, 1, seed=6)
    a = LrgDraws(groups1, 500, seed=7)
    b = LrgDraws(np.arange(400), 500, seed=7)
    assert torch.equal(a.auroc(labels1, scores1), b.auroc(labels1, scores1))


def test_a_draw_with_one_class_has_no_auroc_and_too_few_usable_draws_give_no_interval():
    labels = np.array([1, 0, 0, 0], dtype=np.uint8)
    lrg = LrgDraws(np.array([1, 2, 3, 4]), draws=400, seed=0)
    values = lrg.auroc(labels, np.array([0.9, 0.1, 0.2, 0.3]))
    # The one positive LRG is missing from a draw with probability (3/4)^4 ≈ 0.32.
    missing = torch.isnan(values)
    assert 0.2 < missing.float().mean() < 0.45
    assert (values[~missing] == 1.0).all()
    assert lrg.interval(values).draws_used == int((~missing).sum())
    assert percentile_interval(np.array([np.nan] * 10 + [0.5]), min_used=6) is None


class CoreAndRing(nn.Module):
    """Reads the centre pixel strongly and one pixel 12 px out weakly (masking at R=7 hides the first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (2.0 * x[:, :, 31, 31] + x[:, :, 31, 43]).sum(1, keepdim=True)


def test_core_reliance_has_the_paired_interval_of_the_difference_on_the_same_resampled_lrgs():
    rng = np.random.default_rng(8)
    n_lrgs, per = 90, 4
    groups = np.repeat(np.arange(n_lrgs), per)
    labels = np.repeat(rng.integers(0, 2, n_lrgs), per).astype(np.uint8)
    x = rng.normal(0, 1, (len(labels), 3, 63, 63)).astype(np.float32)
    x[:, :, 31, 31] += 0.8 * labels[:, None]           # a core shortcut
    x[:, :, 31, 43] += 0.4 * labels[:, None]           # weak signal at r = 12
    images = torch.from_numpy(x).half()
    split = DeviceSplit("val", images, labels, rng.uniform(0.5, 3.0, len(labels)).astype(np.float32), groups,
                        images.numpy(), {}, (), {})
    cfg = MetricsConfig(gate_every_epochs=5, gate_n_samples=2000, gate_cv_folds=5, gate_seed=1, core_box=10,
                        thetae_bins=(0.5, 3.0), thetae_min_positives=5, sensitivity_radii=(0, 7),
                        core_reliance_radius=7, bootstrap_draws=400, bootstrap_seed=21)
    result = evaluate_split(CoreAndRing(), split, cfg)

    # The reference: scikit-learn on the rows of each draw, both radii on the same draw.
    xs = images.float().numpy()
    full = (2 * xs[:, :, 31, 31] + xs[:, :, 31, 43]).sum(1)
    ring = xs[:, :, 31, 43].sum(1)
    counts = LrgDraws(groups, 400, seed=21).counts.numpy()
    diffs, aurocs = [], []
    for c in counts:
        rows = resampled(groups, c)
        a0, a7 = roc_auc_score(labels[rows], full[rows]), roc_auc_score(labels[rows], ring[rows])
        diffs.append(a0 - a7)
        aurocs.append(a0)
    assert result["core_reliance"] == pytest.approx(roc_auc_score(labels, full) - roc_auc_score(labels, ring))
    assert result["core_reliance_ci95"] == pytest.approx(list(np.percentile(diffs, [2.5, 97.5])), abs=1e-6)
    assert result["auroc_ci95"] == pytest.approx(list(np.percentile(aurocs, [2.5, 97.5])), abs=1e-6)
    # Paired: narrower than if the two AUROCs' own intervals were combined as if independent.
    width = lambda pair: pair[1] - pair[0]
    r7 = result["sensitivity"][1]["ci95"]
    assert width(result["core_reliance_ci95"]) < np.hypot(width(result["auroc_ci95"]), width(r7))
    # One bin here: a minimum but no spread.
    assert result["thetae_min_bin_auroc_ci95"] == pytest.approx(result["by_thetae"][0]["ci95"])
    assert result["thetae_max_spread_ci95"] is None
    assert result["bootstrap"]["draws"] == 400 and result["bootstrap"]["lrgs"] == n_lrgs
