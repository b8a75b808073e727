"""Index-only manifests: which (shard, row, blob) is which example, per data mode and sample.

    python -m engine.manifest --data-root ROOT [--config experiments.toml] [--host NAME] [--out DIR]
                              [--seed 42] [--fraction 0.10] [--unpaired-method origin|per_cell]
                              [--unpaired-manifest ORIGIN_MANIFEST] [--bad-row-limit 0.001]

A manifest never holds pixels: one row per example with its split, shard (relative to
the data root), row, blob ("stamp" = lens, label 1; "ctrl" = non-lens, label 0), θ_E,
θ_E bin, psf_bin, depth_bin and LRG id. Four views are written: paired and unpaired,
each full and as the stratified sample (SCIENCE.md "Data modes"; docs/DATA.md says
every choice and why). They are Parquet: typed columns (no re-parsing of ids and
floats), a few MB even for the full data, and read back a split at a time. Rows the
pipeline marked as failed (cutout_ok = 0) are left out without decoding and counted.

Built once: the folder is keyed by the shard files (names, sizes, mtimes), the seed,
the fraction, the θ_E bins, the strata and the unpaired method (or the imported
manifest's files), and is published by an atomic rename under a lock, so concurrent
builders neither collide nor repeat the work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from engine.data import shards
from engine.data.cachedir import resolve_cache_dir
from engine.files import CacheError, build_dir_once
from engine.protocol import exitcodes
from engine.config import DATA_MODES, SAMPLES, SPLITS, UNPAIRED_METHODS, ConfigError
from engine.data.settings import (DEFAULT_FRACTION, DEFAULT_STRATA, DEFAULT_THETAE_BINS, DataSettings,
                                 settings_for_command)
from engine.data.shards import BadRow, BadRowsError, ShardError

MANIFEST_VERSION = 3   # 2: failed cut-outs excluded at index time; the origin's unpaired method;
                        # 3: the pipeline's `replicate` carried, for the distinct-image counts
ENTRY_COLUMNS = ("split", "shard", "row", "blob", "label", "theta_e", "theta_e_bin",
                 "psf_bin", "depth_bin", "lrg_id", "replicate")
SUMMARY_FILE = "summary.json"
MIN_STRATUM_FOR_SHARE = 100   # strata smaller than this are reported but not held to 1 pp

# An LRG id packs ra and dec, rounded to 6 decimals, into one int64 (ra·1e6 < 2^29,
# (dec+90)·1e6 < 2^28): exact, stable across runs, and reversible for messages.
_DEC_BITS = 28


class ManifestError(ValueError):
    """The data cannot make a valid manifest (e.g. an LRG in two splits); the message says which."""


def lrg_ids(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """The LRG id of each row: ra/dec rounded to 6 decimals, packed into an int64."""
    ra_u = np.rint(np.asarray(ra, np.float64) * 1e6).astype(np.int64)
    dec_u = np.rint((np.asarray(dec, np.float64) + 90.0) * 1e6).astype(np.int64)
    return (ra_u << _DEC_BITS) | dec_u


def describe_lrg(lrg_id: int) -> str:
    """'ra=150.123456 dec=-2.345678' for an id made by `lrg_ids`."""
    lrg_id = int(lrg_id)
    ra = (lrg_id >> _DEC_BITS) / 1e6
    dec = (lrg_id & ((1 << _DEC_BITS) - 1)) / 1e6 - 90.0
    return f"ra={ra:.6f} dec={dec:.6f}"


def thetae_bin_index(theta_e: np.ndarray, bins: Sequence[float]) -> np.ndarray:
    """Index of the [lo, hi) bin of each θ_E; -1 outside the bins."""
    theta_e = np.asarray(theta_e, np.float64)
    edges = np.asarray(bins, np.float64)
    idx = np.searchsorted(edges, theta_e, side="right") - 1
    idx[(theta_e < edges[0]) | (theta_e >= edges[-1]) | ~np.isfinite(theta_e)] = -1
    return idx.astype(np.int8)


# ---------------------------------------------------------------------------
# Reading the index columns of every shard


@dataclass(frozen=True)
class ShardIndex:
    """Every usable row of the data root (index columns only) and the rows that are not."""

    rows: pd.DataFrame                          # split, shard, row, theta_e, psf_bin, depth_bin, lrg_id
    bad: dict[str, tuple[BadRow, ...]]          # per split
    shard_rows: dict[str, int]                  # rows per split, bad and failed ones included
    failed: dict[str, tuple[BadRow, ...]]       # per split: rows the pipeline marked as failed


# Columns by which the pipeline marks a row it could not make (value 0), and what that means.
# Such rows are left out of every view without decoding them, and counted apart from bad rows:
# the pipeline said so, the data is not damaged. (A failed cut-out's stamp_npz holds only an
# image_r of zeros: decoding it would make it a bad row.)
FAILED_MARKERS = {"cutout_ok": "failed cut-out (cutout_ok = 0)"}

# Read when a shard has them; a missing column or value is no fault. `replicate` numbers an
# LRG's injections: the pipeline repeats each one, byte for byte, once per selection set, so
# (LRG, replicate) names a distinct lens image (distinct_counts); -1 where unknown.
OPTIONAL_INDEX_COLUMNS = ("replicate",)


def shard_files(data_root: str | Path) -> dict[str, list[Path]]:
    """Each split's shards; every split must exist and hold at least one shard."""
    root = Path(data_root)
    if not root.is_dir():
        raise ShardError(f"{root}: data root not found; make one with `python -m engine.synth --out "
                         f"{root} --scale 0.01` or point --data-root at the real shards")
    return {split: shards.list_shards(root, split) for split in SPLITS}


