"""Index-only manifests: which (shard, row, blob) is which example, per data mode and sample.

    python -m engine.manifest --data-root ROOT [--out DIR] [--seed 42] [--fraction 0.10]

A manifest never holds pixels: one row per example with its split, shard (relative to
the data root), row, blob ("stamp" = lens, label 1; "ctrl" = non-lens, label 0), θ_E,
θ_E bin, psf_bin, depth_bin and LRG id. Four views are written: paired and unpaired,
each full and as the stratified sample (SCIENCE.md "Data modes"; docs/DATA.md says
every choice and why). They are Parquet: typed columns (no re-parsing of ids and
floats), a few MB even for the full data, and read back a split at a time.

Built once: the folder is keyed by the shard files (names, sizes, mtimes), the seed,
the fraction, the θ_E bins and the strata, and is published by an atomic rename
under a lock, so concurrent builders neither collide nor repeat the work.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from engine import shards
from engine.config import ConfigError, load_config
from engine.shards import BadRow, BadRowsError, ShardError

MANIFEST_VERSION = 1
MODES = ("paired", "unpaired")
SAMPLES = ("10pct", "full")
DEFAULT_THETAE_BINS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)
DEFAULT_STRATA = ("label", "theta_e_bin", "psf_bin", "depth_bin")
DEFAULT_FRACTION = 0.10
ENTRY_COLUMNS = ("split", "shard", "row", "blob", "label", "theta_e", "theta_e_bin",
                 "psf_bin", "depth_bin", "lrg_id")
SUMMARY_FILE = "summary.json"
MIN_STRATUM_FOR_SHARE = 100   # strata smaller than this are reported but not held to 1 pp

# An LRG id packs ra and dec, rounded to 6 decimals, into one int64 (ra·1e6 < 2^29,
# (dec+90)·1e6 < 2^28): exact, stable across runs, and reversible for messages.
_DEC_BITS = 28


class ManifestError(ValueError):
    """The data cannot make a valid manifest (e.g. an LRG in two splits); the message says which."""


class CacheError(ValueError):
    """A cache folder cannot be made or read; the message names it and what to do."""


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
    shard_rows: dict[str, int]                  # rows per split, bad ones included


def shard_files(data_root: str | Path) -> dict[str, list[Path]]:
    """Each split's shards; every split must exist and hold at least one shard."""
    root = Path(data_root)
    if not root.is_dir():
        raise ShardError(f"{root}: data root not found; make one with `python -m engine.synth --out "
                         f"{root} --scale 0.01` or point --data-root at the real shards")
    return {split: shards.list_shards(root, split) for split in shards.SPLITS}


def read_index(data_root: str | Path) -> ShardIndex:
    """The index columns of all shards; rows with a missing column or value are bad rows."""
    root = Path(data_root)
    frames, bad, counts, names = [], {}, {}, []
    for split_no, (split, files) in enumerate(shard_files(root).items()):
        split_bad: list[BadRow] = []
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
            table = shards.read_columns(path, shards.INDEX_COLUMNS)
            cols = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                    for c in shards.INDEX_COLUMNS}
            ok = np.ones(n, dtype=bool)
            for c in shards.INDEX_COLUMNS:
                finite = np.isfinite(cols[c])
                for r in np.flatnonzero(~finite & ok):
                    split_bad.append(BadRow(name, int(r), f"missing or non-finite value in {c}"))
                ok &= finite
            keep = np.flatnonzero(ok)
            frames.append(pd.DataFrame({
                "split": np.int8(split_no), "shard": np.int32(len(names) - 1), "row": keep.astype(np.int32),
                "theta_e": cols["theta_e_arcsec"][keep].astype(np.float32),
                "psf_bin": cols["psf_bin"][keep].astype(np.int8),
                "depth_bin": cols["depth_bin"][keep].astype(np.int8),
                "lrg_id": lrg_ids(cols["ra"][keep], cols["dec"][keep]),
            }))
        bad[split] = tuple(split_bad)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"split": np.zeros(0, np.int8), "shard": np.zeros(0, np.int32), "row": np.zeros(0, np.int32),
         "theta_e": np.zeros(0, np.float32),
         "psf_bin": np.zeros(0, np.int8), "depth_bin": np.zeros(0, np.int8), "lrg_id": np.zeros(0, np.int64)})
    # Categories, not strings: a million-row manifest sorts, filters and merges on codes.
    rows["split"] = pd.Categorical.from_codes(rows["split"].to_numpy(np.int8), categories=list(shards.SPLITS))
    rows["shard"] = pd.Categorical.from_codes(rows["shard"].to_numpy(np.int32), categories=names)
    check_no_leakage(rows)
    return ShardIndex(rows, bad, counts)


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
    """A (psf_bin, depth_bin) cell whose negative pool was smaller than its positives."""

    split: str
    psf_bin: int
    depth_bin: int
    positives: int
    negatives_available: int

    def describe(self) -> str:
        dropped = self.positives - self.negatives_available
        return (f"{self.split}: cell psf_bin={self.psf_bin} depth_bin={self.depth_bin} has "
                f"{self.positives} positives but {self.negatives_available} negatives: "
                f"{dropped} random positives dropped to keep the cell matched and 50/50")


