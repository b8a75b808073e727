"""The stamp cache and load_split: built once, reused without decoding, safe under concurrent builders."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data_fixtures import write_tiny_dataset
from engine.data import shards
from engine.data.load import load_raw_examples, load_split
from engine.data.settings import DataSettings
from engine.data.manifest import build_manifests
from engine.data.preprocess import preprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def root(tmp_path):
    return write_tiny_dataset(tmp_path / "data", n_lrgs={"train": 8, "val": 6, "test": 6})


def test_load_split_returns_the_contracted_arrays(root):
    a = load_split(root, mode="unpaired", sample="full", split="train", preprocessing="residual")
    n = len(a)
    assert a.images.shape == (n, 3, 63, 63) and a.images.dtype == np.float16 and a.images.flags.c_contiguous
    assert a.labels.dtype == np.uint8 and a.theta_e.dtype == np.float32 and a.lrg_id.dtype == np.int64
    assert a.psf_bin.dtype == np.int8 and a.depth_bin.dtype == np.int8
    assert all(len(x) == n for x in (a.labels, a.theta_e, a.lrg_id, a.psf_bin, a.depth_bin))
    # The origin's unpaired rules: a cell without non-lens LRGs leaves its lenses unmatched.
    assert a.info["positive"] + a.info["negative"] == n and a.info["positive"] > 0 and a.info["negative"] > 0
    assert a.info["unpaired_method"] == "origin"
    assert a.info["cache"].startswith(str(root / ".lenstui-cache" / "stamps"))
    assert a.info["cache_dir_reason"] == "the default, inside the data root"
    assert a.info["manifest"].endswith("unpaired-full.parquet") and len(a.info["manifest_sha256"]) == 64
    assert a.bad_rows == ()


def test_cached_images_are_the_preprocessed_decoded_blobs_in_manifest_order(root):
    a = load_split(root, mode="paired", sample="full", split="val", preprocessing="raw_robust")
    entries = build_manifests(root, root / ".lenstui-cache" / "manifests").entries("paired", "full", "val")
    assert len(entries) == len(a)
    np.testing.assert_array_equal(entries["label"].to_numpy(), a.labels)
    for i in (0, 1, len(a) - 1):
        e = entries.iloc[i]
        table = shards.read_columns(root / e["shard"], [shards.BLOB_COLUMNS[e["blob"]]])
        raw = shards.crop(shards.decode_blob(table.column(0)[int(e["row"])].as_py()))
        expected = preprocess(raw[None], "raw_robust")[0].astype(np.float16)
        np.testing.assert_array_equal(np.asarray(a.images[i]), expected)


def test_a_second_load_reuses_the_cache_without_decoding(root, monkeypatch):
    first = load_split(root, mode="unpaired", sample="full", split="val", preprocessing="residual")
    assert first.info["cache_hit"] is False

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load decoded a blob")

    monkeypatch.setattr(shards, "decode_blob", no_decoding)
    monkeypatch.setattr(shards, "iter_decoded", no_decoding)
    second = load_split(root, mode="unpaired", sample="full", split="val", preprocessing="residual")
    assert second.info["cache_hit"] is True and second.info["cache"] == first.info["cache"]
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    np.testing.assert_array_equal(second.lrg_id, first.lrg_id)


def test_each_preprocessing_and_view_has_its_own_cache(root):
    paths = {load_split(root, mode=m, sample="full", split="train", preprocessing=p).info["cache"]
             for m in ("paired", "unpaired") for p in ("raw_robust", "residual")}
    assert len(paths) == 4


def test_a_changed_shard_is_never_read_from_a_stale_cache(root):
    before = load_split(root, mode="paired", sample="full", split="test", preprocessing="residual")
    write_tiny_dataset(root.parent / "other", n_lrgs={"train": 8, "val": 6, "test": 6}, seed=99)
    for p in (root / "test").iterdir():
        p.write_bytes((root.parent / "other" / "test" / p.name).read_bytes())
    after = load_split(root, mode="paired", sample="full", split="test", preprocessing="residual")
    assert after.info["cache"] != before.info["cache"] and after.info["cache_hit"] is False
    assert not np.array_equal(np.asarray(after.images), np.asarray(before.images))


_BUILDER = """
import json, os, pathlib, sys, time
sys.path.insert(0, {tests!r})
from engine.data.load import load_split
# A barrier: both processes are imported and ready before either starts to build.
barrier = pathlib.Path({barrier!r})
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.01)
a = load_split({root!r}, mode="paired", sample="full", split="train", preprocessing="residual")
print(json.dumps({{"cache": a.info["cache"], "hit": a.info["cache_hit"], "n": len(a)}}))
"""


def test_two_processes_building_the_same_cache_both_succeed_with_identical_content(root):
    barrier = root.parent / "barrier"
    barrier.mkdir()
    code = _BUILDER.format(tests=TESTS, root=str(root), barrier=str(barrier))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["cache"] == results[1]["cache"] and results[0]["n"] == results[1]["n"] > 0
    assert sorted(r["hit"] for r in results) == [False, True]       # built once, found by the other
    stamps = root / ".lenstui-cache" / "stamps"
    assert not [p for p in stamps.iterdir() if ".tmp-" in p.name]
    # the content is what a fresh build in another folder gives
    fresh = load_split(root, mode="paired", sample="full", split="train", preprocessing="residual",
                       cache_dir=root.parent / "fresh-cache")
    digest = hashlib.sha256(open(os.path.join(results[0]["cache"], "images.f16"), "rb").read()).hexdigest()
    assert digest == hashlib.sha256(np.asarray(fresh.images).tobytes()).hexdigest()


def test_a_crashed_build_leaves_nothing_that_a_later_load_trusts(root, monkeypatch):
    calls = {"n": 0}
    real = shards.iter_decoded

    def crash_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    monkeypatch.setattr(shards, "iter_decoded", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        load_split(root, mode="paired", sample="full", split="train", preprocessing="residual")
    stamps = root / ".lenstui-cache" / "stamps"
    assert not [p for p in stamps.iterdir() if p.is_dir()]
    monkeypatch.setattr(shards, "iter_decoded", real)
    a = load_split(root, mode="paired", sample="full", split="train", preprocessing="residual")
    assert a.info["cache_hit"] is False and len(a) == a.info["requested"]


def test_load_raw_examples_gives_unpreprocessed_cropped_stamps_per_class(root):
    ex = load_raw_examples(root, mode="paired", split="val", n_per_class=3, seed=1)
    assert ex.images.shape == (6, 3, 63, 63) and ex.images.dtype == np.float32
    assert sorted(ex.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    # nanomaggies, not preprocessed: the LRG's centre is its brightest pixel, values are small
    assert (ex.images[:, 1, 31, 31] >= ex.images[:, 1].reshape(6, -1).max(axis=1) - 1e-6).all()
    assert np.abs(ex.images).max() < 10
    again = load_raw_examples(root, mode="paired", split="val", n_per_class=3, seed=1)
    np.testing.assert_array_equal(again.images, ex.images)


def test_bad_arguments_name_the_choices(root):
    with pytest.raises(ValueError, match="unknown data mode 'pairs'; expected one of paired, unpaired"):
        load_split(root, mode="pairs", sample="full", split="train", preprocessing="residual")
    with pytest.raises(ValueError, match="unknown sample '5pct'"):
        load_split(root, mode="paired", sample="5pct", split="train", preprocessing="residual")


def test_the_synthetic_twin_loads_through_the_same_path(tmp_path):
    synth = pytest.importorskip("engine.synthetic.twin")
    root = tmp_path / "synth"
    synth.write_dataset(root, rows={"train": 48, "val": 48, "test": 48}, rows_per_lrg=4, seed=3)
    a = load_split(root, mode="paired", sample="full", split="val", preprocessing="residual")
    assert len(a) == 96 and a.bad_rows == () and a.info["positive"] == 48
    assert len(np.unique(a.lrg_id)) == 12
    assert np.isfinite(np.asarray(a.images, dtype=np.float32)).all()
    u = load_split(root, mode="unpaired", sample="full", split="val", preprocessing="raw_robust",
                   settings=DataSettings(unpaired_method="per_cell"))
    assert u.info["positive"] == u.info["negative"] > 0 and u.info["unpaired_method"] == "per_cell"
    assert set(u.lrg_id[u.labels == 1]).isdisjoint(u.lrg_id[u.labels == 0])
    raw = load_raw_examples(root, mode="paired", split="train", n_per_class=6, seed=0)
    ctrl = raw.images[raw.labels == 0][:, 1]                        # r band of the controls
    # the LRG sits on the centre pixel: the light centroid of the central 11×11 is (31, 31)
    box = ctrl[:, 26:37, 26:37].mean(axis=0)
    box = box - np.median(ctrl[:, :5, :])
    yy, xx = np.mgrid[26:37, 26:37]
    centroid = ((box * yy).sum() / box.sum(), (box * xx).sum() / box.sum())
    assert np.allclose(centroid, (31, 31), atol=0.35), centroid


def _with_bad_shard_in_the_middle(root):
    """A train shard of one LRG whose rows 2, 4 and 6 are bad, between the good ones, in row groups of 3."""
    from test_shards import _shard_with_bad_rows

    _shard_with_bad_rows(root / "train" / "shard-0000a.parquet")
    return root


def test_a_build_on_several_workers_gives_the_same_bytes_as_one(root, tmp_path):
    from engine.data import stampcache

    _with_bad_shard_in_the_middle(root)
    entries = build_manifests(root, tmp_path / "m").entries("paired", "full", "train")
    builds = {}
    for jobs in (1, 2):
        sc = stampcache.load_or_build(root, entries, cache_root=tmp_path / f"jobs{jobs}", name="train", key="k",
                                      preprocessing="residual", jobs=jobs, parallel_min_entries=0)
        builds[jobs] = sc
    one, two = builds[1], builds[2]
    assert (one.info["build_jobs"], two.info["build_jobs"]) == (1, 2)
    assert len(one.bad_rows) == 3 and one.bad_rows == two.bad_rows
    assert len(one.images) == len(entries) - 3          # the gaps the bad rows left are closed
    assert (one.directory / "images.f16").read_bytes() == (two.directory / "images.f16").read_bytes()
    for column in ("entry", "label", "lrg_id", "theta_e"):
        np.testing.assert_array_equal(one.meta[column], two.meta[column])
    # and it is what the one-image-at-a-time reading gives
    for i in (0, len(one.images) // 2, len(one.images) - 1):
        e = entries.iloc[int(one.meta["entry"][i])]
        table = shards.read_columns(root / e["shard"], [shards.BLOB_COLUMNS[e["blob"]]])
        raw = shards.crop(shards.decode_blob(table.column(0)[int(e["row"])].as_py()))
        np.testing.assert_array_equal(np.asarray(two.images[i]), preprocess(raw[None], "residual")[0].astype(np.float16))


def test_a_large_shard_is_cut_into_tasks_of_whole_row_groups(tmp_path):
    from data_fixtures import tiny_rows, write_shard
    from engine.data import stampcache

    path = tmp_path / "train" / "s.parquet"
    write_shard(path, tiny_rows(5, 10, seed=1, ra0=3.0), row_group_size=5)     # 50 rows, 10 row groups
    rows = np.repeat(np.arange(50), 2)
    entries = pd.DataFrame({"shard": "train/s.parquet", "row": rows, "blob": np.tile(["ctrl", "stamp"], 50)})
    tasks = stampcache.plan_tasks(tmp_path, entries, target=12)
    assert [t.first for t in tasks] == [0, 20, 40, 60, 80]    # 12 entries reach into a 2nd row group of 10
    assert all(len(t.row_groups) == 2 for t in tasks) and tasks[1].row_groups == (2, 3)
    assert np.array_equal(np.concatenate([t.rows for t in tasks]), rows)
    assert stampcache.plan_tasks(tmp_path, entries.iloc[:0]) == []   # a split whose every row was bad
    whole = np.concatenate([c.images for c in shards.iter_decoded(path, rows, entries["blob"].to_numpy(),
                                                                 shard_name="s")])
    parts = np.concatenate([c.images for t in tasks for c in shards.iter_decoded(
        path, t.rows, t.blobs, shard_name="s", row_groups=t.row_groups)])
    np.testing.assert_array_equal(parts, whole)


_HEAVY_MAIN = """
import os, pathlib, sys
with open({marker!r}, "a") as fh:          # every process that imports this module says so
    fh.write(f"{{os.getpid()}}\\n")