def read_index(data_root: str | Path) -> ShardIndex:
    """The index columns of all shards; rows with a missing column or value are bad rows."""
    root = Path(data_root)
    frames, bad, failed, counts, names = [], {}, {}, {}, []
    for split_no, (split, files) in enumerate(shard_files(root).items()):
        split_bad: list[BadRow] = []
        split_failed: list[BadRow] = []
        counts[split] = 0
        for path in files:
            name = path.relative_to(root).as_posix()
            names.append(name)   # in split, then file order: already sorted
            present = set(shards.shard_columns(path))
            n = shards.shard_num_rows(path)
            counts[split] += n
            needed = list(shards.INDEX_COLUMNS) + list(shards.BLOB_COLUMNS.values())
            missing = [c for c in needed if c not in present]
            if missing:
                reason = f"missing column {', '.join(missing)}"
                split_bad.extend(BadRow(name, r, reason) for r in range(n))
                continue
            markers = [c for c in FAILED_MARKERS if c in present]
            optional = [c for c in OPTIONAL_INDEX_COLUMNS if c in present]
            table = shards.read_columns(path, list(shards.INDEX_COLUMNS) + markers + optional)
            cols = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                    for c in list(shards.INDEX_COLUMNS) + markers}
            ok = np.ones(n, dtype=bool)
            for c in markers:
                for r in np.flatnonzero(cols[c] == 0):
                    split_failed.append(BadRow(name, int(r), FAILED_MARKERS[c]))
                ok &= cols[c] != 0      # a missing marker value is a missing value, below
            for c in list(shards.INDEX_COLUMNS) + markers:
                finite = np.isfinite(cols[c])
                for r in np.flatnonzero(~finite & ok):
                    split_bad.append(BadRow(name, int(r), f"missing or non-finite value in {c}"))
                ok &= finite
            keep = np.flatnonzero(ok)
            replicate = np.full(len(keep), -1, np.int16)
            if "replicate" in optional:
                values = table.column("replicate").to_numpy(zero_copy_only=False).astype(np.float64)[keep]
                known = np.isfinite(values)
                replicate[known] = values[known].astype(np.int16)
            frames.append(pd.DataFrame({
                "split": np.int8(split_no), "shard": np.int32(len(names) - 1), "row": keep.astype(np.int32),
                "theta_e": cols["theta_e_arcsec"][keep].astype(np.float32),
                "psf_bin": cols["psf_bin"][keep].astype(np.int8),
                "depth_bin": cols["depth_bin"][keep].astype(np.int8),
                "lrg_id": lrg_ids(cols["ra"][keep], cols["dec"][keep]),
                "replicate": replicate,
            }))
        bad[split] = tuple(split_bad)
        failed[split] = tuple(split_failed)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"split": np.zeros(0, np.int8), "shard": np.zeros(0, np.int32), "row": np.zeros(0, np.int32),
         "theta_e": np.zeros(0, np.float32),
         "psf_bin": np.zeros(0, np.int8), "depth_bin": np.zeros(0, np.int8), "lrg_id": np.zeros(0, np.int64),
         "replicate": np.zeros(0, np.int16)})
    # Categories, not strings: a million-row manifest sorts, filters and merges on codes.
    rows["split"] = pd.Categorical.from_codes(rows["split"].to_numpy(np.int8), categories=list(SPLITS))
    rows["shard"] = pd.Categorical.from_codes(rows["shard"].to_numpy(np.int32), categories=names)
    check_no_leakage(rows)
    return ShardIndex(rows, bad, counts, failed)


