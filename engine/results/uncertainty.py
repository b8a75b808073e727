"""How sure a number is: its 95% interval over LRGs, its spread over seed replicates, and the band
edges they reach.

Two kinds of uncertainty sit beside a value (docs/DECISIONS.md, "Uncertainty"):

- **over LRGs** (`<key>_ci95`, written by the engine at the end of training: engine/data/bootstrap.py):
  how much the number depends on which LRGs happen to be in the validation set, the model held
  fixed. More seeds do not narrow it; more validation LRGs do.
- **over seeds** (`<key>_seeds`, written by engine/results/replicates.py when several replicates of
  one experiment are done): the mean of the replicates, their standard deviation, and the 95%
  interval of the mean, mean ± t(0.975, n−1)·sd/√n. More replicates narrow it. A data probe (the
  shortcut gates) reads the validation images, not the model: every seed gives it the same value.

A value "crosses" a band edge when either interval holds values on both sides of the edge as the
band's rule draws it (a value on an edge is WARN, so [0.041, 0.05] does not cross 0.05 from a WARN
side). Torch-free and NumPy-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from engine.config import Band
from engine.numbers import in_words, number

DECIMALS = 10   # as verdicts.DECIMALS: a value is rounded before it meets a bound

# t(0.975, df) for df = 1..30; beyond, 1.96 + 2.4/df is within 0.001 of the true quantile.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)
MAX_REPLICATES = 10   # the most seeds the decision panel proposes for one experiment


def t975(df: int) -> float:
    """The 97.5th percentile of Student's t with `df` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError(f"t needs at least one degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def _rounded(value: float) -> float:
    return round(value, DECIMALS)


# ---------------------------------------------------------------------------
# Reading the intervals a document carries


def interval_of(metrics: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """`<key>_ci95` as (low, high); None when absent or not two ordered numbers (an old file has none)."""
    return pair(metrics.get(f"{key}_ci95"))


def pair(raw: Any) -> tuple[float, float] | None:
    """[low, high] as a tuple of two ordered numbers, or None."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        return None
    low, high = number(raw[0]), number(raw[1])
    if low is None or high is None or low > high:
        return None
    return low, high


@dataclass(frozen=True)
class SeedSpread:
    """A value over `n` done replicates: their mean, sd and the 95% interval of the mean."""

    n: int
    mean: float
    sd: float
    values: tuple[float, ...]
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "values": list(self.values),
                "ci95": [self.low, self.high]}


def seed_spread(values: Sequence[float]) -> SeedSpread | None:
    """Mean, sample sd and the t interval of the mean of two or more values (None for fewer)."""
    vals = tuple(float(v) for v in values)
    n = len(vals)
    if n < 2:
        return None
    mean = math.fsum(vals) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return SeedSpread(n, mean, sd, vals, mean - half, mean + half)


def seeds_of(metrics: Mapping[str, Any], key: str) -> SeedSpread | None:
    """`<key>_seeds` (written by engine/results/replicates.py) as a SeedSpread; None when absent."""
    raw = metrics.get(f"{key}_seeds")
    if not isinstance(raw, Mapping):
        return None
    values = raw.get("values")
    if not isinstance(values, list) or not all(number(v) is not None for v in values):
        return None
    return seed_spread([number(v) for v in values])


# ---------------------------------------------------------------------------
# Band edges


def band_edges(band: Band) -> tuple[float, float]:
    return (band.pass_limit, band.fail_limit)


def crossed(band: Band | None, low: float, high: float, target: float | None = None) -> list[float]:
    """The edges of `band` (or the single `target` of §6.4) that [low, high] straddles: values on
    both sides of the edge as the rule draws it. A lower-is-better band PASSes below its pass
    limit and FAILs above its fail limit (each limit itself is WARN); a target PASSes above it."""
    low, high = _rounded(low), _rounded(high)
    out = []
    if target is not None:
        if low <= target < high:
            out.append(target)
        return out
    assert band is not None
    p, f = band.pass_limit, band.fail_limit
    if band.higher_is_better:
        checks = ((p, low <= p < high), (f, low < f <= high))
    else:
        checks = ((p, low < p <= high), (f, low <= f < high))
    return sorted({edge for edge, hit in checks if hit})


def hull(*ranges: tuple[float, float] | None) -> tuple[float, float] | None:
    """The smallest range holding every given range (None when none is given)."""
    given = [r for r in ranges if r is not None]
    if not given:
        return None
    return min(r[0] for r in given), max(r[1] for r in given)


def edge_words(edges: Sequence[float]) -> str:
    """'crosses 0.05', 'crosses 0.03 and 0.05'."""
    return "crosses " + " and ".join(f"{e:.2f}" for e in edges)


def range_words(low: float, high: float) -> str:
    return f"{in_words(low)}–{in_words(high)}"


def describe(value: float | None, lrgs: tuple[float, float] | None, seeds: SeedSpread | None,
             edges: Sequence[float] = ()) -> str:
    """'0.048, 95% 0.041–0.056: crosses 0.05'; with replicates '0.048 ± 0.004 (3 seeds), 95% over
    LRGs 0.041–0.056, over seeds 0.038–0.058: crosses 0.05'."""
    if value is None:
        return "no value"
    text = in_words(value)
    if seeds is not None:
        text += f" ± {in_words(seeds.sd)} ({seeds.n} seeds)"
        parts = []
        if lrgs is not None:
            parts.append(f"95% over LRGs {range_words(*lrgs)}")
        parts.append(f"{'over seeds' if lrgs is not None else '95% over seeds'} {range_words(seeds.low, seeds.high)}")
        text += ", " + ", ".join(parts)
    elif lrgs is not None:
        text += f", 95% {range_words(*lrgs)}"
    if edges:
        text += f": {edge_words(edges)}"
    return text


def replicates_needed(mean: float, sd: float, edge: float, have: int, cap: int = MAX_REPLICATES) -> int | None:
    """The fewest replicates (more than `have`, at most `cap`) whose 95% interval of the mean, with
    this sd, would lie on one side of `edge`; None when even `cap` would not (the mean sits too close
    to the edge for seeds to settle it)."""
    gap = abs(mean - edge)
    for n in range(max(have + 1, 2), cap + 1):
        if t975(n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None
