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
from engine.numbers import DASH, is_int, number

if TYPE_CHECKING:
    from engine.results.report import Collection


# ---------------------------------------------------------------------------
# The plan's order of experiments


def plan_order(runs: Mapping[str, Any], config: Config) -> list[str]:
    """The plan's experiments in the file's order, then any other experiment in `runs`, sorted."""
    return list(config.experiments) + sorted(e for e in runs if e not in config.experiments)


def plan_order_of(collection: "Collection", config: Config) -> list[str]:
    """The plan's experiments in the file's order, then any other experiment found."""
    return plan_order(collection.runs, config)


# ---------------------------------------------------------------------------
# The epochs: counted from 1, so "epoch N" is the Nth and N epochs are done after it


def history_of(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-epoch rows (§5.1), oldest first."""
    history = metrics.get("history")
    return [r for r in history if isinstance(r, Mapping)] if isinstance(history, list) else []


def epochs_done(metrics: Mapping[str, Any]) -> int | None:
    """Completed epochs: the history's length, else a status entry's `epoch` (the newest, from 1)."""
    if isinstance(metrics.get("history"), list):
        return len(history_of(metrics))
    epoch = metrics.get("epoch")
    return epoch if is_int(epoch) else None


def epochs_text(metrics: Mapping[str, Any], missing: str = DASH) -> str:
    """'3/50': completed epochs over the planned ones ('?' for an unknown plan); `missing` when neither."""
    done, planned = epochs_done(metrics), metrics.get("epochs_planned")
    if done is None and not is_int(planned):
        return missing
    return f"{missing if done is None else done}/{planned if is_int(planned) else '?'}"


def last_val_auroc(metrics: Mapping[str, Any]) -> float | None:
    """The newest epoch's val AUROC (a status entry's own field, else the history's)."""
    value = number(metrics.get("val_auroc"))
    if value is None:
        rows = history_of(metrics)
        value = number(rows[-1].get("val_auroc")) if rows else None
    return value


def gates_in_order(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The gate records sorted by `after_epochs` (records without it keep their place at the end)."""
    gates = metrics.get("gates")
    if not isinstance(gates, list):   # a status entry from an engine that sent only its latest `gate`
        gate = metrics.get("gate")
        gates = [gate] if isinstance(gate, Mapping) else []
    records = [g for g in gates if isinstance(g, Mapping)]
    with_epoch = [g for g in records if number(g.get("after_epochs")) is not None]
    without = [g for g in records if number(g.get("after_epochs")) is None]
    return sorted(with_epoch, key=lambda g: number(g["after_epochs"])) + without

def latest_gate_with(metrics: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The latest gate whose `key` holds a value (a number, or a non-empty list of bins)."""
    for gate in reversed(gates_in_order(metrics)):
        value = gate.get(key)
        if number(value) is not None or (isinstance(value, list) and value):
            return gate
    return None



def best_val_auroc(metrics: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """`best_val_auroc` when written, else the best of the history so far (source says which)."""
    value = number(metrics.get("best_val_auroc"))
    if value is not None:
        return value, "best_val_auroc"
    history = metrics.get("history")
    values = [number(r.get("val_auroc")) for r in history if isinstance(r, Mapping)] \
        if isinstance(history, list) else []
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return max(values), "history (best val_auroc so far; best_val_auroc not written yet)"



def latest_gate(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The most recent gate evaluation, or None before the first."""
    gates = gates_in_order(metrics)
    return gates[-1] if gates else None


# ---------------------------------------------------------------------------
# Tables and curves




def overrides_text(metrics: Mapping[str, Any]) -> str:
    """'epochs=2; limit_train=64': what the run changed from experiments.toml ('' for none)."""
    overrides = metrics.get("overrides")
    if not isinstance(overrides, Mapping):
        return ""
    return "; ".join(f"{k}={v}" for k, v in overrides.items())


def bin_key(lo: float, hi: float) -> str:
    """'0.50_0.75': a θ_E bin as a column name and a lookup key."""
    return f"{lo:.2f}_{hi:.2f}"


def bins_by_edges(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """θ_E bin records keyed by bin_key of their edges."""
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
    """The held-out test table by edges (never read for a verdict)."""
    records = metrics.get("test_auroc_by_thetae")
    return bins_by_edges(r for r in records if isinstance(r, Mapping)) if isinstance(records, list) else {}


def curve_of(metrics: Mapping[str, Any], key: str) -> dict[int, float]:
    """A sensitivity curve (`core_sensitivity`, `test_core_sensitivity`) as {radius: AUROC}."""
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
    """The effective sample per split (rows, distinct images, LRGs per label)."""
    sample = metrics.get("effective_sample")
    return {k: v for k, v in sample.items() if isinstance(v, Mapping)} if isinstance(sample, Mapping) else {}
