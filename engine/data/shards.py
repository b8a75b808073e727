"""Reading the real shards: `<root>/{train,val,test}/*.parquet`, one row per injected system.

Each row holds two NPZ blobs, `stamp_npz` (the LRG with injected arcs) and
`ctrl_stamp_npz` (the same LRG without), plus index columns (θ_E, PSF and depth
bins, ra/dec). Index columns are read on their own so that building a manifest
never touches the pixels; blobs are decoded here into (3, 64, 64) float32 stamps
and cropped to 63×63 so the LRG is the exact centre pixel (31, 31).

A problem with one row (a blob that does not decode, NaN/Inf pixels, a wrong
shape, a missing value) is a `BadRow`: the caller counts it and decides. A
problem with a whole file (unreadable, truncated, no shards) is a `ShardError`.
"""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BLOB_COLUMNS = {"stamp": "stamp_npz", "ctrl": "ctrl_stamp_npz"}
INDEX_COLUMNS = ("theta_e_arcsec", "psf_bin", "depth_bin", "ra", "dec")
OPTIONAL_COLUMNS = ("arc_snr", "src_reff_arcsec", "src_dmag", "magnification", "psfsize_r",
                    "psfdepth_r", "lens_model", "brickname")
BAND_KEYS = ("image_g", "image_r", "image_z")
LEGACY_KEY = "img"
STAMP_SIZE = 64
CROP_SIZE = 63
CENTER = 31  # the LRG's pixel in the cropped stamp (row and column)


class ShardError(ValueError):
    """A whole shard (or the data root) cannot be used; the message names the file."""


class BlobError(ValueError):
    """One blob cannot become a (3, 64, 64) stamp; the message is the reason."""


class BadRowsError(ValueError):
    """More bad rows than the caller allows; the message lists them."""


@dataclass(frozen=True)
class BadRow:
    """One unusable row: which shard (relative to the data root), which row, why."""

    shard: str
    row: int
    reason: str

    def describe(self) -> str:
        return f"{self.shard} row {self.row}: {self.reason}"


