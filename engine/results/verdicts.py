"""Plan §6 verdicts: PASS / WARN / FAIL for one run's metrics, and where each value came from.

Torch-free and NumPy-free: the engine writes these into metrics.json, and
lenstui, the decision tree and the report read them on a laptop.

Each verdict is a plain dict, JSON-ready:

    {"verdict": "PASS"|"WARN"|"FAIL"|None, "value": float|None,
     "rule": "PASS < 0.60, WARN 0.60–0.65, FAIL > 0.65 (§6.1)",
     "source": "final_core_lr_auc", "note": str|None}

`verdict` is None when there is no value yet; `note` then says why.

Every verdict also says how sure its value is (engine/results/uncertainty.py, docs/DECISIONS.md
"Uncertainty"): its 95% interval over LRGs when the engine wrote one, its spread over seed
replicates when several are done, and the band edges they reach:

    "interval": [low, high]|None, "interval_source": "core_reliance_ci95"|None,
    "seeds": {"n", "mean", "sd", "values", "ci95"}|None,
    "crosses": [0.05], "uncertain": "crosses 0.05"|None

A verdict is judged on the value (the point estimate, as the plan says); `uncertain` marks one that
an interval puts on both sides of a band edge.

The two gate verdicts (core_lr_auc, radial_lr_auc) carry what a reader needs beside the value
they judge (docs/DECISIONS.md):

    "reading": "masked"|"unmasked", "mask_radius": 7|None,
    "unmasked_value", "unmasked_source"     the data's shortcut, when the reading is masked
    "ungrouped_value", "ungrouped_source"   the published method's value (plain StratifiedKFold):
                                            shown for comparison, never judged
    "raw_robust_value", "raw_robust_source" the same probe on raw_robust inputs (data-level context)
    "uninformative": str|None               why this gate cannot fail on the run's inputs

Every verdict reads validation numbers only, except `test_auroc`: §6.4's test target is
reported, but the test set is held out (§5.6) and no decision reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from engine.config import Band, Targets, Thresholds
from engine.numbers import in_words, number
from engine.results.reading import best_val_auroc, latest_gate_with
from engine.results.uncertainty import crossed, describe, edge_words, hull, interval_of, pair, seeds_of

# The verdicts compute_verdicts returns, in the plan's order (§6.1–§6.4).
VERDICT_NAMES = ("core_lr_auc", "radial_lr_auc", "core_reliance", "thetae_min_bin_auroc",
                 "thetae_max_spread", "val_auroc", "test_auroc")

# Values are rounded to this many decimals before they meet a bound: a value
# that is a difference of two AUROCs (0.93 - 0.88 = 0.05000000000000004) must
# land on the bound it means, not a hair past it.
DECIMALS = 10

_THETAE_RULE_NOTE = "§6.3 names only PASS and FAIL; values between the two are WARN"

# A radial profile whose every feature is below this (in the inputs' MAD units) carries no
# information: residual inputs measure 1e-4 to 1e-3 (float16 rounding of a subtracted median),
# raw_robust inputs tens (the host's light). Used only for runs that did not record `inputs`.
RADIAL_FLAT = 0.05
HELD_OUT = "held out (§5.6): reported, never used to choose a configuration"


def rounded(value: float | None) -> float | None:
    """`value` rounded to DECIMALS, the form every comparison with a bound uses."""
    return None if value is None else round(value, DECIMALS)


def classify(band: Band, value: float | None) -> str | None:
    """`band.classify` on the rounded value (see DECIMALS)."""
    return band.classify(rounded(value))


def verdict_entry(verdict: str | None, value: float | None, rule: str, source: str | None,
                  note: str | None = None, **extra: Any) -> dict[str, Any]:
    """One verdict record, the shape metrics.json carries under `verdicts` (gate verdicts add `extra`)."""
    return {"verdict": verdict, "value": value, "rule": rule, "source": source, "note": note, **extra}


def band_rule(band: Band) -> str:
    """The band in words with the plan section it comes from."""
    section = {"core_lr_auc": "§6.1", "radial_lr_auc": "§6.1", "core_reliance": "§6.2"}
    if band.name in section:
        return f"{band.describe()} ({section[band.name]})"
    return f"{band.describe()} ({_THETAE_RULE_NOTE})"


def target_rule(target: float, held_out: bool = False) -> str:
    """A §6.4 quality target in words: PASS above it, FAIL otherwise, never WARN."""
    rule = f"PASS > {target:.2f}, FAIL otherwise (§6.4 is a target, not a band: no WARN)"
    return rule + (f"; {HELD_OUT}" if held_out else "")


# ---------------------------------------------------------------------------
# Gates


def gate_label(gate: Mapping[str, Any]) -> str:
    """'gates[after_epochs=10]': how a source names one gate record."""
    after = gate.get("after_epochs")
    return f"gates[after_epochs={after}]"


def gate_verdicts(gate: Mapping[str, Any], thresholds: Thresholds) -> dict[str, dict[str, Any]]:
    """The §6.1 verdicts (core_lr_auc, radial_lr_auc) of one gate record."""
    out = {}
    for name in ("core_lr_auc", "radial_lr_auc"):
        band: Band = getattr(thresholds, name)
        raw = gate.get(name)
        value = number(raw)
        note = None
        if value is None:
            note = "not measured at this gate" if raw is None else f"not a number: {raw!r}"
        out[name] = verdict_entry(classify(band, value), value, band_rule(band),
                                  f"{gate_label(gate)}.{name}", note)
    return out


# ---------------------------------------------------------------------------
# θ_E stratification


def bin_label(bin_record: Mapping[str, Any]) -> str:
    """'[0.50, 0.75)' for a bin record; '[?]' when the record has no usable edges."""
    edges = bin_record.get("bin")
    if isinstance(edges, (list, tuple)) and len(edges) == 2 and all(number(e) is not None for e in edges):
        return f"[{number(edges[0]):.2f}, {number(edges[1]):.2f})"
    return "[?]"


# Where θ_E bins come from, in the order a verdict looks for them, and their words.
THETAE_KINDS = {
    "val": "val bins of best.pt (end of training)",
    "val_gate": "the latest val gate's bins (the weights of that epoch, not best.pt)",
    "test": "test bins (held out: never used for selection)",
}


@dataclass(frozen=True)
class ThetaESummary:
    """The θ_E bins one verdict is computed from, and what they add up to."""

    kind: str | None               # a key of THETAE_KINDS; None when no bins were found
    source: str | None             # "final_val_auroc_by_thetae", "gates[after_epochs=N].val_auroc_by_thetae", ...
    bins: tuple[Mapping[str, Any], ...]
    min_auroc: float | None
    max_spread: float | None       # max − min over bins with an AUROC, rounded (DECIMALS)
    excluded: tuple[str, ...]      # bins without an AUROC, each with why
    note: str | None               # what a reader must know about these numbers


def _thetae_bins(metrics: Mapping[str, Any], kind: str) -> tuple[str | None, list[Mapping[str, Any]]]:
    if kind in ("val", "test"):
        key = "final_val_auroc_by_thetae" if kind == "val" else "test_auroc_by_thetae"
        bins = metrics.get(key)
        if isinstance(bins, list) and bins:
            return key, [b for b in bins if isinstance(b, Mapping)]
        return None, []
    gate = latest_gate_with(metrics, "val_auroc_by_thetae")
    if gate is None:
        return None, []
    return (f"{gate_label(gate)}.val_auroc_by_thetae",
            [b for b in gate["val_auroc_by_thetae"] if isinstance(b, Mapping)])


def thetae_summary(metrics: Mapping[str, Any], kind: str | None = None) -> ThetaESummary:
    """θ_E min-bin AUROC and spread from `kind` (a key of THETAE_KINDS).

    Without `kind`: validation only, best.pt's table ("val") when written, else the latest
    gate's ("val_gate"). The test bins are read only when asked for by name (the report's
    held-out table): no verdict and no decision reads them.
    """
    kinds = (kind,) if kind else ("val", "val_gate")
    source, bins, used = None, [], None
    for k in kinds:
        source, bins = _thetae_bins(metrics, k)
        if source:
            used = k
            break
    if not source:
        where = {"test": "no test_auroc_by_thetae", "val": "no final_val_auroc_by_thetae",
                 "val_gate": "no gate with val_auroc_by_thetae"}
        missing = " and ".join(where[k] for k in kinds)
        return ThetaESummary(None, None, (), None, None, (), f"not measured yet ({missing})")
    aurocs, excluded = [], []
    for b in bins:
        value = number(b.get("auroc"))
        if value is None:
            why = b.get("note") or f"no AUROC ({b.get('count', '?')} positives)"
            excluded.append(f"{bin_label(b)}: {why}")
        else:
            aurocs.append(value)
    notes = [f"from {source}: {THETAE_KINDS[used]}"]
    if excluded:
        notes.append("excluded, no AUROC: " + "; ".join(excluded))
    low = min(aurocs) if aurocs else None
    spread = rounded(max(aurocs) - min(aurocs)) if len(aurocs) >= 2 else None
    if not aurocs:
        notes.append("no bin has an AUROC")
    elif len(aurocs) < 2:
        notes.append("a spread needs at least two bins with an AUROC")
    return ThetaESummary(used, source, tuple(bins), low, spread, tuple(excluded), "; ".join(notes))


# ---------------------------------------------------------------------------
# All verdicts of a run


def _final_written(metrics: Mapping[str, Any], name: str) -> bool:
    """Whether the end-of-training gates have run (their keys are written, with or without values)."""
    return any(k in metrics for k in ("final_gate_n_samples", f"final_{name}", f"final_masked_{name}"))


def _radius(value: Any) -> int:
    radius = number(value)
    return int(radius) if radius is not None and radius > 0 else 0


def probe_verdict(metrics: Mapping[str, Any], name: str, band: Band, reading: str = "unmasked",
                  flat_note: str | None = None) -> dict[str, Any]:
    """The §6.1 verdict of one shortcut probe (`core_lr_auc` or `radial_lr_auc`) with its context.

    `reading` "masked": for a run that masks the core in training (a mask radius recorded
    at the end of training, or by the gate read), judge the probe on val images masked at
    that radius; the unmasked value rides along. A run without a mask is judged unmasked
    either way. The value is `final_*` (full val set, best.pt's epoch for the radius) when
    the end-of-training gates have run, else the latest epoch gate's (and the note says so).
    A masked probe without a value is never replaced by the unmasked one.
    """
    if _final_written(metrics, name):
        radius = _radius(metrics.get("final_mask_radius"))
        record, prefix, where = metrics, "final_", None
    else:
        record = latest_gate_with(metrics, name)
        if record is None:
            return verdict_entry(None, None, band_rule(band), None,
                                 f"no final_{name} and no gate has measured {name} yet",
                                 reading="unmasked", mask_radius=None)
        radius = _radius(record.get("mask_radius"))
        n = record.get("gate_n_samples")
        prefix, where = "", f"{gate_label(record)}."
    masked = reading == "masked" and radius > 0
    key = f"{prefix}masked_{name}" if masked else f"{prefix}{name}"
    source = f"{where or ''}{key}"
    value = number(record.get(key))
    notes = []
    if where is not None:
        size = f", {n} samples" if n is not None else ""
        notes.append(f"final_{name} not written yet: the latest gate's value "
                     f"(after {record.get('after_epochs')} epochs{size})")
    if masked:
        notes.append(f"judged on val images masked at R={radius} (decision.variant_core_gate = \"masked\")")
    if value is None:
        why = record.get("final_gate_note" if where is None else "note")
        notes.append(f"{key} has no value" + (f": {why}" if why else ""))
    extra: dict[str, Any] = {"reading": "masked" if masked else "unmasked", "mask_radius": radius or None}
    if masked:
        extra.update(unmasked_value=number(record.get(f"{prefix}{name}")), unmasked_source=f"{where or ''}{prefix}{name}")
    extra.update(ungrouped_value=number(record.get(f"{key}_ungrouped")), ungrouped_source=f"{source}_ungrouped")
    raw_key = f"final_raw_robust_{name}"
    extra.update(raw_robust_value=number(metrics.get(raw_key)),
                 raw_robust_source=raw_key if number(metrics.get(raw_key)) is not None else None)
    extra["uninformative"] = flat_note
    return verdict_entry(classify(band, value), value, band_rule(band), source, "; ".join(notes) or None, **extra)


def radial_flat_note(metrics: Mapping[str, Any]) -> str | None:
    """Why the radial probe cannot fail on this run's inputs; None when it can.

    Residual preprocessing subtracts each ring's median, so the radial profile the probe reads
    is ~0 whatever the data hold. Known from the run's recorded inputs, or measured (every
    radial feature below RADIAL_FLAT).
    """
    inputs = metrics.get("inputs") if isinstance(metrics.get("inputs"), Mapping) else {}
    measured = number(metrics.get("final_radial_feature_max_abs"))
    if measured is None:
        gate = latest_gate_with(metrics, "radial_lr_auc")
        measured = number(gate.get("radial_feature_max_abs")) if gate else None
    if inputs.get("preprocessing") != "residual" and (measured is None or measured >= RADIAL_FLAT):
        return None
    size = f" (largest |feature| {measured:.1e})" if measured is not None else ""
    raw = number(metrics.get("final_raw_robust_radial_lr_auc"))
    context = (f"; on raw_robust inputs the same val rows give {in_words(raw)} (data-level context)"
               if raw is not None else "")
    return ("cannot fail on residual inputs: the ring medians are subtracted, so every radial "
            f"feature is ~0{size} and a PASS says nothing about the data{context}")


def _target_entry(target: float, value: float | None, source: str | None, missing: str,
                  held_out: bool = False) -> dict[str, Any]:
    if value is None:
        return verdict_entry(None, None, target_rule(target, held_out), source, missing)
    verdict = "PASS" if rounded(value) > target else "FAIL"
    return verdict_entry(verdict, value, target_rule(target, held_out), source, HELD_OUT if held_out else None)


def compute_verdicts(metrics: Mapping[str, Any], thresholds: Thresholds, targets: Targets, *,
                     variant_core_gate: str = "masked") -> dict[str, dict[str, Any]]:
    """Every §6 verdict of one run (VERDICT_NAMES), each with its value, rule, source and note.

    `variant_core_gate` is the config's `[decision] variant_core_gate`: which core probe a run
    that masks the core is judged on (probe_verdict).
    """
    out: dict[str, dict[str, Any]] = {
        "core_lr_auc": probe_verdict(metrics, "core_lr_auc", thresholds.core_lr_auc, variant_core_gate),
        "radial_lr_auc": probe_verdict(metrics, "radial_lr_auc", thresholds.radial_lr_auc, "unmasked",
                                       radial_flat_note(metrics)),
    }

    band = thresholds.core_reliance
    value = number(metrics.get("core_reliance"))
    note = None if value is not None else "not measured yet (written at the end of training, §5.5)"
    out["core_reliance"] = verdict_entry(classify(band, value), value, band_rule(band),
                                         "core_reliance" if value is not None else None, note)

    th = thetae_summary(metrics)
    band = thresholds.thetae_min_bin_auroc
    out["thetae_min_bin_auroc"] = verdict_entry(classify(band, th.min_auroc), th.min_auroc,
                                                band_rule(band), th.source, th.note)
    band = thresholds.thetae_max_spread
    out["thetae_max_spread"] = verdict_entry(classify(band, th.max_spread), th.max_spread,
                                             band_rule(band), th.source, th.note)

    value, source = best_val_auroc(metrics)
    out["val_auroc"] = _target_entry(targets.val_auroc, value, source, "no epoch has finished yet")
    value = number(metrics.get("test_auroc"))
    out["test_auroc"] = _target_entry(targets.test_auroc, value, "test_auroc" if value is not None else None,
                                      "no test evaluation yet (§5.6: final evaluation only)", held_out=True)

    # How sure each value is: the key its interval and seed spread sit beside (None: it has none).
    theta_key = {"final_val_auroc_by_thetae": "final_val_thetae", "test_auroc_by_thetae": "test_thetae"}.get(th.source or "")
    keys = {
        "core_lr_auc": out["core_lr_auc"]["source"], "radial_lr_auc": out["radial_lr_auc"]["source"],
        "core_reliance": out["core_reliance"]["source"],
        "thetae_min_bin_auroc": f"{theta_key}_min_bin_auroc" if theta_key else None,
        "thetae_max_spread": f"{theta_key}_max_spread" if theta_key else None,
        "val_auroc": out["val_auroc"]["source"] if out["val_auroc"]["source"] == "best_val_auroc" else None,
        "test_auroc": out["test_auroc"]["source"],
    }
    bands = {"core_lr_auc": thresholds.core_lr_auc, "radial_lr_auc": thresholds.radial_lr_auc,
             "core_reliance": thresholds.core_reliance, "thetae_min_bin_auroc": thresholds.thetae_min_bin_auroc,
             "thetae_max_spread": thresholds.thetae_max_spread}
    targets_by_name = {"val_auroc": targets.val_auroc, "test_auroc": targets.test_auroc}
    for name, entry in out.items():
        add_uncertainty(entry, metrics, keys[name], bands.get(name), targets_by_name.get(name))
    return out


def add_uncertainty(entry: dict[str, Any], metrics: Mapping[str, Any], key: str | None,
                    band: Band | None = None, target: float | None = None) -> dict[str, Any]:
    """Put beside a verdict its interval over LRGs (`<key>_ci95`), its seed spread (`<key>_seeds`)
    and the band edges either reaches (`crosses`, `uncertain`). An epoch gate's value (its key names
    a gate record) and a file without intervals get none: `interval` None, `crosses` []."""
    plain = key is not None and "[" not in key
    lrgs = interval_of(metrics, key) if plain else None
    seeds = seeds_of(metrics, key) if plain else None
    reach = hull(lrgs, (seeds.low, seeds.high) if seeds is not None else None)
    edges = crossed(band, *reach, target) if reach is not None and entry.get("value") is not None else []
    entry.update(interval=list(lrgs) if lrgs is not None else None,
                 interval_source=f"{key}_ci95" if lrgs is not None else None,
                 seeds=seeds.as_dict() if seeds is not None else None,
                 crosses=edges, uncertain=edge_words(edges) if edges else None)
    return entry


def verdict_words(entry: Mapping[str, Any]) -> str:
    """'WARN (0.048, 95% 0.041–0.056: crosses 0.05)': a verdict, its value, and how sure the value is."""
    return f"{entry.get('verdict') or 'no verdict'} ({shown_value(entry)})"


def shown_value(entry: Mapping[str, Any]) -> str:
    """'0.702', '0.702 masked at R=3' for a masked gate reading, 'no value' when there is none; with
    its interval and seed spread when it has them: '0.048, 95% 0.041–0.056: crosses 0.05'."""
    value = number(entry.get("value"))
    if value is None:
        return "no value"
    seeds = entry.get("seeds") if isinstance(entry.get("seeds"), Mapping) else None
    spread = seeds_of({"v_seeds": seeds}, "v") if seeds is not None else None
    text = describe(value, pair(entry.get("interval")), spread, entry.get("crosses") or ())
    if entry.get("reading") == "masked":   # the radius right after the value it qualifies
        return f"{in_words(value)} masked at R={entry.get('mask_radius')}" + text[len(in_words(value)):]
    return text


def failing(verdicts: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """'core_lr_auc FAIL (0.702)' for each of `names` whose verdict is not PASS."""
    out = []
    for name in names:
        v = verdicts.get(name) or {}
        if v.get("verdict") != "PASS":
            out.append(f"{name} {v.get('verdict') or 'unknown'} ({shown_value(v)})")
    return out