def check_no_leakage(rows: pd.DataFrame) -> None:
    """Raise ManifestError naming the LRGs found in more than one split."""
    splits_per_lrg = rows.groupby("lrg_id", sort=True)["split"].nunique()
    leaked = splits_per_lrg.index[splits_per_lrg.to_numpy() > 1]
    if not len(leaked):
        return
    lines = []
    for lrg in leaked[:5]:
        where = rows[rows["lrg_id"] == lrg].drop_duplicates("split")
        places = " and ".join(f"{w.split} ({w.shard} row {w.row})" for w in where.itertuples())
        lines.append(f"LRG {describe_lrg(lrg)} is in {places}")
    more = f" (and {len(leaked) - 5} more LRGs)" if len(leaked) > 5 else ""
    raise ManifestError("split leakage: " + "; ".join(lines) + more +
                        ". Splits must be disjoint sky regions: move or drop that LRG's rows so it "
                        "appears in one split only")


# ---------------------------------------------------------------------------
# The views


def paired_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Every row twice: its stamp (label 1) and its control (label 0).

    A control shared by an LRG's rows is emitted once per row, not deduplicated: the
    view stays 50/50 and every positive keeps its own counterfactual twin.
    """
    pos = rows.assign(blob=_blob("stamp", len(rows)), label=np.uint8(1))
    neg = rows.assign(blob=_blob("ctrl", len(rows)), label=np.uint8(0))
    return _ordered(pd.concat([pos, neg], ignore_index=True))


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
        neg = np.concatenate(take_neg) if take_neg else np.zeros(0, np.int64)
        out.extend(_unpaired_entries(r, np.flatnonzero(is_pos), neg))
    view = pd.concat(out, ignore_index=True) if out else paired_view(rows.iloc[:0])
    return _ordered(view), tuple(notes)


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
    return _ordered(view), tuple(short)


def _ordered(entries: pd.DataFrame) -> pd.DataFrame:
    """Sorted by split (train, val, test), shard, row, blob: the order the stamp cache decodes in."""
    return entries.sort_values(["split", "shard", "row", "blob"], kind="stable").reset_index(drop=True)


def _with_bins(entries: pd.DataFrame, thetae_bins: Sequence[float]) -> pd.DataFrame:
    entries = entries.assign(theta_e_bin=thetae_bin_index(entries["theta_e"].to_numpy(), thetae_bins))
    entries["label"] = entries["label"].astype(np.uint8)
    return entries[list(ENTRY_COLUMNS)]


# ---------------------------------------------------------------------------
# The stratified sample


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
    return _ordered(pd.concat(parts, ignore_index=True))[list(ENTRY_COLUMNS)]


# ---------------------------------------------------------------------------
# Reports


def split_counts(view: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {total, positive, negative}} as in plan §2."""
    out = {}
    for split in SPLITS:
        labels = view.loc[view["split"] == split, "label"].to_numpy()
        pos = int(np.count_nonzero(labels == 1))
        out[split] = {"total": int(len(labels)), "positive": pos, "negative": int(len(labels) - pos)}
    return out


