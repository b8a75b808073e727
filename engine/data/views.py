"""The manifest's views of a data root's rows: paired, unpaired, and the stratified sample of each.

Paired: every row twice, its stamp (lens, label 1) and its control (non-lens, label 0).
Unpaired: each split's LRGs split into lens LRGs (their stamps) and non-lens LRGs (their
controls), by the published builder's rules ("origin", draw for draw) or our earlier per-cell
halving ("per_cell"); docs/DATA.md compares them. The sample: a stratified fraction of a view,
by largest remainder, within one example of every stratum's share (plan §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from engine.config import SPLITS, UNPAIRED_METHODS


                        # 3: the pipeline's `replicate` carried, for the distinct-image counts
ENTRY_COLUMNS = ("split", "shard", "row", "blob", "label", "theta_e", "theta_e_bin",
                 "psf_bin", "depth_bin", "lrg_id", "replicate")

def thetae_bin_index(theta_e: np.ndarray, bins: Sequence[float]) -> np.ndarray:
    """Index of the [lo, hi) bin of each θ_E; -1 outside the bins."""
    theta_e = np.asarray(theta_e, np.float64)
    edges = np.asarray(bins, np.float64)
    idx = np.searchsorted(edges, theta_e, side="right") - 1
    idx[(theta_e < edges[0]) | (theta_e >= edges[-1]) | ~np.isfinite(theta_e)] = -1
    return idx.astype(np.int8)

def paired_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Every row twice: its stamp (label 1) and its control (label 0).

    A control shared by an LRG's rows is emitted once per row, not deduplicated: the
    view stays 50/50 and every positive keeps its own counterfactual twin.
    """
    pos = rows.assign(blob=_blob("stamp", len(rows)), label=np.uint8(1))
    neg = rows.assign(blob=_blob("ctrl", len(rows)), label=np.uint8(0))
    return ordered_entries(pd.concat([pos, neg], ignore_index=True))

def _blob(kind: str, n: int) -> pd.Categorical:
    kinds = ["ctrl", "stamp"]
    return pd.Categorical.from_codes(np.full(n, kinds.index(kind), np.int8), categories=kinds)

@dataclass(frozen=True)
class Shortfall:
    """A (psf_bin, depth_bin) cell of the unpaired view whose non-lens pool was smaller than its lenses.

    `outcome` says what the method did about it: "dropped" (per_cell: random lenses dropped to
    the pool's size), "repeated" (origin: non-lenses drawn with replacement; `repeats` of them
    repeat a row already drawn) or "unmatched" (origin: the cell has no non-lens row at all, so
    its lenses stay without matched non-lenses and the split is unbalanced by that many).
    """

    split: str
    psf_bin: int
    depth_bin: int
    positives: int
    negatives_available: int
    outcome: str = "dropped"
    repeats: int = 0

    def describe(self) -> str:
        cell = f"{self.split}: cell psf_bin={self.psf_bin} depth_bin={self.depth_bin} has {self.positives} positives"
        if self.outcome == "repeated":
            return (f"{cell} but {self.negatives_available} negative rows: {self.positives} negatives drawn with "
                    f"replacement, {self.repeats} of them a row drawn before")
        if self.outcome == "unmatched":
            return f"{cell} and no negative LRG: none matched, so the split has {self.positives} more positives"
        dropped = self.positives - self.negatives_available
        return (f"{cell} but {self.negatives_available} negatives: "
                f"{dropped} random positives dropped to keep the cell matched and 50/50")

def unpaired_view(rows: pd.DataFrame, seed: int, method: str = "origin") -> tuple[pd.DataFrame, tuple[Shortfall, ...]]:
    """Disjoint LRGs per split: some give their stamps (lenses), the others their controls (non-lenses).

    `method` "origin" follows the published manifest builder (unpaired_origin), "per_cell" our
    earlier per-cell halving (unpaired_per_cell); docs/DATA.md compares them.
    """
    if method == "origin":
        return unpaired_origin(rows, seed)
    if method == "per_cell":
        return unpaired_per_cell(rows, seed)
    raise ValueError(f"unknown unpaired method {method!r}; expected one of {', '.join(UNPAIRED_METHODS)}")

def _unpaired_entries(r: pd.DataFrame, take_pos: np.ndarray, take_neg: np.ndarray) -> list[pd.DataFrame]:
    pos_rows = r.iloc[take_pos].assign(blob=_blob("stamp", len(take_pos)), label=np.uint8(1))
    neg_rows = r.iloc[take_neg].assign(blob=_blob("ctrl", len(take_neg)), label=np.uint8(0))
    return [pos_rows, neg_rows]

