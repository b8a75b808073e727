"""The twin's lens catalogue: which LRGs are the lens hosts of the unpaired view, when the twin selects them.

The default twin leaves that choice to the manifest builder, which halves each split's LRGs at
random (the origin's rule): lens and non-lens hosts are then drawn from one population and the
only difference between the classes is the injected arc. A real lens sample is not drawn at
random: the lensing cross-section and the confirmation of candidates favour massive, bright hosts
(`Priors.lens_host_luminosity_weight`). With that setting the twin writes this catalogue beside
its shards: an unpaired manifest in the published pipeline's v2 format (metadata only; docs/DATA.md,
"Manifests"), whose lens LRGs are `priors.lens_hosts` and whose non-lens rows are matched per
(psf_bin, depth_bin) cell by the origin's rule. The dataset names it as its `unpaired_manifest`
(experiments.toml's `synthetic-shortcut`), and the engine imports it as it would the origin's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from engine.config import LENS_CATALOGUE, SPLITS
from engine.data.manifest import lrg_ids, lrg_ra_dec, read_index
from engine.data.views import match_negatives_per_cell
from engine.synthetic.priors import PRIORS, Priors, SystemParams, lens_hosts

def write_lens_catalogue(root: Path, params: Mapping[str, SystemParams], seed: int,
                         priors: Priors = PRIORS) -> dict[str, dict[str, int]]:
    """Write `root/LENS_CATALOGUE/split=<split>/part-0000.parquet` for the shards under `root`; returns,
    per split, the lens and non-lens LRGs and rows it holds."""
    rows = read_index(root).rows
    names = list(rows["shard"].cat.categories)
    rng = np.random.default_rng([seed, 7])
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        lrg = params[split].lrg
        chosen = lens_hosts(lrg.mag_r, rng, priors)
        lens_ids = lrg_ids(lrg.ra[chosen], lrg.dec[chosen])
        r = rows[rows["split"] == split].reset_index(drop=True)
        is_pos = np.isin(r["lrg_id"].to_numpy(), lens_ids)
        neg, _ = match_negatives_per_cell(r, is_pos, rng, split)
        pos = np.flatnonzero(is_pos)
        take = np.concatenate([pos, neg])
        label = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
        ids = r["lrg_id"].to_numpy()[take]
        ra, dec = lrg_ra_dec(ids)
        table = pd.DataFrame({
            "label": label,
            "blob_type": np.where(label == 1, "stamp_npz", "ctrl_stamp_npz"),
            # The shard as `<split>/<file>`, relative: the importer finds it by those two parts under the root.
            "_source_file": [names[i] for i in r["shard"].cat.codes.to_numpy()[take]],
            "_row_idx": r["row"].to_numpy()[take].astype(np.int64),
            "ra": ra,
            "dec": dec,
            "psf_bin": r["psf_bin"].to_numpy()[take].astype(np.int64),
            "depth_bin": r["depth_bin"].to_numpy()[take].astype(np.int64),
            "theta_e_arcsec": np.where(label == 1, r["theta_e"].to_numpy()[take], np.nan),
            "_lrg_id": ids,
        })
        out = root / LENS_CATALOGUE / f"split={split}"
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "part-0000.parquet", index=False)
        counts[split] = {"lens_lrgs": int(chosen.sum()), "non_lens_lrgs": int(len(chosen) - chosen.sum()),
                         "lens_rows": int(len(pos)), "non_lens_rows": int(len(neg))}
    return counts
