"""The shard reader: every blob variant decodes to the same stamp; every kind of bad row is named."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest

from data_fixtures import lrg_image, tiny_rows, write_shard, write_tiny_dataset
from engine.data import shards
from engine.data.load import load_split
from engine.data.settings import DataSettings
from engine.data.manifest import read_index
from engine.data.shards import BadRowsError, BlobError, ShardError, decode_blob, encode_blob


@pytest.fixture
def stamp() -> np.ndarray:
    return lrg_image(np.random.default_rng(1))


def test_every_blob_variant_decodes_to_the_same_stamp(stamp):
    npy = io.BytesIO()
    np.save(npy, stamp)
    variants = {
        "npz keys": encode_blob(stamp),
        "legacy img": encode_blob(stamp, legacy=True),
        "gzip npz": encode_blob(stamp, gzipped=True),
        "gzip legacy": encode_blob(stamp, legacy=True, gzipped=True),
        "gzip npy": gzip.compress(npy.getvalue()),
    }
    for name, blob in variants.items():
        out = decode_blob(blob)
        assert out.dtype == np.float32 and out.shape == (3, 64, 64), name
        np.testing.assert_array_equal(out, stamp, err_msg=name)


@pytest.mark.parametrize("codec", sorted(shards.CODECS))
def test_written_blobs_are_compressed_npz_that_round_trip_bit_exactly(stamp, codec):
    stamp = stamp.copy()
    stamp[0, 0, :4] = [-0.0, 1e-45, np.finfo(np.float32).max, -np.finfo(np.float32).tiny]  # sign, subnormal, extremes
    blob = encode_blob(stamp, codec=codec)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.testzip() is None   # every member's CRC checks
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["image_g.npy", "image_r.npy", "image_z.npy"]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED and i.compress_size < i.file_size for i in infos)
    with np.load(io.BytesIO(blob)) as npz:   # what any reader of the real shards does
        for i, key in enumerate(shards.BAND_KEYS):
            assert npz[key].dtype == np.float32
            np.testing.assert_array_equal(npz[key].view(np.uint32), stamp[i].view(np.uint32))
    np.testing.assert_array_equal(decode_blob(blob).view(np.uint32), stamp.view(np.uint32))
    # No timestamps inside: equal stamps give equal bytes, so a dataset is reproducible byte for byte.
    assert encode_blob(stamp.copy(), codec=codec) == blob
    # As small as np.savez_compressed's (zlib level 6): float32 noise compresses the same at any level.
    assert len(blob) <= 1.01 * len(_npz(image_g=stamp[0], image_r=stamp[1], image_z=stamp[2]))


def test_the_fast_codec_is_used_when_isal_is_installed():
    assert "zlib-huffman" in shards.CODECS   # the standard library's, always there
    pytest.importorskip("isal")
    assert shards.BLOB_CODEC == "isal-1"


def test_crop_puts_the_lrg_on_the_exact_centre_pixel(stamp):
    cropped = shards.crop(decode_blob(encode_blob(stamp)))
    assert cropped.shape == (3, 63, 63)
    peak = np.unravel_index(np.argmax(cropped[1]), cropped[1].shape)
    assert peak == (31, 31)
    # the LRG's pixel (32, 32) of the 64-px stamp is the centre of the crop
    assert cropped[1, 31, 31] == stamp[1, 32, 32]


@pytest.mark.parametrize("make_blob, reason", [
    (lambda s: b"not a blob at all", "not an NPZ/NPY blob"),
    (lambda s: encode_blob(s)[:200], "not an NPZ/NPY blob"),
    (lambda s: b"\x1f\x8b" + b"garbage", "gzip-wrapped blob does not decompress"),
    (lambda s: encode_blob(np.where(np.arange(64) == 5, np.nan, s)), "NaN/Inf pixels (192 of 12288)"),
    (lambda s: encode_blob(np.where(np.arange(64) == 5, np.inf, s), legacy=True), "NaN/Inf pixels"),
    (lambda s: _npz(image_g=s[0, :32, :32], image_r=s[1], image_z=s[2]), "wrong shape: image_g is (32, 32)"),
    (lambda s: _npz(img=s[:, :, :63]), "wrong shape: 'img' is (3, 64, 63)"),
    (lambda s: _npz(image_g=s[0], image_r=s[1]), "no image_g/image_r/image_z or 'img' key"),
    (lambda s: None, "missing value (null blob)"),
])
def test_a_bad_blob_says_why(stamp, make_blob, reason):
    with pytest.raises(BlobError, match=None) as err:
        decode_blob(make_blob(stamp))
    assert reason in str(err.value)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _shard_with_bad_rows(path):
    """Eight rows of one LRG; rows 2, 4 and 6 are bad in three different ways."""
    cols = tiny_rows(1, 8, seed=3, ra0=1.0)
    good = decode_blob(cols["stamp_npz"][4])
    cols["stamp_npz"][2] = b"corrupt"
    cols["stamp_npz"][4] = encode_blob(np.where(np.arange(64) == 0, np.nan, good))
    cols["stamp_npz"][6] = _npz(img=good[:2])
    write_shard(path, cols, row_group_size=3)   # several row groups: the reader streams them
    return cols


def test_decoding_a_shard_names_each_bad_row_and_keeps_the_rest_in_order(tmp_path):
    cols = _shard_with_bad_rows(tmp_path / "train" / "s.parquet")
    rows = np.array([0, 0, 2, 3, 4, 5, 6, 7])
    blobs = np.array(["ctrl", "stamp", "stamp", "stamp", "stamp", "stamp", "stamp", "ctrl"])
    chunks = list(shards.iter_decoded(tmp_path / "train" / "s.parquet", rows, blobs,
                                      shard_name="train/s.parquet", chunk_rows=3))
    bad = [b for c in chunks for b in c.bad]
    assert [(b.shard, b.row) for b in bad] == [("train/s.parquet", 2), ("train/s.parquet", 4),
                                               ("train/s.parquet", 6)]
    assert "not an NPZ" in bad[0].reason and "NaN/Inf" in bad[1].reason and "wrong shape" in bad[2].reason
    assert all(b.reason.startswith("stamp_npz: ") for b in bad)
    index = np.concatenate([c.index for c in chunks])
    images = np.concatenate([c.images for c in chunks])
    assert index.tolist() == [0, 1, 3, 5, 7]
    for i, img in zip(index, images):
        column = "ctrl_stamp_npz" if blobs[i] == "ctrl" else "stamp_npz"
        np.testing.assert_array_equal(img, shards.crop(decode_blob(cols[column][rows[i]])))


def test_bad_rows_under_the_limit_are_dropped_and_returned(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    _shard_with_bad_rows(root / "train" / "shard-9999.parquet")
    arrays = load_split(root, mode="paired", sample="full", split="train", preprocessing="raw_robust",
                        settings=DataSettings(bad_row_limit=0.1))
    assert [(b.shard, b.row) for b in arrays.bad_rows] == [("train/shard-9999.parquet", r) for r in (2, 4, 6)]
    assert len(arrays) == arrays.info["requested"] - 3
    assert arrays.bad_rows_summary()["count"] == 3 and arrays.bad_rows_summary()["limit"] == 0.1
    assert arrays.bad_rows_summary()["rows"][0] == {"shard": "train/shard-9999.parquet", "row": 2,
                                                    "reason": arrays.bad_rows[0].reason}
    assert np.isfinite(arrays.images.astype(np.float32)).all()


def test_bad_rows_over_the_limit_are_an_error_that_lists_them(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    _shard_with_bad_rows(root / "train" / "shard-9999.parquet")
    with pytest.raises(BadRowsError) as err:
        load_split(root, mode="paired", sample="full", split="train", preprocessing="raw_robust")
    text = str(err.value)
    assert "3 of" in text and "limit 0.10%, data.bad_row_limit in experiments.toml" in text
    assert "raise the limit (data.bad_row_limit in experiments.toml) knowingly" in text
    assert "train/shard-9999.parquet row 2: stamp_npz: not an NPZ" in text
    assert "train/shard-9999.parquet row 4: stamp_npz: NaN/Inf" in text


def test_a_missing_column_makes_its_rows_bad_and_names_the_column(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    cols = tiny_rows(2, 3, seed=9, ra0=5.0)
    del cols["ctrl_stamp_npz"]
    write_shard(root / "val" / "shard-9999.parquet", cols)
    index = read_index(root)
    assert len(index.bad["val"]) == 6
    assert index.bad["val"][0].reason == "missing column ctrl_stamp_npz"
    with pytest.raises(BadRowsError, match=r"val/shard-9999.parquet row 0, 1, 2, 3, 4, … \(6 rows\): "
                                           r"missing column ctrl_stamp_npz"):
        load_split(root, mode="unpaired", sample="full", split="val", preprocessing="residual")


def test_a_missing_value_in_an_index_column_is_a_bad_row(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    cols = tiny_rows(1, 3, seed=9, ra0=5.0)
    cols["theta_e_arcsec"][1] = None
    write_shard(root / "test" / "shard-9999.parquet", cols)
    bad = read_index(root).bad["test"]
    assert [(b.shard, b.row, b.reason) for b in bad] == [
        ("test/shard-9999.parquet", 1, "missing or non-finite value in theta_e_arcsec")]


def test_a_truncated_parquet_file_is_an_error_naming_the_file(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    path = root / "train" / "shard-0000.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ShardError) as err:
        load_split(root, mode="paired", sample="10pct", split="train", preprocessing="residual")
    assert str(path) in str(err.value) and "truncated or corrupt" in str(err.value)


def test_a_data_root_without_a_split_says_what_it_expects(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    for p in (root / "test").iterdir():
        p.unlink()
    with pytest.raises(ShardError, match="test: no .parquet shards"):
        read_index(root)
    with pytest.raises(ShardError, match="data root not found"):
        read_index(tmp_path / "nowhere")