if __name__ == "__main__":
    from engine.data import stampcache
    from engine.data.manifest import build_manifests
    entries = build_manifests({root!r}, {manifests!r}).entries("paired", "full", "train")
    sc = stampcache.load_or_build({root!r}, entries, cache_root={cache!r}, name="t", key="k",
                                  preprocessing="raw_robust", jobs=2, parallel_min_entries=0)
    print(sc.info["build_jobs"], os.getpid())
"""


def test_build_workers_do_not_import_the_command_that_started_them(root, tmp_path):
    # engine.train is the main module of a run: each worker importing it would import torch (~5 s, 0.7 GB).
    marker = tmp_path / "imported-by"
    module = tmp_path / "mods" / "heavy_main.py"
    module.parent.mkdir()
    module.write_text(_HEAVY_MAIN.format(marker=str(marker), root=str(root), manifests=str(tmp_path / "m"),
                                         cache=str(tmp_path / "c")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(module.parent), ROOT])}
    done = subprocess.run([sys.executable, "-m", "heavy_main"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    jobs, pid = done.stdout.split()
    assert jobs == "2" and marker.read_text().split() == [pid]


def test_the_module_build_workers_import_leaves_pandas_out():
    # Each worker imports engine.data.stampcache to run its tasks; pandas would add ~0.3 s of CPU to each.
    done = subprocess.run([sys.executable, "-c", "import sys, engine.data.stampcache; print('pandas' in sys.modules)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