def repeated_draws(view: pd.DataFrame) -> dict[str, int]:
    """{split: entries that repeat an entry already in the view}: a row drawn k times counts k − 1.

    Only the origin's unpaired method draws a row more than once (with replacement, in a cell
    short of non-lenses); the paired view gives each row's control once per row, not a repeat.
    """
    out = {}
    for split in SPLITS:
        part = view.loc[view["split"] == split, ["shard", "row", "blob"]]
        out[split] = int(part.duplicated().sum())
    return out


def format_counts(title: str, counts: dict[str, dict[str, int]], repeats: dict[str, int] | None = None,
                  distinct: dict[str, dict[str, int]] | None = None) -> str:
    """A plan-§2 style table; with `distinct`, each label's distinct images beside its row count
    (distinct_counts); with `repeats`, a column of the rows drawn twice (repeated_draws)."""
    pos, neg = ("Positive (distinct)", "Negative (distinct)") if distinct is not None else ("Positive", "Negative")
    head = f"| Split | Total | {pos} | {neg} |"
    rule = f"|-------|-------|{'-' * (len(pos) + 2)}|{'-' * (len(neg) + 2)}|"
    if repeats is not None:
        head, rule = head + " Drawn twice |", rule + "-------------|"
    lines = [title, head, rule]
    for split, c in counts.items():
        d = (distinct or {}).get(split, {})
        p_text, n_text = f"{c['positive']:,}", f"{c['negative']:,}"
        if distinct is not None:
            p_text += f" ({d.get('positive', 0):,})"
            n_text += f" ({d.get('negative', 0):,})"
        line = f"| {split.capitalize()} | {c['total']:,} | {p_text} | {n_text} |"
        lines.append(line + (f" {repeats[split]:,} |" if repeats is not None else ""))
    return "\n".join(lines)


