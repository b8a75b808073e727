"""Manifests: the paired and unpaired views, the stratified sample, leakage refused, built once."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data_fixtures import tiny_rows, write_index_dataset, write_shard, write_tiny_dataset
from engine.data import manifest_report, views
from engine.data.manifest import ManifestError, build_manifests, describe_lrg, lrg_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Index-only data large enough for every stratum of ≥100 members to be held to 1 pp."""
    root = write_index_dataset(tmp_path_factory.mktemp("large") / "data",
                               rows={"train": 24_000, "val": 12_000, "test": 12_000}, seed=5)
    return build_manifests(root, seed=42)


def test_lrg_id_is_ra_dec_rounded_to_six_decimals():
    ids = lrg_ids(np.array([150.1234564, 150.1234566, 0.0, 359.999999]), np.array([-2.5, -2.5, -90.0, 90.0]))
    assert ids[0] != ids[1]                       # 150.123456 vs 150.123457
    assert lrg_ids(np.array([150.12345640001]), np.array([-2.5]))[0] == ids[0]
    assert describe_lrg(ids[0]) == "ra=150.123456 dec=-2.500000"
    assert describe_lrg(ids[3]) == "ra=359.999999 dec=90.000000"
    assert ids.dtype == np.int64 and ids.min() >= 0


def test_paired_view_gives_every_row_its_stamp_and_its_control(large):
    full = large.entries("paired", "full")
    for split, n in (("train", 24_000), ("val", 12_000), ("test", 12_000)):
        part = full[full["split"] == split]
        assert len(part) == 2 * n
        twins = part.assign(is_stamp=part["blob"] == "stamp").groupby(["shard", "row"])["is_stamp"]
        assert twins.size().eq(2).all() and twins.sum().eq(1).all()
    assert (full["label"] == (full["blob"] == "stamp")).all()
    assert large.summary["views"]["paired-full"]["counts"]["train"] == {
        "total": 48_000, "positive": 24_000, "negative": 24_000}


def test_paired_sample_keeps_both_twins_of_every_sampled_row(large):
    sample = large.entries("paired", "10pct")
    assert sample.groupby(["shard", "row"]).size().eq(2).all()
    counts = large.summary["views"]["paired-10pct"]["counts"]
    assert counts["train"] == {"total": 4_800, "positive": 2_400, "negative": 2_400}


def test_unpaired_positive_and_negative_lrgs_are_disjoint_and_matched_per_cell(large):
    assert large.unpaired_method == "origin"
    view = large.entries("unpaired", "full")
    for split in ("train", "val", "test"):
        v = view[view["split"] == split]
        pos, neg = v[v["label"] == 1], v[v["label"] == 0]
        assert set(pos["lrg_id"]).isdisjoint(set(neg["lrg_id"]))
        assert (pos["blob"] == "stamp").all() and (neg["blob"] == "ctrl").all()
        per_cell = v.groupby(["psf_bin", "depth_bin", "label"]).size().unstack("label")
        assert (per_cell[0] == per_cell[1]).all(), per_cell
        # roughly half the LRGs give positives, and nearly every row is used
        n_lrg = v["lrg_id"].nunique()
        assert abs(pos["lrg_id"].nunique() - n_lrg / 2) < 0.05 * n_lrg
        assert len(pos) > 0.45 * {"train": 24_000, "val": 12_000, "test": 12_000}[split]


def _one_cell(lrgs: list[int], cells: list[int] | None = None) -> pd.DataFrame:
    n = len(lrgs)
    return pd.DataFrame({
        "split": "train", "shard": "train/s.parquet", "row": np.arange(n, dtype=np.int32),
        "theta_e": np.float32(1.0), "psf_bin": np.int8(0),
        "depth_bin": np.array(cells or [0] * n, dtype=np.int8), "lrg_id": np.array(lrgs, dtype=np.int64)})


def test_per_cell_method_a_cell_short_of_negatives_drops_positives_and_says_so():
    # One cell, three LRGs of 1, 5 and 2 rows: whenever the 5-row LRG is the positive one,
    # the negative pool (the other two LRGs' controls) is short.
    rows = _one_cell([1, 2, 2, 2, 2, 2, 3, 3])
    for seed in range(20):
        view, short = views.unpaired_view(rows, seed, "per_cell")
        pos, neg = view[view["label"] == 1], view[view["label"] == 0]
        assert len(pos) == len(neg) > 0
        assert set(pos["lrg_id"]).isdisjoint(neg["lrg_id"])
        if short:
            assert short[0].positives > short[0].negatives_available == len(neg)
            assert "random positives dropped" in short[0].describe()
    assert any(views.unpaired_view(rows, s, "per_cell")[1] for s in range(20))


