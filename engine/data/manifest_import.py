"""The published pipeline's unpaired manifests, imported as the unpaired view of a data root.

Runs made before lenstui trained on manifests written by the origin's builders. Importing one
lets B-runs use exactly its LRG halves, so their results compare with the runs made with it.
Two formats exist:

- v1 (the first builder): one Parquet file, a row per example with its image embedded:
  `blob` (the NPZ bytes), `label`, `split`, `ra`, `dec` (+ `_lrg_id`, `theta_e_arcsec`).
- v2 (metadata only): a folder of `split=<split>/part-NNNN.parquet` (+ `_metadata.json`) with
  `label`, `blob_type` (`stamp_npz` or `ctrl_stamp_npz`), `_source_file` (an absolute path on the
  host that built it), `_row_idx`, `ra`, `dec`, `psf_bin`, `depth_bin`, `theta_e_arcsec` (NaN for
  non-lenses), `_lrg_id`.

Every row becomes a (shard, row, blob) entry of the data root and is checked against the shards:
a v2 row's `_source_file` is found by its last two parts (`<split>/<file>`) under the data root,
its row must exist and hold the LRG the manifest names; a v1 row's blob must be byte-identical
to the stamp (lens) or control (non-lens) of a row of that LRG in that split. A row that points
nowhere is a ManifestError naming the manifest file and row. Rows the index left out (a failed
cut-out, a missing value) are dropped and listed, as at index time. θ_E, bins and LRG id come
from the shard row, so a non-lens carries its row's θ_E as in the engine's own views.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.config import SPLITS
from engine.data import shards
from engine.data.manifest import ManifestError, describe_lrg, lrg_ids

BLOB_TYPES = {"stamp_npz": "stamp", "ctrl_stamp_npz": "ctrl"}
LABEL_OF_BLOB = {"stamp": 1, "ctrl": 0}
V1_COLUMNS = ("blob", "label", "split", "ra", "dec")
V2_COLUMNS = ("label", "blob_type", "_source_file", "_row_idx", "ra", "dec")
MAX_LISTED = 10


@dataclass(frozen=True)
class Imported:
    """An origin manifest mapped onto a data root: the entries, and what the import found."""

    entries: pd.DataFrame   # split, shard, row, blob, label + the index columns of each row
    info: dict              # source, format, rows per split, dropped rows, the origin's own metadata


def manifest_format(path: Path) -> str:
    """"v1" or "v2"; otherwise a ManifestError saying what an origin manifest looks like."""
    if path.is_dir():
        if any(path.glob("split=*/*.parquet")):
            return "v2"
        raise ManifestError(f"{path}: no split=<split>/*.parquet inside; an origin manifest is a v2 folder "
                           "(split=train/, split=val/, split=test/ of part-*.parquet) or a v1 .parquet file")
    if path.is_file():
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise ManifestError(f"{path}: not a Parquet file ({exc}); an origin v1 manifest is one") from None
        missing = [c for c in V1_COLUMNS if c not in names]
        if missing:
            raise ManifestError(f"{path}: lacks {', '.join(missing)}; an origin v1 manifest has the columns "
                               f"{', '.join(V1_COLUMNS)}")
        return "v1"
    raise ManifestError(f"{path}: no such file or folder (the origin manifest to import)")


def source_files(path: Path) -> list[Path]:
    """The files that make the manifest (their names, sizes and mtimes key the imported view)."""
    if manifest_format(path) == "v1":
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def import_unpaired(path: str | Path, data_root: str | Path, index_rows: pd.DataFrame,
                    excluded: dict[tuple[str, int], str]) -> Imported:
    """Map the origin manifest at `path` onto `data_root`'s index.

    `index_rows` are the usable rows (manifest.read_index); `excluded` maps (shard, row) of the
    rows the index left out to why (failed cut-out, missing value).
    """
    path = Path(path)
    fmt = manifest_format(path)
    located = _locate_v2(path, data_root, index_rows) if fmt == "v2" else _locate_v1(path, data_root, index_rows)
    found = located.merge(index_rows, on=["shard", "row"], how="left", suffixes=("", "_index"))
    problems, dropped = [], []
    for i in np.flatnonzero(found["lrg_id"].isna().to_numpy()):
        f = found.iloc[i]
        reason = excluded.get((f["shard"], int(f["row"])))
        if reason is None:
            problems.append(f"{f['where']}: points at {f['shard']} row {int(f['row'])}, which the index does not hold")
        else:
            dropped.append({"manifest": f["where"], "shard": f["shard"], "row": int(f["row"]), "reason": reason})
    found = found[found["lrg_id"].notna()].reset_index(drop=True)
    lrg = found["lrg_id"].astype(np.int64).to_numpy()
    wrong = np.flatnonzero(lrg != found["manifest_lrg"].to_numpy())
    for i in wrong[:MAX_LISTED]:
        f = found.iloc[i]
        problems.append(f"{f['where']}: names LRG {describe_lrg(f['manifest_lrg'])} but {f['shard']} row "
                        f"{int(f['row'])} holds LRG {describe_lrg(lrg[i])}: the manifest was made from other data")
    wrong_split = np.flatnonzero(found["split"].astype(str).to_numpy() != found["manifest_split"].to_numpy())
    for i in wrong_split[:MAX_LISTED]:
        f = found.iloc[i]
        problems.append(f"{f['where']}: is in the manifest's {f['manifest_split']} split but points at "
                        f"{f['shard']}, a shard of {f['split']}")
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ManifestError(f"the origin manifest {path} does not match the shards of {data_root}: "
                           + "; ".join(problems[:MAX_LISTED]) + more)
    _check_disjoint(found, path)
    # The index's dtypes again (a left merge with misses made them float).
    entries = found.assign(
        lrg_id=lrg, label=found["label"].astype(np.uint8), row=found["row"].astype(index_rows["row"].dtype),
        theta_e=found["theta_e"].astype(np.float32), psf_bin=found["psf_bin"].astype(np.int8),
        depth_bin=found["depth_bin"].astype(np.int8), replicate=found["replicate"].astype(np.int16),
        blob=pd.Categorical(found["blob"], categories=["ctrl", "stamp"]))
    rows = {s: int(np.count_nonzero(entries["split"].astype(str) == s)) for s in SPLITS}
    info = {"source": str(path.resolve()), "format": fmt, "rows": rows, "dropped": dropped,
            "origin_metadata": _metadata(path) if fmt == "v2" else None}
    keep = ["split", "shard", "row", "blob", "label", "theta_e", "psf_bin", "depth_bin", "lrg_id", "replicate"]
    return Imported(entries[keep], info)


def _check_disjoint(found: pd.DataFrame, path: Path) -> None:
    for split in SPLITS:
        part = found[found["split"].astype(str) == split]
        both = set(part.loc[part["label"] == 1, "lrg_id"]) & set(part.loc[part["label"] == 0, "lrg_id"])
        if both:
            lrg = sorted(both)[0]
            raise ManifestError(f"the origin manifest {path} is not unpaired: in {split}, {len(both)} LRGs give both "
                               f"lenses and non-lenses (e.g. LRG {describe_lrg(lrg)}); an unpaired view needs "
                               "disjoint LRGs")


def _metadata(path: Path) -> dict | None:
    meta = path / "_metadata.json"
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _lrg_of(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return lrg_ids(np.asarray(ra, np.float64), np.asarray(dec, np.float64))


# ---------------------------------------------------------------------------
# v2: pointers to (file, row)


def _locate_v2(path: Path, data_root: str | Path, index_rows: pd.DataFrame) -> pd.DataFrame:
    """Per manifest row: its split, the shard it names (relative to data_root), row, blob, label, LRG."""
    names = set(index_rows["shard"].cat.categories)
    sizes: dict[str, int] = {}
    frames, problems = [], []
    for split in SPLITS:
        parts = sorted((path / f"split={split}").glob("*.parquet"))
        if not parts:
            raise ManifestError(f"{path}: no split={split}/*.parquet; an origin v2 manifest has one folder per split")
        for part in parts:
            try:
                table = pq.read_table(part, columns=list(V2_COLUMNS))
            except (pa.ArrowException, OSError) as exc:
                raise ManifestError(f"{part}: cannot read it as an origin v2 manifest part ({exc}); it needs the "
                                   f"columns {', '.join(V2_COLUMNS)}") from None
            df = table.to_pandas()
            where = [f"{part.relative_to(path).as_posix()} row {i}" for i in range(len(df))]
            shard = [Path(str(s)).parent.name + "/" + Path(str(s)).name for s in df["_source_file"]]
            blob = df["blob_type"].map(BLOB_TYPES)
            for i in range(len(df)):
                if shard[i] not in names:
                    problems.append(f"{where[i]}: _source_file {df['_source_file'][i]} names no shard of "
                                    f"{data_root} (looked for {Path(data_root) / shard[i]})")
                elif pd.isna(blob[i]):
                    problems.append(f"{where[i]}: blob_type {df['blob_type'][i]!r} is not one of "
                                    f"{', '.join(BLOB_TYPES)}")
                elif LABEL_OF_BLOB[blob[i]] != int(df["label"][i]):
                    problems.append(f"{where[i]}: label {int(df['label'][i])} with blob_type {df['blob_type'][i]}")
                else:
                    if shard[i] not in sizes:
                        sizes[shard[i]] = shards.shard_num_rows(Path(data_root) / shard[i])
                    if not 0 <= int(df["_row_idx"][i]) < sizes[shard[i]]:
                        problems.append(f"{where[i]}: _row_idx {int(df['_row_idx'][i])} is outside {shard[i]} "
                                        f"({sizes[shard[i]]} rows)")
                if len(problems) > MAX_LISTED:
                    break
            frames.append(pd.DataFrame({
                "where": where, "manifest_split": split, "shard": shard,
                "row": df["_row_idx"].to_numpy(np.int64), "blob": blob.to_numpy(), "label": df["label"].to_numpy(),
                "manifest_lrg": _lrg_of(df["ra"], df["dec"])}))
    if problems:
        more = " (and more)" if len(problems) > MAX_LISTED else ""
        raise ManifestError(f"the origin manifest {path} points outside the shards of {data_root}: "
                           + "; ".join(problems[:MAX_LISTED]) + more)
    return _typed(pd.concat(frames, ignore_index=True), index_rows)


def _typed(located: pd.DataFrame, index_rows: pd.DataFrame) -> pd.DataFrame:
    """Shard as the index's categorical, so the merge joins on codes."""
    located["shard"] = pd.Categorical(located["shard"], categories=index_rows["shard"].cat.categories)
    located["row"] = located["row"].astype(index_rows["row"].dtype)
    return located


