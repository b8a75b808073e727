"""Real data, as the pipeline writes it: the origin fixture through manifests, import, gates and training.

`shared/fixtures/origin-v5-paired/` was written by the published pipeline's own Spark jobs, and
`origin-v5-paired-manifest/` by its own manifest builder (tests/origin_fixture.py). A user's
story: index the astronomer's shards (a failed cut-out among them), get the unpaired view the
published builder would have made, import the manifest the earlier runs used, measure the gates
and train on it, with the bad-row limit and the cache folder the config gives, on a data folder
this user cannot write.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import SPLITS
from engine.data import shards
from engine.data.cachedir import resolve_cache_dir
from engine.files import CacheError
from engine.data.manifest import ManifestError, build_manifests, read_index
from engine.data.shards import BadRow
from origin_fixture import (GPU_HOST_ROOT, ORIGIN_MANIFEST_COUNTS, ROWS, add_failed_cutout_row, copy_origin_data,
                            origin_data, origin_manifest)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("LENSTUI_RUN_LOCK_FD", None)
FAILED_ROW = 74     # train/part-00000 holds 74 rows; the failed cut-out is appended as the 75th


def _first_shard(root: Path, split: str) -> Path:
    return sorted((root / split).glob("*.parquet"))[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A copy of the origin data with a failed cut-out (of train/part-00000's first LRG) appended."""
    root = copy_origin_data(tmp_path_factory.mktemp("origin") / "v5_cosmos_paired")
    assert add_failed_cutout_row(_first_shard(root, "train"), like_row=0) == FAILED_ROW
    return root


def _origin_rows(split: str) -> pd.DataFrame:
    df = pd.concat([pd.read_parquet(p) for p in sorted((origin_manifest() / f"split={split}").glob("*.parquet"))],
                   ignore_index=True)
    return df.assign(shard=[f"{split}/{Path(f).name}" for f in df["_source_file"]])


def _keys(entries: pd.DataFrame) -> list[tuple[str, int, int]]:
    return sorted(zip(entries["shard"].astype(str), entries["row"].astype(int), entries["label"].astype(int)))


# ---------------------------------------------------------------------------
# Index time: failed cut-outs