def distinct_counts(view: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {positive, negative}}: how many distinct images a view's rows hold (its effective size).

    From the index alone: all rows of one LRG carry byte-identical control blobs (the real
    pipeline and the synthetic twin both; docs/DATA.md), so a control is one image per LRG; the
    pipeline repeats each injection byte for byte once per selection set, so a lens image is one
    per (LRG, `replicate`), and one per shard row where the shards carry no `replicate` (an upper
    bound then). A row drawn twice counts once. Runs record the count measured on the image
    bytes (metrics.json `effective_sample`).
    """
    out = {}
    for split in SPLITS:
        v = view[view["split"] == split]
        stamps, ctrls = v[v["blob"] == "stamp"], v[v["blob"] == "ctrl"]
        if "replicate" in stamps:
            known = stamps["replicate"].to_numpy() >= 0
            lenses = (len(stamps[known].drop_duplicates(["lrg_id", "replicate"]))
                      + len(stamps[~known].drop_duplicates(["shard", "row"])))
        else:
            lenses = len(stamps.drop_duplicates(["shard", "row"]))
        out[split] = {"positive": int(lenses), "negative": int(ctrls["lrg_id"].nunique())}
    return out


def strata_shares(full: pd.DataFrame, sample: pd.DataFrame, keys: Sequence[str]) -> dict:
    """Each stratum's share (percent) in the sample next to the full set, per split.

    Returns {split: {"marginal": [...], "joint_strata": n, "joint_checked": n,
    "joint_max_delta_pp": x}}; joint strata with fewer than 100 members are not checked.
    """
    out = {}
    for split in SPLITS:
        f = full[full["split"] == split]
        s = sample[sample["split"] == split]
        marginal = []
        for key in keys:
            fc = f[key].value_counts().sort_index()
            sc = s[key].value_counts()
            for value, n in fc.items():
                share_f = 100.0 * n / max(len(f), 1)
                share_s = 100.0 * int(sc.get(value, 0)) / max(len(s), 1)
                marginal.append({"key": key, "value": int(value), "full": int(n), "sample": int(sc.get(value, 0)),
                                 "full_pct": share_f, "sample_pct": share_s, "delta_pp": share_s - share_f})
        jf = f.groupby(list(keys)).size()
        js = s.groupby(list(keys)).size().reindex(jf.index, fill_value=0)
        delta = (100.0 * js / max(len(s), 1) - 100.0 * jf / max(len(f), 1)).abs()
        checked = delta[jf >= MIN_STRATUM_FOR_SHARE]
        out[split] = {"marginal": marginal, "joint_strata": int(len(jf)), "joint_checked": int(len(checked)),
                      "joint_max_delta_pp": float(checked.max()) if len(checked) else 0.0}
    return out


def format_shares(title: str, shares: dict) -> str:
    """The strata shares as text, flagging any stratum of ≥100 members off by more than 1 pp."""
    lines = [title]
    for split, s in shares.items():
        lines.append(f"  {split}: joint strata {s['joint_strata']}, {s['joint_checked']} with ≥"
                     f"{MIN_STRATUM_FOR_SHARE} members, max |Δ| {s['joint_max_delta_pp']:.2f} pp")
        lines.append("    stratum            full    share   sample   share     Δ pp")
        for m in s["marginal"]:
            flag = "  > 1 pp" if m["full"] >= MIN_STRATUM_FOR_SHARE and abs(m["delta_pp"]) > 1.0 else ""
            name = f"{m['key']}={m['value']}"
            lines.append(f"    {name:<16} {m['full']:>7} {m['full_pct']:>7.2f}% {m['sample']:>7} "
                         f"{m['sample_pct']:>6.2f}% {m['delta_pp']:>+7.2f}{flag}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Content hashes


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestSet:
    """The four views of one data root, as built (or found) under `directory`."""

    directory: Path
    key: str
    summary: dict
    built: bool

    def path(self, mode: str, sample: str) -> Path:
        _check_view(mode, sample)
        return self.directory / f"{mode}-{sample}.parquet"

    def sha256(self, mode: str, sample: str) -> str:
        return self.summary["views"][f"{mode}-{sample}"]["sha256"]

    def entries(self, mode: str, sample: str, split: str | None = None) -> pd.DataFrame:
        """The view's entries (all splits, or one), in decode order."""
        view = pd.read_parquet(self.path(mode, sample))
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
            view = view[view["split"] == split].reset_index(drop=True)
        return view

    def bad_rows(self, split: str) -> tuple[BadRow, ...]:
        """Rows of `split` left out because an index column or value was missing."""
        return tuple(BadRow(**b) for b in self.summary["bad_rows"][split])

    def failed_rows(self, split: str) -> tuple[BadRow, ...]:
        """Rows of `split` the pipeline marked as failed (a failed cut-out), left out of every view."""
        return tuple(BadRow(**b) for b in self.summary["failed_rows"][split])

    @property
    def unpaired_method(self) -> str:
        """How the unpaired views were made: "origin", "per_cell" or "imported"."""
        return self.summary["unpaired_method"]

    def check_bad_rows(self, limit: float, setting: str = DataSettings.bad_row_limit_setting) -> None:
        """Raise BadRowsError when a split's index-time bad rows exceed `limit` (a fraction)."""
        for split in SPLITS:
            check_bad_rows(self.bad_rows(split), self.summary["shard_rows"][split], limit, split, setting)