def unpaired_view(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, tuple[Shortfall, ...]]:
    """Disjoint LRGs per split: half give their stamps, the other half their controls.

    Within each split and each (psf_bin, depth_bin) cell the LRGs are shuffled; the first
    half (rounded down) are positive LRGs (every row's stamp), the rest negative LRGs. For
    each cell, as many negatives as the cell has positives are drawn from the negative
    LRGs' control rows; a cell short of negatives keeps all it has and drops positives at
    random to the same count (matched and balanced beats either alone).
    """
    out, short = [], []
    for split_no, split in enumerate(shards.SPLITS):
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
        take_pos, take_neg = np.concatenate(take_pos), np.concatenate(take_neg)
        pos_rows = r.iloc[take_pos].assign(blob=_blob("stamp", len(take_pos)), label=np.uint8(1))
        neg_rows = r.iloc[take_neg].assign(blob=_blob("ctrl", len(take_neg)), label=np.uint8(0))
        out.extend([pos_rows, neg_rows])
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
    for split in shards.SPLITS:
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
    for split in shards.SPLITS:
        labels = view.loc[view["split"] == split, "label"].to_numpy()
        pos = int(np.count_nonzero(labels == 1))
        out[split] = {"total": int(len(labels)), "positive": pos, "negative": int(len(labels) - pos)}
    return out


def format_counts(title: str, counts: dict[str, dict[str, int]]) -> str:
    """A plan-§2 style table."""
    lines = [title, "| Split | Total | Positive | Negative |", "|-------|-------|----------|----------|"]
    for split, c in counts.items():
        lines.append(f"| {split.capitalize()} | {c['total']:,} | {c['positive']:,} | {c['negative']:,} |")
    return "\n".join(lines)


def distinct_counts(view: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {positive, negative}}: how many distinct images a view's rows hold (its effective size).

    From the index alone: a lens row's stamp is its own injection (one image per shard row),
    and all rows of one LRG carry byte-identical control blobs (the real pipeline and the
    synthetic twin both; docs/DATA.md), so a control is one image per LRG. Runs record the
    same count measured on the image bytes (metrics.json `effective_sample`).
    """
    out = {}
    for split in shards.SPLITS:
        v = view[view["split"] == split]
        stamps, ctrls = v[v["blob"] == "stamp"], v[v["blob"] == "ctrl"]
        out[split] = {"positive": int(len(stamps.drop_duplicates(["shard", "row"]))),
                      "negative": int(ctrls["lrg_id"].nunique())}
    return out


def format_counts_distinct(title: str, counts: dict[str, dict[str, int]],
                           distinct: dict[str, dict[str, int]]) -> str:
    """The plan-§2 table with each label's distinct images beside its row count."""
    lines = [title, "| Split | Total | Positive (distinct) | Negative (distinct) |",
             "|-------|-------|---------------------|---------------------|"]
    for split, c in counts.items():
        d = distinct.get(split, {})
        lines.append(f"| {split.capitalize()} | {c['total']:,} | {c['positive']:,} ({d.get('positive', 0):,}) | "
                     f"{c['negative']:,} ({d.get('negative', 0):,}) |")
    return "\n".join(lines)