def test_a_failed_cutout_is_left_out_at_index_time_without_decoding_and_reported(data, tmp_path, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("indexing decoded a blob")

    monkeypatch.setattr(shards, "decode_blob", no_decoding)
    index = read_index(data)
    shard = _first_shard(data, "train").relative_to(data).as_posix()
    assert index.failed == {"train": (BadRow(shard, FAILED_ROW, "failed cut-out (cutout_ok = 0)"),),
                            "val": (), "test": ()}
    assert index.bad == {"train": (), "val": (), "test": ()}
    assert index.shard_rows == {"train": ROWS["train"] + 1, "val": ROWS["val"], "test": ROWS["test"]}
    ms = build_manifests(data, tmp_path / "m")
    paired = ms.entries("paired", "full", "train")
    assert len(paired) == 2 * ROWS["train"] and not ((paired["shard"] == shard) & (paired["row"] == FAILED_ROW)).any()
    assert [b.row for b in ms.failed_rows("train")] == [FAILED_ROW]
    monkeypatch.undo()
    cli = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(data), "--out",
                          str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert (f"train: 1 rows the pipeline marked as failed, left out of every view (not bad rows): {shard} row "
            f"{FAILED_ROW}: failed cut-out (cutout_ok = 0)") in cli.stdout


def test_without_the_marker_the_failed_cutout_would_be_a_bad_row_over_the_limit(data, tmp_path):
    # What the engine did before: the row decodes as a bad blob, 1 of 650 paired entries > 0.1%.
    from engine.data.load import load_split

    blob = pq.read_table(_first_shard(data, "train"), columns=["stamp_npz"]).column(0)[FAILED_ROW].as_py()
    with pytest.raises(shards.BlobError, match="no image_g/image_r/image_z or 'img' key"):
        shards.decode_blob(blob)
    a = load_split(data, mode="paired", sample="full", split="train", preprocessing="raw_robust",
                   cache_dir=tmp_path / "cache")
    assert a.bad_rows == () and len(a) == 2 * ROWS["train"] and a.info["failed_rows"] == 1
    assert a.bad_rows_summary()["failed_cutouts"] == 1


# ---------------------------------------------------------------------------
# The unpaired view by the origin's rules


def test_the_origin_method_gives_the_origins_own_manifest_row_for_row(data, tmp_path):
    ms = build_manifests(data, tmp_path / "m", seed=42)
    assert ms.unpaired_method == "origin"
    view = ms.entries("unpaired", "full")
    for split, (lenses, non_lenses) in ORIGIN_MANIFEST_COUNTS.items():
        mine = view[view["split"] == split]
        assert _keys(mine) == _keys(_origin_rows(split).rename(columns={"_row_idx": "row"})), split
        assert ms.summary["views"]["unpaired-full"]["counts"][split] == {
            "total": lenses + non_lenses, "positive": lenses, "negative": non_lenses}


def test_each_rule_of_the_origin_method_holds(data, tmp_path):
    ms = build_manifests(data, tmp_path / "m", seed=42)
    view, index = ms.entries("unpaired", "full"), read_index(data).rows
    notes = ms.summary["shortfalls"]
    outcomes = set()
    for split in ("train", "val", "test"):
        v, rows = view[view["split"] == split], index[index["split"] == split]
        pos, neg = v[v["label"] == 1], v[v["label"] == 0]
        # 1. Each split's LRGs halved at random into disjoint lens and non-lens pools.
        lrgs = set(rows["lrg_id"])
        assert set(pos["lrg_id"]).isdisjoint(neg["lrg_id"])
        assert pos["lrg_id"].nunique() == len(lrgs) // 2
        lens_lrgs = set(pos["lrg_id"])
        assert len(pos) == rows["lrg_id"].isin(lens_lrgs).sum()       # every row of a lens LRG
        assert set(neg["lrg_id"]) <= lrgs - lens_lrgs
        # 2. Non-lenses matched per (psf_bin, depth_bin) to the lens count: with replacement where
        #    a cell is short, none where it has no non-lens row.
        pool = rows[~rows["lrg_id"].isin(lens_lrgs)].groupby(["psf_bin", "depth_bin"]).size()
        for (psf, depth), n_pos in pos.groupby(["psf_bin", "depth_bin"]).size().items():
            drawn = neg[(neg["psf_bin"] == psf) & (neg["depth_bin"] == depth)]
            available = int(pool.get((psf, depth), 0))
            repeats = len(drawn) - len(drawn.drop_duplicates(["shard", "row"]))
            note = [n for n in notes if (n["split"], n["psf_bin"], n["depth_bin"]) == (split, psf, depth)]
            if available == 0:
                assert len(drawn) == 0 and note[0]["outcome"] == "unmatched" and note[0]["positives"] == n_pos
            elif available < n_pos:
                assert len(drawn) == n_pos and repeats > 0 and note[0]["outcome"] == "repeated"
                assert note[0]["repeats"] == repeats
            else:
                assert len(drawn) == n_pos and repeats == 0 and note == []
            outcomes.update(n["outcome"] for n in note)
        # 3. The §2 table says how many rows were drawn twice.
        assert ms.summary["views"]["unpaired-full"]["repeats"][split] == \
            len(neg) - len(neg.drop_duplicates(["shard", "row"]))
    assert outcomes == {"repeated", "unmatched"}       # the fixture shows both: train is 164 + 126
    cli = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(data), "--out",
                          str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Beside each count, the distinct images (a lens image per LRG and replicate, a control per LRG).
    assert "| Train | 290 | 164 (40) | 126 (12) | 62 |" in cli.stdout
    assert "| Split | Total | Positive (distinct) | Negative (distinct) | Drawn twice |" in cli.stdout


# ---------------------------------------------------------------------------
# Importing the origin's manifests


def test_the_distinct_image_counts_equal_the_pipelines_blob_bytes(data, tmp_path):
    """The effective sample of the §2 tables: the pipeline repeats an injection once per selection
    set and gives an LRG's rows one control, so 290 unpaired train rows hold 52 images."""
    import hashlib

    from engine.data.manifest_report import distinct_counts

    ms = build_manifests(data, tmp_path / "m", seed=42, sample_fraction=1.0)
    for mode in ("paired", "unpaired"):
        view = ms.entries(mode, "full")
        counted = distinct_counts(view)
        for split in SPLITS:
            digests: dict[int, set[str]] = {0: set(), 1: set()}
            part = view[view["split"] == split]
            for shard, rows in part.groupby("shard", observed=True):
                table = pq.read_table(data / shard, columns=["stamp_npz", "ctrl_stamp_npz"])
                for row, blob, label in zip(rows["row"], rows["blob"], rows["label"]):
                    column = "stamp_npz" if blob == "stamp" else "ctrl_stamp_npz"
                    digests[int(label)].add(hashlib.sha256(table.column(column)[int(row)].as_py()).hexdigest())
            assert counted[split] == {"positive": len(digests[1]), "negative": len(digests[0])}, (mode, split)
    assert distinct_counts(ms.entries("unpaired", "full"))["train"] == {"positive": 40, "negative": 12}


def test_the_origins_v2_manifest_imports_onto_a_data_root_with_another_path(data, tmp_path):
    assert all(str(f).startswith(GPU_HOST_ROOT) for f in _origin_rows("train")["_source_file"])
    ms = build_manifests(data, tmp_path / "m", unpaired_manifest=origin_manifest())
    assert ms.unpaired_method == "imported"
    assert ms.summary["imported"]["format"] == "v2" and ms.summary["imported"]["origin_metadata"]["seed"] == 42
    view = ms.entries("unpaired", "full")
    for split in ("train", "val", "test"):
        assert _keys(view[view["split"] == split]) == _keys(_origin_rows(split).rename(columns={"_row_idx": "row"}))
    # θ_E, bins and LRG come from the shard row (the origin stores NaN θ_E for its non-lenses).
    assert view["theta_e"].notna().all() and set(view["theta_e"]) <= {0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5}
    own = ms.entries("paired", "full")
    assert [str(view[c].dtype) for c in view.columns] == [str(own[c].dtype) for c in own.columns]
    assert ms.summary["views"]["unpaired-full"]["repeats"] == {"train": 62, "val": 20, "test": 38}


def _edited_manifest(tmp_path: Path, split: str, edit) -> Path:
    dest = tmp_path / "edited"
    for part in origin_manifest().rglob("*"):
        if part.is_file():
            target = dest / part.relative_to(origin_manifest())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(part.read_bytes())
    part = dest / f"split={split}" / "part-0000.parquet"
    df = pd.read_parquet(part)
    edit(df)
    df.to_parquet(part, index=False)
    return dest


@pytest.mark.parametrize("edit,message", [
    (lambda df: df.__setitem__("_row_idx", df["_row_idx"].where(df.index != 5, 999)),
     r"split=train/part-0000\.parquet row 5: _row_idx 999 is outside train/part-00000-\S+ \(75 rows\)"),
    (lambda df: df.__setitem__("_source_file", df["_source_file"].where(df.index != 3, "/home/ubuntu/x/train/gone.parquet")),
     r"split=train/part-0000\.parquet row 3: _source_file /home/ubuntu/x/train/gone\.parquet names no shard of .*"
     r"\(looked for .*train/gone\.parquet\)"),
    (lambda df: df.__setitem__("ra", df["ra"].where(df.index != 7, 1.0)),
     r"split=train/part-0000\.parquet row 7: names LRG ra=1\.000000 .* but train/part-\S+ row \d+ holds LRG"),
])
def test_a_manifest_row_that_points_nowhere_is_an_error_naming_file_and_row(data, tmp_path, edit, message):
    bad = _edited_manifest(tmp_path, "train", edit)
    with pytest.raises(ManifestError, match=message):
        build_manifests(data, tmp_path / "m", unpaired_manifest=bad)
    cli = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(data), "--out",
                          str(tmp_path / "m"), "--unpaired-manifest", str(bad)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 2 and re.search(message, cli.stderr) and "Traceback" not in cli.stderr


def _v1_from_v2(dest: Path, data: Path, corrupt_row: int | None = None) -> Path:
    """The origin's v1 format (blobs embedded) holding the same examples as its v2 manifest."""
    frames = []
    for split in ("train", "val", "test"):
        df = _origin_rows(split)
        blobs = []
        for shard, row, kind in zip(df["shard"], df["_row_idx"], df["blob_type"]):
            blobs.append(pq.read_table(data / shard, columns=[kind]).column(0)[int(row)].as_py())
        frames.append(pd.DataFrame({"blob": blobs, "label": df["label"], "split": split, "_lrg_id": df["_lrg_id"],
                                    "ra": df["ra"], "dec": df["dec"], "theta_e_arcsec": df["theta_e_arcsec"]}))
    v1 = pd.concat(frames, ignore_index=True)
    if corrupt_row is not None:
        blob = bytearray(v1.at[corrupt_row, "blob"])
        blob[-30] ^= 0xFF
        v1.at[corrupt_row, "blob"] = bytes(blob)
    pq.write_table(pa.Table.from_pandas(v1, preserve_index=False), dest)
    return dest


def test_a_v1_manifest_with_embedded_blobs_maps_onto_rows_with_the_same_bytes(data, tmp_path):
    v1 = _v1_from_v2(tmp_path / "unpaired_manifest.parquet", data)
    ms = build_manifests(data, tmp_path / "m", unpaired_manifest=v1)
    assert ms.summary["imported"]["format"] == "v1"
    view = ms.entries("unpaired", "full")
    source = pd.read_parquet(v1)
    assert len(view) == len(source)
    for split in ("train", "val", "test"):
        mine, theirs = view[view["split"] == split], source[source["split"] == split]
        assert sorted(mine["label"]) == sorted(theirs["label"])
        # Each entry's blob is byte-identical to a v1 row's of the same label and LRG.
        want = sorted((int(lab), bytes(b)) for lab, b in zip(theirs["label"], theirs["blob"]))
        got = sorted((int(e.label), pq.read_table(data / e.shard, columns=[shards.BLOB_COLUMNS[e.blob]])
                      .column(0)[int(e.row)].as_py()) for e in mine.itertuples())
        assert got == want, split
    broken = _v1_from_v2(tmp_path / "broken.parquet", data, corrupt_row=4)
    with pytest.raises(ManifestError, match=r"broken\.parquet row 4: no row of train in .* holds this stamp"):
        build_manifests(data, tmp_path / "m", unpaired_manifest=broken)


# ---------------------------------------------------------------------------
# The cache folder


def test_a_configured_cache_folder_that_cannot_be_written_names_the_key(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CacheError, match=r"a-file/cache: cannot write the cache folder .*hosts\.lambda\.cache_dir"):
        resolve_cache_dir(tmp_path, blocker / "cache", setting="hosts.lambda.cache_dir in experiments.toml")
    chosen = resolve_cache_dir(tmp_path, tmp_path / "elsewhere", setting="hosts.lambda.cache_dir in x.toml")
    assert chosen.path == tmp_path / "elsewhere" and "hosts.lambda.cache_dir" in chosen.reason


# ---------------------------------------------------------------------------
# Commands on a read-only data folder, with the config's settings


def _as_a_user_who_cannot_write(root: Path) -> list[str]:
    """A command prefix for a user without write access to `root` (made read-only here).

    As root, permissions do not bind; the command then runs without the capabilities that
    override them (setpriv), as an ordinary user would.
    """
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def _config(tmp_path: Path, *, data_root: Path, edits: dict[str, str], manifest: Path | None = None,
            cache_dir: Path | None = None) -> Path:
    text = (ROOT / "experiments.toml").read_text()
    for key, value in edits.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    text += (f'\n[datasets.origin]\nkind = "shards"\nroot = "{data_root}"\n'
             + (f'unpaired_manifest = "{manifest}"\n' if manifest else "")
             + f'\n[hosts.fixture]\ntransport = "local"\nwork_dir = "."\npython = "{sys.executable}"\n'
             f'runs_root = "{tmp_path / "runs"}"\ndataset = "origin"\n'
             + (f'cache_dir = "{cache_dir}"\n' if cache_dir else ""))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return path


TINY = {"gate_every_epochs": 1, "gate_n_samples": 40, "thetae_min_positives": 3, "batch_size": 32,
        "sample_fraction": 1.0}


def _corrupt_val_row(root: Path) -> tuple[str, int]:
    """Give one val stamp NaN pixels (a bad row the pipeline did not mark): 1 of 272 paired entries."""
    shard = _first_shard(root, "val")
    table = pq.read_table(shard)
    blobs = table.column("stamp_npz").to_pylist()
    with np.load(io.BytesIO(blobs[3])) as npz:
        bands = {k: npz[k].copy() for k in npz.files}
    bands["image_g"][10, 10] = np.nan
    buf = io.BytesIO()
    np.savez_compressed(buf, **bands)
    blobs[3] = buf.getvalue()
    i = table.schema.get_field_index("stamp_npz")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(blobs, pa.binary())), shard)
    return shard.relative_to(root).as_posix(), 3