def test_origin_method_a_short_cell_draws_with_replacement_and_an_empty_one_none():
    # Three LRGs: 5 rows in cell 0, 1 row in cell 0, 2 rows in cell 1. The split is halved at
    # random (one lens LRG of three), then each row's cell is matched on its own.
    rows = _one_cell([1, 1, 1, 1, 1, 2, 3, 3], cells=[0, 0, 0, 0, 0, 0, 1, 1])
    outcomes = set()
    for seed in range(30):
        view, notes = views.unpaired_view(rows, seed, "origin")
        pos, neg = view[view["label"] == 1], view[view["label"] == 0]
        assert set(pos["lrg_id"]).isdisjoint(neg["lrg_id"]) and pos["lrg_id"].nunique() == 1
        for note in notes:
            outcomes.add(note.outcome)
            in_cell = neg[neg["depth_bin"] == note.depth_bin]
            if note.outcome == "repeated":       # as many non-lenses as lenses, some rows twice
                assert len(in_cell) == note.positives > note.negatives_available
                assert note.repeats == len(in_cell) - len(in_cell.drop_duplicates(["shard", "row"])) > 0
                assert "drawn with replacement" in note.describe()
            else:                                # a cell without non-lens rows: its lenses unmatched
                assert note.outcome == "unmatched" and len(in_cell) == 0 and note.negatives_available == 0
                assert "more positives" in note.describe()
    assert outcomes == {"repeated", "unmatched"}


def test_sample_preserves_every_stratum_share_within_one_point(large):
    for mode in ("paired", "unpaired"):
        shares = large.summary["views"][f"{mode}-10pct"]["shares"]
        for split, s in shares.items():
            assert s["joint_checked"] > 20, (mode, split)
            assert s["joint_max_delta_pp"] <= 1.0, (mode, split)
            for m in s["marginal"]:
                if m["full"] >= 100:
                    assert abs(m["delta_pp"]) <= 1.0, (mode, split, m)
        # and the sample's label balance is exact
        for split, c in large.summary["views"][f"{mode}-10pct"]["counts"].items():
            assert c["positive"] == c["negative"]


def test_sample_sizes_follow_the_plan_rounding():
    # Plan §2: 29,108 -> 2,910; 100,240 -> 10,024; 88,528 -> 8,852 (fraction × total, floored).
    rng = np.random.default_rng(0)
    for total, expected in ((29_108, 2_910), (100_240, 10_024), (88_528, 8_852)):
        counts = rng.multinomial(total, np.full(48, 1 / 48))
        take = views.allocate(counts, 0.10, rng)
        assert take.sum() == expected
        assert np.all(np.abs(take - counts * 0.10) < 1.0)


def test_the_sample_is_random_not_the_first_rows(large):
    full = large.entries("unpaired", "full")
    sample = large.entries("unpaired", "10pct")
    train_full = full[full["split"] == "train"]
    train_sample = sample[sample["split"] == "train"]
    assert train_full["shard"].nunique() == 5
    assert train_sample["shard"].nunique() == 5          # a "first N rows" sample would touch one shard
    per_shard = train_sample.groupby("shard", observed=True).size()
    assert per_shard.min() > 0.7 * per_shard.max()