def strata_shares(full: pd.DataFrame, sample: pd.DataFrame, keys: Sequence[str]) -> dict:
    """Each stratum's share (percent) in the sample next to the full set, per split.

    Returns {split: {"marginal": [...], "joint_strata": n, "joint_checked": n,
    "joint_max_delta_pp": x}}; joint strata with fewer than 100 members are not checked.
    """
    out = {}
    for split in shards.SPLITS:
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
# Building once, publishing atomically


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)   # the second builder waits, then finds it built
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_dir_once(final: Path, build: Callable[[Path], None]) -> bool:
    """Make `final` by calling build(tmp_dir) unless it exists; True when this call built it.

    A lock file beside it serialises builders; the build goes into a temp folder that
    is renamed into place, so a reader sees either nothing or the complete folder, and
    a builder that crashed leaves only a temp folder that the next builder removes.
    """
    if final.is_dir():
        return False
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{final.parent}: cannot create the cache folder ({exc.strerror}); point the cache "
                         "at a writable folder (cache_dir= / --cache-dir / --out)") from None
    with _locked(final.parent / f"{final.name}.lock"):
        if final.is_dir():
            return False
        for stale in final.parent.glob(f"{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


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
            if split not in shards.SPLITS:
                raise ValueError(f"unknown split {split!r}; expected one of {', '.join(shards.SPLITS)}")
            view = view[view["split"] == split].reset_index(drop=True)
        return view

    def bad_rows(self, split: str) -> tuple[BadRow, ...]:
        """Rows of `split` left out because an index column or value was missing."""
        return tuple(BadRow(**b) for b in self.summary["bad_rows"][split])

    def check_bad_rows(self, limit: float) -> None:
        """Raise BadRowsError when a split's index-time bad rows exceed `limit` (a fraction)."""
        for split in shards.SPLITS:
            check_bad_rows(self.bad_rows(split), self.summary["shard_rows"][split], limit, split)


def _check_view(mode: str, sample: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown data mode {mode!r}; expected one of {', '.join(MODES)}")
    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; expected one of {', '.join(SAMPLES)}")


def check_bad_rows(bad: Sequence[BadRow], total: int, limit: float, what: str) -> None:
    """Raise BadRowsError listing the bad rows when they exceed `limit` × `total`."""
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
                       f"limit {100.0 * limit:.2f}%): " + "; ".join(listed) + more +
                       ". Repair or remove those shards, or raise the limit (bad_row_limit) knowingly")


def manifest_key(data_root: str | Path, *, seed: int, sample_fraction: float,
                 thetae_bins: Sequence[float], strata: Sequence[str]) -> str:
    """The content key: every shard's name, size and mtime, and every knob of the views."""
    root = Path(data_root)
    files = []
    for split, paths in shard_files(root).items():
        for p in paths:
            st = p.stat()
            files.append([p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    knobs = {"version": MANIFEST_VERSION, "seed": seed, "fraction": float(sample_fraction),
             "thetae_bins": [float(b) for b in thetae_bins], "strata": list(strata), "files": files}
    return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:20]


def build_manifests(data_root: str | Path, out_dir: str | Path | None = None, *, seed: int = 42,
                    sample_fraction: float = DEFAULT_FRACTION,
                    thetae_bins: Sequence[float] = DEFAULT_THETAE_BINS,
                    strata: Sequence[str] = DEFAULT_STRATA) -> ManifestSet:
    """The four views for `data_root`, built once into `out_dir/<key>/` (default: the data root's cache)."""
    if not 0.0 < sample_fraction <= 1.0:
        raise ValueError(f"sample_fraction {sample_fraction} is outside (0, 1]; the plan's sample is 0.10")
    root = Path(data_root)
    out = Path(out_dir) if out_dir is not None else root / ".lenstui-cache" / "manifests"
    key = manifest_key(root, seed=seed, sample_fraction=sample_fraction, thetae_bins=thetae_bins, strata=strata)
    final = out / key

    def build(tmp: Path) -> None:
        started = time.perf_counter()
        index = read_index(root)
        paired = _with_bins(paired_view(index.rows), thetae_bins)
        unpaired, short = unpaired_view(index.rows, seed)
        unpaired = _with_bins(unpaired, thetae_bins)
        views = {("paired", "full"): paired, ("unpaired", "full"): unpaired,
                 ("paired", "10pct"): sample_view(paired, "paired", sample_fraction, strata, seed),
                 ("unpaired", "10pct"): sample_view(unpaired, "unpaired", sample_fraction, strata, seed)}
        summary: dict = {"version": MANIFEST_VERSION, "key": key, "data_root": str(root.resolve()),
                         "seed": seed, "sample_fraction": sample_fraction,
                         "thetae_bins": list(thetae_bins), "strata": list(strata),
                         "shard_rows": index.shard_rows,
                         "bad_rows": {s: [b.__dict__ for b in bad] for s, bad in index.bad.items()},
                         "shortfalls": [s.__dict__ for s in short], "views": {}}
        for (mode, sample), view in views.items():
            path = tmp / f"{mode}-{sample}.parquet"
            view.to_parquet(path, index=False)
            summary["views"][f"{mode}-{sample}"] = {"counts": split_counts(view), "sha256": file_sha256(path)}
        for mode in MODES:
            summary["views"][f"{mode}-10pct"]["shares"] = strata_shares(
                views[(mode, "full")], views[(mode, "10pct")], strata)
        summary["build_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))

    built = build_dir_once(final, build)
    summary = json.loads((final / SUMMARY_FILE).read_text())
    return ManifestSet(final, key, summary, built)


def report(ms: ManifestSet) -> str:
    """Everything the CLI prints: the §2 tables per view (rows, and distinct images beside them),
    shortfalls, bad rows and strata shares."""
    s = ms.summary
    parts = [f"manifests: {ms.directory} ({'built in %.1f s' % s['build_seconds'] if ms.built else 'cached'}; "
             f"seed {s['seed']}, sample fraction {s['sample_fraction']:g})"]
    for mode in MODES:
        for sample in ("full", "10pct"):
            name = "full dataset" if sample == "full" else f"{100 * s['sample_fraction']:g}% sample"
            parts.append(format_counts_distinct(f"\n{mode}, {name} ({ms.path(mode, sample).name})",
                                                s["views"][f"{mode}-{sample}"]["counts"],
                                                distinct_counts(ms.entries(mode, sample))))
    if s["shortfalls"]:
        parts.append("\nunpaired cells short of negatives:\n" + "\n".join(
            "  " + Shortfall(**x).describe() for x in s["shortfalls"]))
    for split in shards.SPLITS:
        bad = ms.bad_rows(split)
        if bad:
            parts.append(f"\n{split}: {len(bad)} bad rows left out of the manifests (of "
                         f"{s['shard_rows'][split]}): " + "; ".join(b.describe() for b in bad[:10])
                         + (" …" if len(bad) > 10 else ""))
    for mode in MODES:
        parts.append("\n" + format_shares(f"{mode} sample vs full: stratum shares",
                                          s["views"][f"{mode}-10pct"]["shares"]))
    return "\n".join(parts)


def _sampling_from_config(path: str | None) -> tuple[float, tuple[float, ...], tuple[str, ...], int, str]:
    """sample fraction, θ_E bins, strata, seed from experiments.toml when there is one."""
    candidate = Path(path) if path else Path("experiments.toml")
    if path is None and not candidate.is_file():
        return DEFAULT_FRACTION, DEFAULT_THETAE_BINS, DEFAULT_STRATA, 42, "built-in defaults"
    cfg = load_config(candidate)
    return (cfg.sampling.sample_fraction, cfg.metrics.thetae_bins, cfg.sampling.stratify,
            cfg.sampling.seed, str(candidate))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.manifest", description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="folder with train/, val/, test/ shards")
    parser.add_argument("--out", help="manifest cache folder (default: DATA_ROOT/.lenstui-cache/manifests)")
    parser.add_argument("--seed", type=int, help="seed of the unpaired split and the sample "
                        "(default: sampling.seed of the config, else 42)")
    parser.add_argument("--fraction", type=float, help="sample fraction (default: sampling.sample_fraction "
                        "of the config, else 0.10)")
    parser.add_argument("--config", help="experiments.toml to take the sampling settings from "
                        "(default: ./experiments.toml when present)")
    parser.add_argument("--bad-row-limit", type=float, default=0.001,
                        help="largest fraction of bad rows per split that is dropped rather than an error")
    args = parser.parse_args(argv)
    try:
        fraction, bins, strata, seed, origin = _sampling_from_config(args.config)
        fraction = args.fraction if args.fraction is not None else fraction
        seed = args.seed if args.seed is not None else seed
        ms = build_manifests(args.data_root, args.out, seed=seed, sample_fraction=fraction,
                             thetae_bins=bins, strata=strata)
        print(report(ms))
        print(f"\nsampling settings from {origin}")
        ms.check_bad_rows(args.bad_row_limit)
    except (ConfigError, ManifestError, CacheError, ShardError, BadRowsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