def unpaired_origin(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, tuple[Shortfall, ...]]:
    """The published builder's rules, draw for draw: its seed gives its manifest.

    One generator, `default_rng(seed)`, serves the splits in order (train, val, test). Per split:
    the LRGs in order of first appearance (shard, row) are shuffled and the first half (rounded
    down) are the lens LRGs, every row giving its stamp; the rest are non-lens LRGs. Then per
    (psf_bin, depth_bin) of each *row*, in sorted cell order, for each cell with lenses and
    non-lens rows: a seed `integers(0, 2**31 - 1)` from the generator, and as many non-lens rows as
    the cell has lenses drawn by `RandomState(that seed).choice` from the cell's non-lens rows
    in split order, with replacement only where the cell has too few. A cell with lenses and no
    non-lens row gets no non-lenses (the split is then unbalanced). On the origin fixture this
    reproduces the origin's own manifest row for row (tests/test_origin_data.py).
    """
    out, notes = [], []
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        r = rows[rows["split"] == split].reset_index(drop=True)
        if not len(r):
            continue
        lrg = r["lrg_id"].to_numpy()
        order = pd.unique(lrg)
        perm = np.arange(len(order))
        rng.shuffle(perm)
        is_pos = np.isin(lrg, order[perm[: len(order) // 2]])
        neg, short = match_negatives_per_cell(r, is_pos, rng, split)
        notes.extend(short)
        out.extend(_unpaired_entries(r, np.flatnonzero(is_pos), neg))
    view = pd.concat(out, ignore_index=True) if out else paired_view(rows.iloc[:0])
    return ordered_entries(view), tuple(notes)

def match_negatives_per_cell(r: pd.DataFrame, is_pos: np.ndarray, rng: np.random.Generator,
                             split: str) -> tuple[np.ndarray, list[Shortfall]]:
    """The origin's matching, for one split's rows `r` whose lens rows are `is_pos`: the non-lens rows
    drawn per (psf_bin, depth_bin) cell, as many as the cell has lenses (see unpaired_origin), and the
    cells that were short."""
    notes = []
    cell = r["psf_bin"].to_numpy(np.int64) * 1000 + r["depth_bin"].to_numpy(np.int64)
    take_neg = []
    for c in np.unique(cell):
        n_pos = int(np.count_nonzero(is_pos & (cell == c)))
        pool = np.flatnonzero(~is_pos & (cell == c))
        if n_pos == 0 or len(pool) == 0:
            if n_pos:
                notes.append(Shortfall(split, int(c // 1000), int(c % 1000), n_pos, 0, "unmatched"))
            continue
        state = int(rng.integers(0, 2**31 - 1))
        short = len(pool) < n_pos
        pick = pool[np.random.RandomState(state).choice(len(pool), size=n_pos, replace=short)]
        if short:
            notes.append(Shortfall(split, int(c // 1000), int(c % 1000), n_pos, len(pool), "repeated",
                                   n_pos - len(np.unique(pick))))
        take_neg.append(pick)
    return (np.concatenate(take_neg) if take_neg else np.zeros(0, np.int64)), notes

def unpaired_per_cell(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, tuple[Shortfall, ...]]:
    """Halved per cell, matched without replacement, exactly 50/50.

    Within each split and each (psf_bin, depth_bin) cell the LRGs are shuffled; the first
    half (rounded down) are positive LRGs (every row's stamp), the rest negative LRGs. For
    each cell, as many negatives as the cell has positives are drawn from the negative
    LRGs' control rows; a cell short of negatives keeps all it has and drops positives at
    random to the same count (matched and balanced beats either alone).
    """
    out, short = [], []
    for split_no, split in enumerate(SPLITS):
        r = rows[rows["split"] == split].reset_index(drop=True)
        if not len(r):
            continue
        rng = np.random.default_rng([seed, split_no, 1])
        cell = r["psf_bin"].to_numpy(np.int64) * 1000 + r["depth_bin"].to_numpy(np.int64)
        # An LRG's cell is that of its first row, so an LRG can never land in both pools.
        first = r.drop_duplicates("lrg_id")
        lrg_cell = dict(zip(first["lrg_id"].to_numpy(), cell[first.index.to_numpy()]))
        positive_lrgs = []
        for c in sorted(set(lrg_cell.values())):
            lrgs = np.array(sorted(k for k, v in lrg_cell.items() if v == c), dtype=np.int64)
            lrgs = rng.permutation(lrgs)
            positive_lrgs.append(lrgs[: len(lrgs) // 2])
        is_pos = np.isin(r["lrg_id"].to_numpy(), np.concatenate(positive_lrgs))
        take_pos, take_neg = [], []
        for c in np.unique(cell):
            pos = np.flatnonzero(is_pos & (cell == c))
            pool = np.flatnonzero(~is_pos & (cell == c))
            if len(pool) >= len(pos):
                neg = np.sort(rng.choice(pool, size=len(pos), replace=False))
            else:
                short.append(Shortfall(split, int(c // 1000), int(c % 1000), len(pos), len(pool)))
                neg, pos = pool, np.sort(rng.choice(pos, size=len(pool), replace=False))
            take_pos.append(pos)
            take_neg.append(neg)
        out.extend(_unpaired_entries(r, np.concatenate(take_pos), np.concatenate(take_neg)))
    view = pd.concat(out, ignore_index=True) if out else paired_view(rows.iloc[:0])
    return ordered_entries(view), tuple(short)

def ordered_entries(entries: pd.DataFrame) -> pd.DataFrame:
    """Sorted by split (train, val, test), shard, row, blob: the order the stamp cache decodes in."""
    return entries.sort_values(["split", "shard", "row", "blob"], kind="stable").reset_index(drop=True)

def with_bins(entries: pd.DataFrame, thetae_bins: Sequence[float]) -> pd.DataFrame:
    entries = entries.assign(theta_e_bin=thetae_bin_index(entries["theta_e"].to_numpy(), thetae_bins))
    entries["label"] = entries["label"].astype(np.uint8)
    return entries[list(ENTRY_COLUMNS)]

def allocate(counts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """How many to draw from each stratum: floor(fraction × total) split by largest remainder.

    Flooring the total reproduces the plan's §2.2 counts (29,108 × 0.1 -> 2,910).

    Each stratum gets floor or ceil of its exact quota, so its share in the sample is
    within one example of its share in the full set.
    """
    counts = np.asarray(counts, np.int64)
    quota = np.round(counts * fraction, 9)     # 0.1 × 70 must not floor to 6
    take = np.floor(quota).astype(np.int64)
    total = int(np.floor(counts.sum() * fraction + 1e-9))
    extra = total - int(take.sum())
    remainder = quota - take
    order = np.lexsort((rng.random(len(counts)), -remainder))  # largest remainder; random ties
    take[order[:extra]] += 1
    return np.minimum(take, counts)

def stratified_sample(frame: pd.DataFrame, fraction: float, keys: Sequence[str], seed: int) -> np.ndarray:
    """Sorted positions of a `fraction` sample of `frame`, stratified on `keys`.

    When "label" is a key, each label is allocated on its own, so a balanced frame
    gives a balanced sample.
    """
    rng = np.random.default_rng([seed, 2])
    keys = list(keys)
    if not len(frame):
        return np.zeros(0, np.int64)
    codes = frame.groupby(keys, sort=True).ngroup().to_numpy() if keys else np.zeros(len(frame), np.int64)
    outer = frame["label"].to_numpy() if "label" in keys else np.zeros(len(frame), np.int64)
    chosen = []
    for lab in np.unique(outer):
        in_outer = outer == lab
        strata = np.unique(codes[in_outer])
        counts = np.array([np.count_nonzero(in_outer & (codes == s)) for s in strata])
        take = allocate(counts, fraction, rng)
        for s, k in zip(strata, take):
            members = np.flatnonzero(in_outer & (codes == s))
            chosen.append(rng.choice(members, size=int(k), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)

def sample_view(view_full: pd.DataFrame, mode: str, fraction: float, strata: Sequence[str],
                seed: int) -> pd.DataFrame:
    """The sample of one view, per split. Paired: rows are sampled and keep both twins."""
    parts = []
    for split in SPLITS:
        v = view_full[view_full["split"] == split].reset_index(drop=True)
        if mode == "paired":
            pos = v[v["label"] == 1].reset_index(drop=True)
            pick = stratified_sample(pos, fraction, [k for k in strata if k != "label"], seed)
            rows = pos.iloc[pick][["shard", "row"]]
            parts.append(v.merge(rows, on=["shard", "row"], how="inner"))
        else:
            parts.append(v.iloc[stratified_sample(v, fraction, strata, seed)])
    return ordered_entries(pd.concat(parts, ignore_index=True))[list(ENTRY_COLUMNS)]