def list_shards(root: str | Path, split: str) -> list[Path]:
    """The split's shard files, sorted by name; a missing or empty split is an error."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such folder; a data root holds train/, val/ and test/ "
                         "folders of .parquet shards")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and p.is_file())
    if not files:
        raise ShardError(f"{folder}: no .parquet shards in this split folder")
    return files


def shard_columns(path: Path) -> list[str]:
    """Column names from the Parquet footer (reads no data)."""
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def shard_num_rows(path: Path) -> int:
    """Row count from the Parquet footer (reads no data)."""
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def read_columns(path: Path, columns: Sequence[str]) -> pa.Table:
    """Only `columns` of one shard (never the blobs unless asked for)."""
    try:
        return pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> ShardError:
    return ShardError(f"{path}: cannot read this Parquet shard ({exc}); the file is truncated or "
                      "corrupt: copy it again from the source, or move it out of the split folder")


# ---------------------------------------------------------------------------
# Blobs


def decode_blob(blob: bytes | None) -> np.ndarray:
    """One blob -> (3, 64, 64) float32 g, r, z; raises BlobError with the reason.

    Accepts an NPZ with keys image_g/image_r/image_z, the legacy NPZ with a single
    (3, 64, 64) `img` array, a bare .npy of that shape, and any of them gzip-wrapped.
    """
    if blob is None:
        raise BlobError("missing value (null blob)")
    data = bytes(blob)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise BlobError(f"gzip-wrapped blob does not decompress ({exc})") from None
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BlobError(f"not an NPZ/NPY blob ({_short(exc)})") from None
    try:
        stamp = _stack(loaded)
    except BlobError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BlobError(f"NPZ member does not decode ({_short(exc)})") from None
    finally:
        if isinstance(loaded, np.lib.npyio.NpzFile):
            loaded.close()
    if not np.isfinite(stamp).all():
        bad = int(np.size(stamp) - np.isfinite(stamp).sum())
        raise BlobError(f"NaN/Inf pixels ({bad} of {stamp.size})")
    return stamp


def _stack(loaded: np.ndarray | np.lib.npyio.NpzFile) -> np.ndarray:
    if isinstance(loaded, np.ndarray):
        return _as_stamp(loaded, "the array")
    keys = list(loaded.keys())
    if all(k in keys for k in BAND_KEYS):
        bands = []
        for key in BAND_KEYS:
            band = loaded[key]
            if band.shape != (STAMP_SIZE, STAMP_SIZE):
                raise BlobError(f"wrong shape: {key} is {band.shape}, expected ({STAMP_SIZE}, {STAMP_SIZE})")
            bands.append(band)
        return _as_stamp(np.stack(bands), "the stacked bands")
    if LEGACY_KEY in keys:
        return _as_stamp(loaded[LEGACY_KEY], f"'{LEGACY_KEY}'")
    raise BlobError(f"no {'/'.join(BAND_KEYS)} or '{LEGACY_KEY}' key in the NPZ (found: {', '.join(keys) or 'none'})")


def _as_stamp(array: np.ndarray, what: str) -> np.ndarray:
    if array.shape != (3, STAMP_SIZE, STAMP_SIZE):
        raise BlobError(f"wrong shape: {what} is {array.shape}, expected (3, {STAMP_SIZE}, {STAMP_SIZE})")
    if not np.issubdtype(array.dtype, np.number):
        raise BlobError(f"wrong dtype: {what} is {array.dtype}, expected float")
    return np.ascontiguousarray(array, dtype=np.float32)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


def crop(stamps: np.ndarray) -> np.ndarray:
    """64×64 -> 63×63 as [1:64, 1:64]: the LRG at (32, 32) becomes the centre pixel (31, 31)."""
    return stamps[..., 1:STAMP_SIZE, 1:STAMP_SIZE]


# ---------------------------------------------------------------------------
# Decoding many rows of one shard


@dataclass(frozen=True)
class DecodedChunk:
    """Some decoded entries of one shard: `index` says which of the requested ones they are."""

    index: np.ndarray    # (k,) int64 positions into the requested `rows`
    images: np.ndarray   # (k, 3, 63, 63) float32, cropped, not preprocessed
    bad: tuple[BadRow, ...]


def row_group_starts(path: Path) -> np.ndarray:
    """The first row of each row group of a shard, and its row count last (from the footer)."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def iter_decoded(path: Path, rows: np.ndarray, blobs: np.ndarray, *, shard_name: str,
                 chunk_rows: int = 256, row_groups: Sequence[int] | None = None) -> Iterator[DecodedChunk]:
    """Decode the requested (row, blob kind) entries of one shard, in order, a batch at a time.

    `rows` must be sorted (ascending); `blobs` holds "stamp" or "ctrl" per entry. The
    shard is streamed in record batches of only the needed blob columns, so memory
    stays at one batch, not one shard. `row_groups` (consecutive, holding every requested
    row) reads only those row groups: the stamp cache splits a large shard between workers so.
    """
    rows = np.asarray(rows, dtype=np.int64)
    blobs = np.asarray(blobs)
    if len(rows) and np.any(np.diff(rows) < 0):
        raise ValueError("iter_decoded: rows must be sorted")
    kinds = [k for k in BLOB_COLUMNS if k in set(blobs.tolist())]
    present = set(shard_columns(path))
    missing = [BLOB_COLUMNS[k] for k in kinds if BLOB_COLUMNS[k] not in present]
    if missing:
        # The whole shard lacks a blob column: every requested entry of that kind is bad.
        bad = tuple(BadRow(shard_name, int(r), f"missing column {BLOB_COLUMNS[b]}")
                    for r, b in zip(rows, blobs) if BLOB_COLUMNS[b] in missing)
        keep = np.array([BLOB_COLUMNS[b] not in missing for b in blobs], dtype=bool)
        kinds = [k for k in kinds if BLOB_COLUMNS[k] not in missing]
        if bad:
            yield DecodedChunk(np.zeros(0, np.int64), np.zeros((0, 3, CROP_SIZE, CROP_SIZE), np.float32), bad)
        rows, blobs, positions = rows[keep], blobs[keep], np.flatnonzero(keep)
    else:
        positions = np.arange(len(rows))
    if not len(rows):
        return
    try:
        parquet = pq.ParquetFile(path)
        columns = [BLOB_COLUMNS[k] for k in kinds]
        start, cursor = 0, 0
        if row_groups is None:
            batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns)
        else:
            row_groups = list(row_groups)
            start = sum(parquet.metadata.row_group(i).num_rows for i in range(row_groups[0]))
            batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns, row_groups=row_groups)
        for batch in batches:
            stop = start + batch.num_rows
            end = cursor + int(np.searchsorted(rows[cursor:], stop, side="left"))
            if end > cursor:
                yield _decode_batch(batch, rows[cursor:end] - start, blobs[cursor:end],
                                    positions[cursor:end], rows[cursor:end], shard_name)
            cursor, start = end, stop
            if cursor >= len(rows):
                break
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    if cursor < len(rows):
        raise ShardError(f"{path}: has {start} rows but row {int(rows[cursor])} was asked for; the shard "
                         "changed since the manifest was built (delete the cache folder to rebuild)")


