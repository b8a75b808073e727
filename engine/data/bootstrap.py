"""95% intervals over LRGs: one percentile bootstrap for every number a verdict or §10 reads.

An LRG's rows are near-duplicates (the unpaired view draws ~12 injections per LRG and gives its
negatives one control image; the paired view puts a lens and its non-lens twin on one LRG), so
the unit that varies between two draws of a validation set is the LRG, not the row. A bootstrap
that resampled rows would treat a dozen copies of one host as a dozen independent images and
understate the width (tests/test_bootstrap.py shows it on data with repeated LRGs).

`LrgDraws(groups, draws, seed)` draws the split's LRGs with replacement `draws` times at once:
each draw is a row of counts (how many times each LRG was drawn), and a row's weight in a draw is
its LRG's count. Every metric of the split is then computed on the same draws, so a paired
difference (core_reliance = AUROC(R=0) − AUROC(R=7) on the same images) and a statistic over
several θ_E bins (their minimum, their spread) get joint intervals, not a sum of separate ones.

AUROC under integer weights is computed for all draws at once: the scores are sorted once, the
draws' weights gathered in that order into a (draws, rows) matrix, and the weighted count of
negatives below each positive is a cumulative sum along the rows (tied scores count one half, as
scikit-learn's roc_auc_score does). That is O(draws × rows) memory-bound arithmetic, in chunks of
draws; on the training device when there is one (the scores come from there), else on the CPU.
docs/PERFORMANCE.md gives its cost; tests/test_bootstrap.py checks every draw against
scikit-learn's weighted AUROC on the same resampled LRGs.

The interval is the percentile interval (2.5th and 97.5th percentiles of the draws, linear
interpolation as NumPy's default). A draw in which a class is absent has no AUROC and is left
out; `draws_used` says how many counted. What it measures: how much the number depends on which
LRGs happen to be in the validation set, with the model (or the gate's out-of-fold scores) held
fixed. It does not include the seed-to-seed spread of training: that is what replicates measure
(docs/DECISIONS.md, "Uncertainty").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from engine.config import DEFAULT_BOOTSTRAP_DRAWS as DEFAULT_DRAWS
from engine.config import DEFAULT_BOOTSTRAP_SEED as DEFAULT_SEED

LEVEL = 0.95
CHUNK_ELEMENTS = 1 << 23         # draws × rows per chunk: 32 MB of float32 weights
MIN_USED_SHARE = 0.5             # fewer usable draws than this share: no interval (it would be noise)


@dataclass(frozen=True)
class Interval:
    """A percentile interval of `draws_used` bootstrap values."""

    low: float
    high: float
    draws_used: int

    def as_list(self) -> list[float]:
        """[low, high], as metrics.json stores it."""
        return [self.low, self.high]


def percentile_interval(values: torch.Tensor | np.ndarray, level: float = LEVEL,
                        min_used: int = 1) -> Interval | None:
    """The `level` percentile interval of the finite `values`; None when fewer than `min_used` are finite."""
    v = values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.size < min_used:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return Interval(float(low), float(high), int(v.size))


class LrgDraws:
    """`draws` bootstrap resamples of one split's LRGs, shared by every metric of that split."""

    def __init__(self, groups: np.ndarray | Sequence[int], draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED,
                 device: torch.device | str | None = None) -> None:
        if draws < 1:
            raise ValueError(f"a bootstrap needs at least one draw, got {draws}")
        groups = np.asarray(groups)
        if groups.ndim != 1 or groups.size == 0:
            raise ValueError("a bootstrap over LRGs needs one LRG id per row, and at least one row")
        _, inverse = np.unique(groups, return_inverse=True)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.draws, self.seed = int(draws), int(seed)
        self.rows, self.lrgs = int(groups.size), int(inverse.max()) + 1
        self.inverse = torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=self.device)
        # Drawn on the CPU with its own generator: the same seed gives the same draws on every device.
        generator = torch.Generator().manual_seed(self.seed)
        counts = torch.zeros(self.draws, self.lrgs, dtype=torch.float32)
        step = max(1, CHUNK_ELEMENTS // max(self.lrgs, 1))
        for start in range(0, self.draws, step):
            n = min(step, self.draws - start)
            picks = torch.randint(0, self.lrgs, (n, self.lrgs), generator=generator)
            counts[start:start + n].scatter_add_(1, picks, torch.ones(n, self.lrgs))
        self.counts = counts.to(self.device)   # (draws, LRGs): how often each LRG was drawn

    @property
    def min_used(self) -> int:
        return max(1, int(np.ceil(MIN_USED_SHARE * self.draws)))

    def row_weights(self, rows: np.ndarray | None = None) -> torch.Tensor:
        """(draws, n) float32: each row's weight in each draw (its LRG's count); `rows` picks a subset."""
        index = self.inverse if rows is None else self.inverse[self._rows(rows)]
        return self.counts[:, index]

    def auroc(self, labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor,
              rows: np.ndarray | None = None) -> torch.Tensor:
        """(draws,) float64: the AUROC of fixed `scores` in each draw; NaN where a class has no weight.

        `labels` and `scores` are the whole split's (one per row); `rows` (a boolean mask or
        indices) restricts the metric to a subset, such as one θ_E bin's positives and every
        negative, still on the split's draws.
        """
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels,
                            device=self.device).reshape(-1)
        s = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores,
                            device=self.device).reshape(-1).double()
        if y.numel() != self.rows or s.numel() != self.rows:
            raise ValueError(f"labels ({y.numel()}) and scores ({s.numel()}) must have one value per row "
                             f"of the split ({self.rows})")
        index = self.inverse
        if rows is not None:
            pick = self._rows(rows)
            y, s, index = y[pick], s[pick], index[pick]
        sorted_scores, order = torch.sort(s, stable=True)
        positive = (y[order] != 0)
        groups = index[order]
        _, tie, tie_counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
        has_ties = tie_counts.numel() < sorted_scores.numel()
        out = torch.empty(self.draws, dtype=torch.float64, device=self.device)
        step = max(1, CHUNK_ELEMENTS // max(int(s.numel()), 1))
        for start in range(0, self.draws, step):
            w = self.counts[start:start + step][:, groups]          # (chunk, n) in score order
            pos = w * positive
            neg = w - pos
            if has_ties:   # weights of tied scores pooled: a tie counts one half
                pos = torch.zeros(w.shape[0], tie_counts.numel(), dtype=w.dtype, device=w.device).index_add_(1, tie, pos)
                neg = torch.zeros_like(pos).index_add_(1, tie, neg)
            below = torch.cumsum(neg, dim=1) - neg                   # negatives strictly below (exact integers)
            pairs = (pos * (below + 0.5 * neg)).sum(dim=1, dtype=torch.float64)
            total = pos.sum(dim=1, dtype=torch.float64) * neg.sum(dim=1, dtype=torch.float64)
            out[start:start + step] = torch.where(total > 0, pairs / total.clamp_min(1.0),
                                                  torch.full_like(pairs, float("nan")))
        return out

    def interval(self, values: torch.Tensor) -> Interval | None:
        """The 95% percentile interval of per-draw `values` (None when under half the draws have one)."""
        return percentile_interval(values, LEVEL, self.min_used)

    def _rows(self, rows: np.ndarray) -> torch.Tensor:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.size != self.rows:
                raise ValueError(f"a row mask must have one entry per row ({self.rows}), got {rows.size}")
            rows = np.flatnonzero(rows)
        return torch.as_tensor(rows, dtype=torch.long, device=self.device)