@pytest.mark.slow
def test_the_bad_row_limit_of_the_config_is_honoured_by_train_gates_and_evaluate_on_a_read_only_folder(
        data, tmp_path):
    root = copy_origin_data(tmp_path / "v5_cosmos_paired")
    add_failed_cutout_row(_first_shard(root, "train"))
    shard, row = _corrupt_val_row(root)
    home = tmp_path / "home"
    home.mkdir()
    env = {**ENV, "HOME": str(home)}
    env.pop("XDG_CACHE_HOME", None)
    prefix = _as_a_user_who_cannot_write(root)
    strict = _config(tmp_path / "strict", data_root=root, edits=TINY)
    loose = _config(tmp_path / "loose", data_root=root, edits={**TINY, "bad_row_limit": 0.01})

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)

    gates = ["-m", "engine.gates", "--data-root", str(root), "--mode", "paired", "--preprocessing", "raw_robust",
             "--split", "val"]
    refused = run(*gates, "--config", str(strict))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (f"{shard} row {row}: stamp_npz: NaN/Inf pixels" in refused.stderr
            and f"raise the limit (data.bad_row_limit in {strict}) knowingly" in refused.stderr)
    measured = run(*gates, "--config", str(loose))
    assert measured.returncode == 0, measured.stderr
    # sample_fraction = 1.0 in the config: the "10pct" sample is every val row, 135 + 136 entries.
    assert re.search(r"\| paired\s+\| raw_robust \|\s+0 \|\s+40 \|", measured.stdout)
    assert f"settings from {loose}" in measured.stdout

    train = ["-m", "engine.train", "--experiment", "A1", "--host", "fixture", "--epochs", "1"]
    failed = run(*train, "--config", str(strict))
    assert failed.returncode == 1
    log = (tmp_path / "strict" / "runs" / "A1" / "stdout.log").read_text()
    assert "FAILED: bad data: val (paired/10pct blobs): 1 of 272 rows are bad" in log
    assert f"limit 0.10%, data.bad_row_limit in {strict}" in log

    done = run(*train, "--config", str(loose))
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "loose" / "runs" / "A1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "done"
    assert metrics["bad_rows"]["val"]["count"] == 1 and metrics["bad_rows"]["val"]["limit"] == 0.01
    assert metrics["bad_rows"]["val"]["rows"][0] == {"shard": shard, "row": row,
                                                     "reason": "stamp_npz: NaN/Inf pixels (1 of 12288)"}
    assert metrics["bad_rows"]["train"] == {"count": 0, "of": 648, "limit": 0.01, "failed_cutouts": 1, "rows": []}
    info = json.loads((run_dir / "run.json").read_text())
    # The data folder cannot be written: manifests and stamp caches went to the user's cache.
    cache_dir = info["data"]["train"]["cache_dir"]
    assert cache_dir.startswith(str(home / ".cache" / "lenstui")) and not (root / ".lenstui-cache").exists()
    assert info["data"]["train"]["count"] == 648 and info["data"]["train"]["failed_rows"] == 1
    assert "the data root cannot be written" in (run_dir / "stdout.log").read_text()

    evaluate = run("-m", "engine.evaluate", "--run", str(run_dir), "--split", "val", "--config", str(strict))
    assert evaluate.returncode == 1 and "data.bad_row_limit" in evaluate.stderr
    evaluate = run("-m", "engine.evaluate", "--run", str(run_dir), "--split", "val", "--config", str(loose))
    assert evaluate.returncode == 0, evaluate.stderr + (run_dir / "stdout.log").read_text()[-2000:]