def test_an_lrg_in_two_splits_is_refused_with_its_name(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    leak = tiny_rows(1, 2, seed=1, ra0=10.0)           # the train split's first LRG: ra 10.0
    leak["dec"] = [pd.read_parquet(root / "train" / "shard-0000.parquet", columns=["dec"])["dec"][0]] * 2
    write_shard(root / "val" / "shard-0100.parquet", leak)
    with pytest.raises(ManifestError) as err:
        build_manifests(root)
    text = str(err.value)
    assert "ra=10.000000" in text and "train (train/shard-0000.parquet row 0)" in text
    assert "val (val/shard-0100.parquet row 0)" in text
    proc = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(root), "--out",
                           str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "split leakage: LRG ra=10.000000" in proc.stderr and "Traceback" not in proc.stderr


def test_manifests_are_built_once_and_rebuilt_when_a_shard_changes(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    first = build_manifests(root, tmp_path / "m")
    again = build_manifests(root, tmp_path / "m")
    assert first.built and not again.built and again.directory == first.directory
    assert (first.directory / "unpaired-10pct.parquet").is_file()
    # the manifest is an index: it never holds pixels
    assert "stamp_npz" not in again.entries("paired", "full").columns
    assert list(again.entries("paired", "full").columns) == list(views.ENTRY_COLUMNS)
    shard = root / "train" / "shard-0000.parquet"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    changed = build_manifests(root, tmp_path / "m")
    assert changed.built and changed.directory != first.directory
    other_seed = build_manifests(root, tmp_path / "m", seed=7)
    assert other_seed.directory not in (first.directory, changed.directory)


def test_cli_prints_the_plan_tables_and_the_strata(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(root), "--out",
                           str(tmp_path / "m"), "--seed", "42"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("paired, full dataset", "paired, 10% sample", "unpaired, full dataset", "unpaired, 10% sample"):
        assert title in out
    assert "| Train | 36 | 18 (18) | 18 (6) |" in out   # 6 LRGs × 3 rows, paired: a control per LRG
    assert "Drawn twice |" in out and "unpaired view: origin, the published builder's rules" in out
    assert "stratum shares" in out and "theta_e_bin=" in out
    assert "settings from experiments.toml; command-line: seed" in out


def test_each_unpaired_method_has_its_own_manifest_and_says_which_made_it(tmp_path):
    root = write_index_dataset(tmp_path / "data", rows={"train": 3_000, "val": 1_200, "test": 1_200}, seed=3)
    origin = build_manifests(root, tmp_path / "m")
    per_cell = build_manifests(root, tmp_path / "m", unpaired_method="per_cell")
    assert origin.directory != per_cell.directory
    assert (origin.unpaired_method, per_cell.unpaired_method) == ("origin", "per_cell")
    for split, c in per_cell.summary["views"]["unpaired-full"]["counts"].items():
        assert c["positive"] == c["negative"] > 0                    # per cell: exactly 50/50, no repeats
        assert per_cell.summary["views"]["unpaired-full"]["repeats"][split] == 0
    with pytest.raises(ValueError, match="unknown unpaired method 'halves'; expected one of origin, per_cell"):
        build_manifests(root, tmp_path / "m", unpaired_method="halves")


def test_distinct_images_per_split_and_label_match_the_blob_bytes(tmp_path):
    """The §2 tables give the effective sample: a negative LRG's rows share one control image."""
    import hashlib

    import pyarrow.parquet as pq

    from engine.synthetic.twin import write_dataset

    root = tmp_path / "synth"
    write_dataset(root, rows={"train": 192, "val": 192, "test": 192}, seed=3)   # ~16 LRGs per split
    ms = build_manifests(root, seed=42, sample_fraction=1.0)
    for mode in ("paired", "unpaired"):
        view = ms.entries(mode, "full")
        distinct = manifest_report.distinct_counts(view)
        for split in ("train", "val", "test"):
            v = view[view["split"] == split]
            digests = {0: set(), 1: set()}
            for shard, part in v.groupby("shard", observed=True):
                table = pq.read_table(root / shard, columns=["stamp_npz", "ctrl_stamp_npz"])
                for row, blob, label in zip(part["row"], part["blob"], part["label"]):
                    data = table.column("stamp_npz" if blob == "stamp" else "ctrl_stamp_npz")[int(row)].as_py()
                    digests[int(label)].add(hashlib.sha256(data).hexdigest())
            assert distinct[split] == {"positive": len(digests[1]), "negative": len(digests[0])}, (mode, split)
            counts = ms.summary["views"][f"{mode}-full"]["counts"][split]
            assert counts["negative"] > 0 and distinct[split]["negative"] < counts["negative"]   # one per LRG
            assert distinct[split]["positive"] < counts["positive"]   # selection sets repeat an injection
    out = subprocess.run([sys.executable, "-m", "engine.manifest", "--data-root", str(root), "--fraction", "1.0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| Split | Total | Positive (distinct) | Negative (distinct) |" in out.stdout
    val = ms.summary["views"]["unpaired-full"]["counts"]["val"]
    d = manifest_report.distinct_counts(ms.entries("unpaired", "full"))["val"]
    assert f"| Val | {val['total']:,} | {val['positive']:,} ({d['positive']:,}) | {val['negative']:,} ({d['negative']:,}) |" \
        in out.stdout