# ---------------------------------------------------------------------------
# v1: embedded blobs, matched to the shards by their bytes


def _digest(blob: bytes | None) -> bytes:
    return hashlib.sha256(b"" if blob is None else bytes(blob)).digest()


def _locate_v1(path: Path, data_root: str | Path, index_rows: pd.DataFrame) -> pd.DataFrame:
    """Per manifest row: the shard row of its LRG and split whose blob has exactly its bytes.

    An LRG's rows share one control, and the pipeline repeats each injection across selection
    sets, so several rows can hold the same bytes: the manifest's rows take them in turn (shard,
    row order), so a manifest that used distinct rows maps onto distinct rows.
    """
    parquet = pq.ParquetFile(path)
    frames = []
    for batch in parquet.iter_batches(columns=list(V1_COLUMNS), batch_size=1024):
        frames.append(pd.DataFrame({
            "manifest_split": batch.column("split").to_pylist(), "label": batch.column("label").to_numpy(),
            "manifest_lrg": _lrg_of(batch.column("ra").to_numpy(), batch.column("dec").to_numpy()),
            "digest": [_digest(b) for b in batch.column("blob").to_pylist()]}))
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["manifest_split", "label", "manifest_lrg", "digest"])
    manifest["where"] = [f"{path.name} row {i}" for i in range(len(manifest))]
    bad_split = ~manifest["manifest_split"].isin(SPLITS)
    if bad_split.any():
        i = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise ManifestError(f"{path} row {i}: split {manifest['manifest_split'][i]!r} is not one of "
                           f"{', '.join(SPLITS)}")
    manifest["blob"] = np.where(manifest["label"].to_numpy() == 1, "stamp", "ctrl")
    # Which shard rows can hold each (split, kind, digest): the rows of the LRGs the manifest names.
    wanted = {(s, b, lrg) for s, b, lrg in zip(manifest["manifest_split"], manifest["blob"], manifest["manifest_lrg"])}
    candidates: dict[tuple[str, str, bytes], list[tuple[str, int]]] = {}
    rows = index_rows.assign(split_name=index_rows["split"].astype(str), shard_name=index_rows["shard"].astype(str))
    for shard_name, group in rows.groupby("shard_name", sort=True):
        split = group["split_name"].iloc[0]
        need = {kind: group["row"].to_numpy()[[(split, kind, l) in wanted for l in group["lrg_id"]]]
                for kind in ("stamp", "ctrl")}
        if not any(len(v) for v in need.values()):
            continue
        table = shards.read_columns(Path(data_root) / shard_name, [shards.BLOB_COLUMNS[k] for k in need])
        for kind, rows_needed in need.items():
            column = table.column(shards.BLOB_COLUMNS[kind])
            for r in np.sort(rows_needed):
                key = (split, kind, _digest(column[int(r)].as_py()))
                candidates.setdefault(key, []).append((shard_name, int(r)))
    used: dict[tuple[str, str, bytes], int] = {}
    shard_col, row_col, problems = [], [], []
    for where, split, kind, digest in zip(manifest["where"], manifest["manifest_split"], manifest["blob"],
                                          manifest["digest"]):
        key = (split, kind, digest)
        options = candidates.get(key)
        if not options:
            problems.append(f"{where}: no row of {split} in {data_root} holds this "
                            f"{'stamp' if kind == 'stamp' else 'control'} ({shards.BLOB_COLUMNS[kind]} bytes differ)")
            shard_col.append(None)
            row_col.append(-1)
            continue
        k = used.get(key, 0)
        used[key] = k + 1
        shard_name, r = options[k % len(options)]
        shard_col.append(shard_name)
        row_col.append(r)
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ManifestError(f"the origin manifest {path} does not match the shards of {data_root}: "
                           + "; ".join(problems[:MAX_LISTED]) + more)
    located = manifest.assign(shard=shard_col, row=np.asarray(row_col, np.int64))
    return _typed(located[["where", "manifest_split", "shard", "row", "blob", "label", "manifest_lrg"]], index_rows)
