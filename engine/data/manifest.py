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
from engine.data.manifest_report import report, repeated_draws, split_counts, strata_shares
from engine.data.shards import BadRow, BadRowsError, ShardError
from engine.data.views import ordered_entries, paired_view, sample_view, unpaired_view, with_bins

MANIFEST_VERSION = 3   # 2: failed cut-outs excluded at index time; the origin's unpaired method;
SUMMARY_FILE = "summary.json"

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


def lrg_ra_dec(lrg_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of ids made by `lrg_ids`: its inverse (to the 6 decimals the id keeps)."""
    ids = np.asarray(lrg_id, np.int64)
    return (ids >> _DEC_BITS) / 1e6, (ids & ((1 << _DEC_BITS) - 1)) / 1e6 - 90.0


def describe_lrg(lrg_id: int) -> str:
    """'ra=150.123456 dec=-2.345678' for an id made by `lrg_ids`."""
    ra, dec = lrg_ra_dec(np.array([int(lrg_id)]))
    return f"ra={ra[0]:.6f} dec={dec[0]:.6f}"


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
        paired = with_bins(paired_view(index.rows), thetae_bins)
        imported = None
        if unpaired_manifest is not None:
            from engine.data.manifest_import import import_unpaired

            excluded = {(b.shard, b.row): b.reason for part in (index.bad, index.failed)
                        for rows in part.values() for b in rows}
            imported = import_unpaired(unpaired_manifest, root, index.rows, excluded)
            unpaired, short = ordered_entries(imported.entries), ()
        else:
            unpaired, short = unpaired_view(index.rows, seed, unpaired_method)
        unpaired = with_bins(unpaired, thetae_bins)
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


# The data check (`python -m engine.gates --matrix --record`) of exactly one manifest set, in its folder.
DATA_CHECK = "data-check.json"


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
    parser.add_argument("--check", action="store_true",
                        help="build nothing: print one JSON line saying whether these manifests are built "
                        "(lenstui's plan reads it for Phase 1's steps 1.1 and 1.2)")
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
        if args.check:
            if not Path(args.data_root).is_dir():
                print(json.dumps({"present": False, "path": None, "dataset_missing": True,
                                  "why": f"no dataset at {args.data_root}"}))
                return exitcodes.OK
            key = manifest_key(args.data_root, **{k: v for k, v in settings.manifest_options().items()
                                                  if k in ("seed", "sample_fraction", "thetae_bins", "strata",
                                                           "unpaired_method", "unpaired_manifest")})
            final = out / key
            present = (final / SUMMARY_FILE).is_file()
            check = final / DATA_CHECK
            data_check = json.loads(check.read_text()) if present and check.is_file() else None
            print(json.dumps({"present": present, "path": str(final), "data_check": data_check,
                              "why": "built" if present else "not built for these settings yet"}))
            return exitcodes.OK
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