def _decode_batch(batch: pa.RecordBatch, local: np.ndarray, blobs: np.ndarray, positions: np.ndarray,
                  rows: np.ndarray, shard_name: str) -> DecodedChunk:
    columns = {kind: batch.column(BLOB_COLUMNS[kind]) for kind in BLOB_COLUMNS
               if BLOB_COLUMNS[kind] in batch.schema.names}
    images = np.empty((len(local), 3, CROP_SIZE, CROP_SIZE), np.float32)
    ok = np.zeros(len(local), dtype=bool)
    bad = []
    for i, (j, kind) in enumerate(zip(local, blobs)):
        try:
            images[i] = crop(decode_blob(columns[kind][int(j)].as_py()))
            ok[i] = True
        except BlobError as exc:
            bad.append(BadRow(shard_name, int(rows[i]), f"{BLOB_COLUMNS[kind]}: {exc}"))
    return DecodedChunk(positions[ok], images[ok] if not ok.all() else images, tuple(bad))


# Writing blobs. np.savez_compressed costs ~1.5 ms a stamp here, more than rendering it: zipfile's
# per-member machinery plus zlib's LZ77 search, which finds nothing in noise. We write the same
# container ourselves (a zip of deflated .npy members that np.load reads) and deflate with the
# cheapest coder that still compresses: float32 noise only compresses through its repetitive
# sign/exponent bytes (~7% at any zlib level), which Huffman coding alone captures.


def _zlib_huffman(data: bytes) -> bytes:
    coder = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    return coder.compress(data) + coder.flush()


# Deflate coders by name (raw deflate streams, as zip members hold them); BLOB_CODEC is the fastest here.
CODECS: dict[str, Callable[[bytes], bytes]] = {"zlib-huffman": _zlib_huffman}
_crc32 = zlib.crc32
try:  # ISA-L's deflate at level 1: same format and ratio, 3-4x faster than zlib here; its CRC too
    from isal import isal_zlib as _isal_zlib

    CODECS["isal-1"] = functools.partial(_isal_zlib.compress, level=1, wbits=-15)
    _crc32 = _isal_zlib.crc32
except ImportError:  # an engine copied to a bare host: zlib, slower, same pixels
    pass
BLOB_CODEC = "isal-1" if "isal-1" in CODECS else "zlib-huffman"

_ZIP_DATE = (1 << 5) | 1            # 1980-01-01 00:00, the zip epoch: equal stamps, equal bytes
_ZIP_VERSION = 20                   # 2.0: deflate
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")


@functools.lru_cache(maxsize=8)
def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.empty(shape, np.float32))
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def encode_npz(arrays: dict[str, np.ndarray], *, codec: str | None = None) -> bytes:
    """Arrays, stored as float32, -> the bytes of a compressed .npz (deflated .npy members) that np.load reads.

    The layout np.savez_compressed writes (a zip without zip64, a member `<key>.npy` per array), with
    a fixed timestamp; `codec` picks the deflate coder from CODECS (default BLOB_CODEC).
    """
    deflate = CODECS[codec or BLOB_CODEC]
    local, central = [], []
    offset = 0
    for key, array in arrays.items():
        array = np.ascontiguousarray(array, dtype=np.float32)
        raw = _npy_header(array.shape) + array.tobytes()
        packed = deflate(raw)
        name = f"{key}.npy".encode("ascii")
        crc = _crc32(raw)
        common = (0, zipfile.ZIP_DEFLATED, 0, _ZIP_DATE, crc, len(packed), len(raw), len(name))
        local += [_LOCAL.pack(0x04034B50, _ZIP_VERSION, *common, 0), name, packed]
        central += [_CENTRAL.pack(0x02014B50, _ZIP_VERSION, _ZIP_VERSION, *common, 0, 0, 0, 0, 0, offset), name]
        offset += _LOCAL.size + len(name) + len(packed)
    directory = b"".join(central)
    end = _END.pack(0x06054B50, 0, 0, len(arrays), len(arrays), len(directory), offset, 0)
    return b"".join(local) + directory + end


def encode_blob(stamp: np.ndarray, *, legacy: bool = False, gzipped: bool = False,
                codec: str | None = None) -> bytes:
    """A (3, 64, 64) stamp as the shards store it: a compressed NPZ with keys image_g/_r/_z.

    `legacy` writes the old single-array `img` NPZ and `gzipped` wraps the blob in gzip (both only
    for tests of the reader); `codec` picks a deflate coder from CODECS (default BLOB_CODEC).
    """
    stamp = np.asarray(stamp, dtype=np.float32)
    if legacy:
        buf = io.BytesIO()
        np.savez_compressed(buf, img=stamp)
        data = buf.getvalue()
    else:
        data = encode_npz({key: stamp[i] for i, key in enumerate(BAND_KEYS)}, codec=codec)
    return gzip.compress(data) if gzipped else data
