"""What `python -m engine.manifest` prints: the plan-§2 tables of each view (rows, and the distinct
images behind them), how the unpaired view was made, failed and bad rows, the strata shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from engine.config import DATA_MODES, SPLITS
from engine.data.views import Shortfall

if TYPE_CHECKING:
    from engine.data.manifest import ManifestSet


MIN_STRATUM_FOR_SHARE = 100   # strata smaller than this are reported but not held to 1 pp

def split_counts(view: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {total, positive, negative}} as in plan §2."""
    out = {}
    for split in SPLITS:
        labels = view.loc[view["split"] == split, "label"].to_numpy()
        pos = int(np.count_nonzero(labels == 1))
        out[split] = {"total": int(len(labels)), "positive": pos, "negative": int(len(labels) - pos)}
    return out

def repeated_draws(view: pd.DataFrame) -> dict[str, int]:
    """{split: entries that repeat an entry already in the view}: a row drawn k times counts k − 1.

    Only the origin's unpaired method draws a row more than once (with replacement, in a cell
    short of non-lenses); the paired view gives each row's control once per row, not a repeat.
    """
    out = {}
    for split in SPLITS:
        part = view.loc[view["split"] == split, ["shard", "row", "blob"]]
        out[split] = int(part.duplicated().sum())
    return out

def format_counts(title: str, counts: dict[str, dict[str, int]], repeats: dict[str, int] | None = None,
                  distinct: dict[str, dict[str, int]] | None = None) -> str:
    """A plan-§2 style table; with `distinct`, each label's distinct images beside its row count
    (distinct_counts); with `repeats`, a column of the rows drawn twice (repeated_draws)."""
    pos, neg = ("Positive (distinct)", "Negative (distinct)") if distinct is not None else ("Positive", "Negative")
    head = f"| Split | Total | {pos} | {neg} |"
    rule = f"|-------|-------|{'-' * (len(pos) + 2)}|{'-' * (len(neg) + 2)}|"
    if repeats is not None:
        head, rule = head + " Drawn twice |", rule + "-------------|"
    lines = [title, head, rule]
    for split, c in counts.items():
        d = (distinct or {}).get(split, {})
        p_text, n_text = f"{c['positive']:,}", f"{c['negative']:,}"
        if distinct is not None:
            p_text += f" ({d.get('positive', 0):,})"
            n_text += f" ({d.get('negative', 0):,})"
        line = f"| {split.capitalize()} | {c['total']:,} | {p_text} | {n_text} |"
        lines.append(line + (f" {repeats[split]:,} |" if repeats is not None else ""))
    return "\n".join(lines)

def distinct_counts(view: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{split: {positive, negative}}: how many distinct images a view's rows hold (its effective size).

    From the index alone: all rows of one LRG carry byte-identical control blobs (the real
    pipeline and the synthetic twin both; docs/DATA.md), so a control is one image per LRG; the
    pipeline repeats each injection byte for byte once per selection set, so a lens image is one
    per (LRG, `replicate`), and one per shard row where the shards carry no `replicate` (an upper
    bound then). A row drawn twice counts once. Runs record the count measured on the image
    bytes (metrics.json `effective_sample`).
    """
    out = {}
    for split in SPLITS:
        v = view[view["split"] == split]
        stamps, ctrls = v[v["blob"] == "stamp"], v[v["blob"] == "ctrl"]
        if "replicate" in stamps:
            known = stamps["replicate"].to_numpy() >= 0
            lenses = (len(stamps[known].drop_duplicates(["lrg_id", "replicate"]))
                      + len(stamps[~known].drop_duplicates(["shard", "row"])))
        else:
            lenses = len(stamps.drop_duplicates(["shard", "row"]))
        out[split] = {"positive": int(lenses), "negative": int(ctrls["lrg_id"].nunique())}
    return out

def strata_shares(full: pd.DataFrame, sample: pd.DataFrame, keys: Sequence[str]) -> dict:
    """Each stratum's share (percent) in the sample next to the full set, per split.

    Returns {split: {"marginal": [...], "joint_strata": n, "joint_checked": n,
    "joint_max_delta_pp": x}}; joint strata with fewer than 100 members are not checked.
    """
    out = {}
    for split in SPLITS:
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

UNPAIRED_DESCRIPTIONS = {
    "origin": "the published builder's rules: each split's LRGs halved at random, non-lenses matched per "
              "(psf_bin, depth_bin) cell, with replacement where a cell is short",
    "per_cell": "LRGs halved per (psf_bin, depth_bin) cell, non-lenses matched without replacement, "
                "lenses dropped where a cell is short",
    "imported": "exactly the rows of an origin manifest",
}

def report(ms: ManifestSet) -> str:
    """Everything the CLI prints: the §2 tables per view (rows, and distinct images beside them),
    how the unpaired view was made, failed and bad rows, and the strata shares."""
    s = ms.summary
    parts = [f"manifests: {ms.directory} ({'built in %.1f s' % s['build_seconds'] if ms.built else 'cached'}; "
             f"seed {s['seed']}, sample fraction {s['sample_fraction']:g})",
             f"unpaired view: {s['unpaired_method']}, {UNPAIRED_DESCRIPTIONS[s['unpaired_method']]}"]
    if s.get("imported"):
        imp = s["imported"]
        origin = imp.get("origin_metadata") or {}
        parts.append(f"  imported from {imp['source']} ({imp['format']}"
                     + (f", seed {origin['seed']}, made {origin.get('created_date', '?')}" if "seed" in origin else "")
                     + ")")
        for d in imp["dropped"][:10]:
            parts.append(f"  dropped {d['manifest']} -> {d['shard']} row {d['row']}: {d['reason']}")
    for mode in DATA_MODES:
        for sample in ("full", "10pct"):
            name = "full dataset" if sample == "full" else f"{100 * s['sample_fraction']:g}% sample"
            view = s["views"][f"{mode}-{sample}"]
            parts.append(format_counts(f"\n{mode}, {name} ({ms.path(mode, sample).name})", view["counts"],
                                       view["repeats"] if mode == "unpaired" else None,
                                       distinct_counts(ms.entries(mode, sample))))
    parts.append("(distinct: a control per LRG, a lens image per (LRG, replicate): selection sets repeat "
                 "an injection byte for byte; Drawn twice: entries that repeat a row already drawn, a row drawn "
                 "three times counts twice.)")
    if s["shortfalls"]:
        parts.append("\nunpaired cells short of negatives:\n" + "\n".join(
            "  " + Shortfall(**x).describe() for x in s["shortfalls"]))
    for split in SPLITS:
        failed = ms.failed_rows(split)
        if failed:
            parts.append(f"\n{split}: {len(failed)} rows the pipeline marked as failed, left out of every view "
                         f"(not bad rows): " + "; ".join(b.describe() for b in failed[:10])
                         + (" …" if len(failed) > 10 else ""))
        bad = ms.bad_rows(split)
        if bad:
            parts.append(f"\n{split}: {len(bad)} bad rows left out of the manifests (of "
                         f"{s['shard_rows'][split]}): " + "; ".join(b.describe() for b in bad[:10])
                         + (" …" if len(bad) > 10 else ""))
    for mode in DATA_MODES:
        parts.append("\n" + format_shares(f"{mode} sample vs full: stratum shares",
                                          s["views"][f"{mode}-10pct"]["shares"]))
    return "\n".join(parts)