def _check_view(mode: str, sample: str) -> None:
    if mode not in DATA_MODES:
        raise ValueError(f"unknown data mode {mode!r}; expected one of {', '.join(DATA_MODES)}")
    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; expected one of {', '.join(SAMPLES)}")


def check_bad_rows(bad: Sequence[BadRow], total: int, limit: float, what: str,
                   setting: str = DataSettings.bad_row_limit_setting) -> None:
    """Raise BadRowsError listing the bad rows when they exceed `limit` × `total`.

    `setting` names where the limit is set, so the message says what to change.
    """
    if not bad or len(bad) <= limit * total:
        return
    groups: dict[tuple[str, str], list[int]] = {}
    for b in bad:
        groups.setdefault((b.shard, b.reason), []).append(b.row)
    listed = []
    for (shard, reason), rows in list(groups.items())[:20]:
        shown = ", ".join(str(r) for r in rows[:5]) + (f", … ({len(rows)} rows)" if len(rows) > 5 else "")
        listed.append(f"{shard} row {shown}: {reason}")
    more = f"; and {len(groups) - 20} more groups" if len(groups) > 20 else ""
    raise BadRowsError(f"{what}: {len(bad)} of {total} rows are bad ({100.0 * len(bad) / max(total, 1):.2f}% > "
                       f"limit {100.0 * limit:.2f}%, {setting}): " + "; ".join(listed) + more +
                       f". Repair or remove those shards, or raise the limit ({setting}) knowingly")


def manifest_key(data_root: str | Path, *, seed: int, sample_fraction: float,
                 thetae_bins: Sequence[float], strata: Sequence[str], unpaired_method: str = "origin",
                 unpaired_manifest: str | Path | None = None) -> str:
    """The content key: every shard's (and an imported manifest's) name, size and mtime, and every knob."""
    root = Path(data_root)
    files = []
    for split, paths in shard_files(root).items():
        for p in paths:
            st = p.stat()
            files.append([p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    knobs = {"version": MANIFEST_VERSION, "seed": seed, "fraction": float(sample_fraction),
             "thetae_bins": [float(b) for b in thetae_bins], "strata": list(strata), "files": files,
             "unpaired": unpaired_method}
    if unpaired_manifest is not None:
        from engine.data.manifest_import import source_files

        source = Path(unpaired_manifest)
        knobs["unpaired"] = "imported"
        knobs["imported"] = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in source_files(source)]
    return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:20]


