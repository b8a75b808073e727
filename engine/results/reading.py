"""Reading one run's metrics document (metrics.json, or a status entry, which is a superset).

What the report, the decision's words and lenstui's views take from a run: its history and
completed epochs, its overrides in words, the θ_E tables of val (best.pt's, else the latest
gate's) and test, a sensitivity curve, the effective sample, and the plan's order of
experiments. Every value read through engine/numbers.py: a missing or garbled value is None,
never an exception. Torch-free and NumPy-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from engine.config import Config
from engine.numbers import number
from engine.results.verdicts import latest_gate_with

if TYPE_CHECKING:
    from engine.results.report import Collection


def plan_order(runs: Mapping[str, Any], config: Config) -> list[str]:
    return list(config.experiments) + sorted(e for e in runs if e not in config.experiments)


def plan_order_of(collection: "Collection", config: Config) -> list[str]:
    """The plan's experiments in the file's order, then any other experiment found."""
    return plan_order(collection.runs, config)


def epochs_completed(metrics: Mapping[str, Any]) -> int:
    history = metrics.get("history")
    return len(history) if isinstance(history, list) else 0

def history_of(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = metrics.get("history")
    return [r for r in history if isinstance(r, Mapping)] if isinstance(history, list) else []

def overrides_text(metrics: Mapping[str, Any]) -> str:
    overrides = metrics.get("overrides")
    if not isinstance(overrides, Mapping):
        return ""
    return "; ".join(f"{k}={v}" for k, v in overrides.items())

def bin_key(lo: float, hi: float) -> str:
    return f"{lo:.2f}_{hi:.2f}"

def bins_by_edges(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for record in records:
        edges = record.get("bin")
        if isinstance(edges, (list, tuple)) and len(edges) == 2:
            lo, hi = number(edges[0]), number(edges[1])
            if lo is not None and hi is not None:
                out[bin_key(lo, hi)] = record
    return out

def val_bins(metrics: Mapping[str, Any]) -> tuple[str | None, dict[str, Mapping[str, Any]]]:
    """best.pt's val table (end of training) when written, else the latest gate's; and which."""
    final = metrics.get("final_val_auroc_by_thetae")
    if isinstance(final, list) and final:
        return "best.pt", bins_by_edges(r for r in final if isinstance(r, Mapping))
    gate = latest_gate_with(metrics, "val_auroc_by_thetae")
    if gate is None:
        return None, {}
    return f"gate after {gate.get('after_epochs')} epochs", bins_by_edges(gate["val_auroc_by_thetae"])

def test_bins(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    records = metrics.get("test_auroc_by_thetae")
    return bins_by_edges(r for r in records if isinstance(r, Mapping)) if isinstance(records, list) else {}

def curve_of(metrics: Mapping[str, Any], key: str) -> dict[int, float]:
    points = metrics.get(key)
    out = {}
    if isinstance(points, list):
        for p in points:
            if isinstance(p, Mapping) and number(p.get("radius")) is not None:
                value = number(p.get("auroc"))
                if value is not None:
                    out[int(number(p["radius"]))] = value
    return out

def effective(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    sample = metrics.get("effective_sample")
    return {k: v for k, v in sample.items() if isinstance(v, Mapping)} if isinstance(sample, Mapping) else {}