@pytest.mark.slow
def test_the_origin_manifest_trains_b1_on_exactly_its_rows(data, tmp_path):
    cache = tmp_path / "cache"
    config = _config(tmp_path, data_root=data, edits=TINY, manifest=origin_manifest(), cache_dir=cache)
    proc = subprocess.run([sys.executable, "-m", "engine.train", "--experiment", "B1", "--host", "fixture",
                           "--epochs", "1", "--config", str(config)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    run_dir = tmp_path / "runs" / "B1"
    assert proc.returncode == 0, proc.stderr + (run_dir / "stdout.log").read_text()[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    for split, (lenses, non_lenses) in ORIGIN_MANIFEST_COUNTS.items():
        d = info["data"][split]
        assert (d["count"], d["positive"], d["negative"]) == (lenses + non_lenses, lenses, non_lenses), split
        assert d["unpaired_method"] == "imported" and d["cache_dir"] == str(cache)
        # The cache holds exactly the manifest's rows, repeats included, in its order.
        stamps = Path(d["cache"])
        entries = pd.read_parquet(d["manifest"])
        entries = entries[entries["split"] == split].reset_index(drop=True)
        with np.load(stamps / "meta.npz") as meta:
            used = entries.iloc[meta["entry"]]
        assert _keys(used) == _keys(_origin_rows(split).rename(columns={"_row_idx": "row"})), split
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "done"
    assert "unpaired view imported" in (run_dir / "stdout.log").read_text()


def test_training_reads_the_sample_the_configs_strata_and_method_make(data, tmp_path):
    # engine.train's data settings come from the config: its strata and unpaired method pick the manifest.
    import torch

    from engine.training.splits import load_device_split
    from engine.training.run_plan import make_plan

    config = _config(tmp_path, data_root=data, cache_dir=tmp_path / "cache",
                     edits={**TINY, "sample_fraction": 0.5, "stratify": '["label", "psf_bin"]',
                            "unpaired_method": '"per_cell"'})
    plan = make_plan(["--experiment", "B1", "--config", str(config), "--host", "fixture", "--device", "cpu"])
    assert plan.data_settings.strata == ("label", "psf_bin") and plan.data_settings.unpaired_method == "per_cell"
    split = load_device_split(plan.config, plan.experiment, plan.data_root, "train", torch.device("cpu"),
                              settings=plan.data_settings)
    summary = json.loads((Path(split.info["manifest"]).parent / "summary.json").read_text())
    assert summary["strata"] == ["label", "psf_bin"] and summary["sample_fraction"] == 0.5
    assert split.info["unpaired_method"] == "per_cell" and split.info["cache_dir"] == str(tmp_path / "cache")
    assert split.positives == len(split) - split.positives        # per_cell: exactly 50/50