def build_manifests(data_root: str | Path, out_dir: str | Path | None = None, *, seed: int = 42,
                    sample_fraction: float = DEFAULT_FRACTION,
                    thetae_bins: Sequence[float] = DEFAULT_THETAE_BINS,
                    strata: Sequence[str] = DEFAULT_STRATA, unpaired_method: str = "origin",
                    unpaired_manifest: str | Path | None = None) -> ManifestSet:
    """The four views for `data_root`, built once into `out_dir/<key>/` (default: engine.data.cachedir's).

    `unpaired_method` picks how the unpaired view is drawn (unpaired_view); `unpaired_manifest`,
    an origin manifest, replaces that draw by exactly its rows (engine.data.manifest_import).
    """
    if not 0.0 < sample_fraction <= 1.0:
        raise ValueError(f"sample_fraction {sample_fraction} is outside (0, 1]; the plan's sample is 0.10")
    if unpaired_method not in UNPAIRED_METHODS:
        raise ValueError(f"unknown unpaired method {unpaired_method!r}; expected one of {', '.join(UNPAIRED_METHODS)}")
    root = Path(data_root)
    out = Path(out_dir) if out_dir is not None else resolve_cache_dir(root).manifests
    key = manifest_key(root, seed=seed, sample_fraction=sample_fraction, thetae_bins=thetae_bins, strata=strata,
                       unpaired_method=unpaired_method, unpaired_manifest=unpaired_manifest)
    final = out / key

    def build(tmp: Path) -> None:
        started = time.perf_counter()
        index = read_index(root)
        paired = _with_bins(paired_view(index.rows), thetae_bins)
        imported = None
        if unpaired_manifest is not None:
            from engine.data.manifest_import import import_unpaired

            excluded = {(b.shard, b.row): b.reason for part in (index.bad, index.failed)
                        for rows in part.values() for b in rows}
            imported = import_unpaired(unpaired_manifest, root, index.rows, excluded)
            unpaired, short = _ordered(imported.entries), ()
        else:
            unpaired, short = unpaired_view(index.rows, seed, unpaired_method)
        unpaired = _with_bins(unpaired, thetae_bins)
        views = {("paired", "full"): paired, ("unpaired", "full"): unpaired,
                 ("paired", "10pct"): sample_view(paired, "paired", sample_fraction, strata, seed),
                 ("unpaired", "10pct"): sample_view(unpaired, "unpaired", sample_fraction, strata, seed)}
        summary: dict = {"version": MANIFEST_VERSION, "key": key, "data_root": str(root.resolve()),
                         "seed": seed, "sample_fraction": sample_fraction,
                         "thetae_bins": list(thetae_bins), "strata": list(strata),
                         "unpaired_method": "imported" if imported else unpaired_method,
                         "imported": imported.info if imported else None,
                         "shard_rows": index.shard_rows,
                         "bad_rows": {s: [b.__dict__ for b in bad] for s, bad in index.bad.items()},
                         "failed_rows": {s: [b.__dict__ for b in rows] for s, rows in index.failed.items()},
                         "shortfalls": [s.__dict__ for s in short], "views": {}}
        for (mode, sample), view in views.items():
            path = tmp / f"{mode}-{sample}.parquet"
            view.to_parquet(path, index=False)
            summary["views"][f"{mode}-{sample}"] = {"counts": split_counts(view), "repeats": repeated_draws(view),
                                                    "sha256": file_sha256(path)}
        for mode in DATA_MODES:
            summary["views"][f"{mode}-10pct"]["shares"] = strata_shares(
                views[(mode, "full")], views[(mode, "10pct")], strata)
        summary["build_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))

    built = build_dir_once(final, build)
    summary = json.loads((final / SUMMARY_FILE).read_text())
    return ManifestSet(final, key, summary, built)


UNPAIRED_DESCRIPTIONS = {
    "origin": "the published builder's rules: each split's LRGs halved at random, non-lenses matched per "
              "(psf_bin, depth_bin) cell, with replacement where a cell is short",
    "per_cell": "LRGs halved per (psf_bin, depth_bin) cell, non-lenses matched without replacement, "
                "lenses dropped where a cell is short",
    "imported": "exactly the rows of an origin manifest",
}


def report(ms: ManifestSet) -> str:
    """Everything the CLI prints: the §2 tables per view (rows, and distinct images beside them),
    how the unpaired view was made, failed and bad rows, and the strata shares."""
    s = ms.summary
    parts = [f"manifests: {ms.directory} ({'built in %.1f s' % s['build_seconds'] if ms.built else 'cached'}; "
             f"seed {s['seed']}, sample fraction {s['sample_fraction']:g})",
             f"unpaired view: {s['unpaired_method']}, {UNPAIRED_DESCRIPTIONS[s['unpaired_method']]}"]
    if s.get("imported"):
        imp = s["imported"]
        origin = imp.get("origin_metadata") or {}
        parts.append(f"  imported from {imp['source']} ({imp['format']}"
                     + (f", seed {origin['seed']}, made {origin.get('created_date', '?')}" if "seed" in origin else "")
                     + ")")
        for d in imp["dropped"][:10]:
            parts.append(f"  dropped {d['manifest']} -> {d['shard']} row {d['row']}: {d['reason']}")
    for mode in DATA_MODES:
        for sample in ("full", "10pct"):
            name = "full dataset" if sample == "full" else f"{100 * s['sample_fraction']:g}% sample"
            view = s["views"][f"{mode}-{sample}"]
            parts.append(format_counts(f"\n{mode}, {name} ({ms.path(mode, sample).name})", view["counts"],
                                       view["repeats"] if mode == "unpaired" else None,
                                       distinct_counts(ms.entries(mode, sample))))
    parts.append("(distinct: a control per LRG, a lens image per (LRG, replicate): selection sets repeat "
                 "an injection byte for byte; Drawn twice: entries that repeat a row already drawn, a row drawn "
                 "three times counts twice.)")
    if s["shortfalls"]:
        parts.append("\nunpaired cells short of negatives:\n" + "\n".join(
            "  " + Shortfall(**x).describe() for x in s["shortfalls"]))
    for split in SPLITS:
        failed = ms.failed_rows(split)
        if failed:
            parts.append(f"\n{split}: {len(failed)} rows the pipeline marked as failed, left out of every view "
                         f"(not bad rows): " + "; ".join(b.describe() for b in failed[:10])
                         + (" …" if len(failed) > 10 else ""))
        bad = ms.bad_rows(split)
        if bad:
            parts.append(f"\n{split}: {len(bad)} bad rows left out of the manifests (of "
                         f"{s['shard_rows'][split]}): " + "; ".join(b.describe() for b in bad[:10])
                         + (" …" if len(bad) > 10 else ""))
    for mode in DATA_MODES:
        parts.append("\n" + format_shares(f"{mode} sample vs full: stratum shares",
                                          s["views"][f"{mode}-10pct"]["shares"]))
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.manifest", description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="folder with train/, val/, test/ shards")
    parser.add_argument("--out", help="manifest cache folder (default: the cache folder's manifests/; "
                        "engine/data/cachedir.py says where that is)")
    parser.add_argument("--config", help="experiments.toml to take the settings from "
                        "(default: ./experiments.toml when present)")
    parser.add_argument("--host", help="also take this host's cache_dir and its dataset's unpaired_manifest")
    parser.add_argument("--seed", type=int, help="seed of the unpaired split and the sample "
                        "(default: sampling.seed of the config, else 42)")
    parser.add_argument("--fraction", type=float, help="sample fraction (default: sampling.sample_fraction "
                        "of the config, else 0.10)")
    parser.add_argument("--unpaired-method", choices=UNPAIRED_METHODS,
                        help="how the unpaired view is drawn (default: sampling.unpaired_method, else origin)")
    parser.add_argument("--unpaired-manifest", help="an origin manifest (v1 .parquet or v2 folder) whose rows "
                        "make the unpaired view (default: the host dataset's unpaired_manifest)")
    parser.add_argument("--bad-row-limit", type=float, help="largest share of bad rows per split that is dropped "
                        "rather than an error (default: data.bad_row_limit of the config, else 0.001)")
    args = parser.parse_args(argv)
    try:
        _, settings = settings_for_command(args.config, args.host)
        origin = settings.source
        overrides = {k: v for k, v in (("seed", args.seed), ("sample_fraction", args.fraction),
                                       ("unpaired_method", args.unpaired_method),
                                       ("unpaired_manifest", args.unpaired_manifest)) if v is not None}
        if args.bad_row_limit is not None:
            overrides.update(bad_row_limit=args.bad_row_limit, bad_row_limit_setting="--bad-row-limit")
        settings = replace(settings, **overrides)
        out = Path(args.out) if args.out else None
        if out is None:
            cache = resolve_cache_dir(args.data_root, settings.cache_dir, setting=settings.cache_dir_setting)
            out = cache.manifests
        ms = build_manifests(args.data_root, out, **settings.manifest_options())
        print(report(ms))
        print(f"\nsettings from {origin}" + (f"; command-line: {', '.join(overrides)}" if overrides else ""))
        ms.check_bad_rows(settings.bad_row_limit, settings.bad_row_limit_setting)
    except (ConfigError, ManifestError, CacheError, ShardError, BadRowsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
