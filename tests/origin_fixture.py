"""The data the origin pipeline wrote (`shared/fixtures/`), for tests that need the real format.

`origin-v5-paired/` is a small paired data set written by the public pipeline's own Spark jobs;
`origin-v5-paired-manifest/` is that pipeline's own unpaired manifest (v2) of it. Both are
read-only: a test that changes the data copies it first (`copy_origin_data`). The folder is
`../shared` beside the repository (as in CI) or `/work/shared`; a missing fixture is an error,
never a skipped test.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = (REPO.parent / "shared", Path("/work/shared"))
DATA = "fixtures/origin-v5-paired"
MANIFEST = "fixtures/origin-v5-paired-manifest"
# Its own README: rows per split, and the origin manifest's counts (lenses, non-lenses).
ROWS = {"train": 324, "val": 136, "test": 128}
ORIGIN_MANIFEST_COUNTS = {"train": (164, 126), "val": (62, 62), "test": (68, 68)}
GPU_HOST_ROOT = "/home/ubuntu/data/v5_cosmos_paired"


def shared_folder() -> Path:
    for candidate in CANDIDATES:
        if (candidate / DATA).is_dir():
            return candidate
    raise FileNotFoundError(f"the origin fixtures are not in {' or '.join(str(c) for c in CANDIDATES)}; "
                            "the tests need shared/fixtures/ beside the repository (CI has ../shared)")


def origin_data() -> Path:
    """`origin-v5-paired/`, read-only."""
    return shared_folder() / DATA


def origin_manifest() -> Path:
    """`origin-v5-paired-manifest/` (the origin's v2 manifest), read-only."""
    return shared_folder() / MANIFEST


def copy_origin_data(dest: Path) -> Path:
    """A writable copy of `origin-v5-paired/` at `dest`; returns `dest`."""
    shutil.copytree(origin_data(), dest)
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    dest.chmod(0o755)
    return dest


def failed_cutout_blob() -> bytes:
    """What the pipeline stores as `stamp_npz` for a failed cut-out: an NPZ of `image_r` zeros only."""
    buf = io.BytesIO()
    np.savez_compressed(buf, image_r=np.zeros((64, 64), np.float32))
    return buf.getvalue()


def add_failed_cutout_row(shard: Path, like_row: int = 0) -> int:
    """Append to `shard` a failed cut-out of the LRG of `like_row`, as the pipeline writes one.

    The new row copies that row's metadata and control, with `cutout_ok = 0` and a `stamp_npz`
    holding only `image_r` zeros. Returns the new row's index.
    """
    table = pq.read_table(shard)
    row = table.slice(like_row, 1).to_pylist()[0]
    row.update(cutout_ok=0, stamp_npz=failed_cutout_blob(), replicate=7, arc_snr=None)
    extra = pa.Table.from_pylist([row], schema=table.schema)
    pq.write_table(pa.concat_tables([table, extra]), shard, compression="snappy")
    return table.num_rows
