"""Charts in text, where a chart widget cannot go: a sparkline for a title or a cell, and rows of
AUROC with an eighth-block bar for the θ_E bins and the core sensitivity curve (their exact values
and counts, beside the plots with axes of widgets/plots.py)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from rich.text import Text

from engine.numbers import DASH, in_words, number
from engine.protocol.rundir import RunState
from engine.results.reading import gates_in_order


SPARK_CHARS = "▁▂▃▄▅▆▇█"

BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"

def sparkline(values: Iterable[Any], width: int | None = None) -> str:
    """A one-line chart of `values` (missing values as spaces), newest on the right."""
    nums = [number(v) for v in values]
    if width is not None and len(nums) > width:
        nums = nums[-width:]
    present = [v for v in nums if v is not None]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    span = hi - lo
    out = []
    for v in nums:
        if v is None:
            out.append(" ")
        elif span == 0:
            out.append(SPARK_CHARS[len(SPARK_CHARS) // 2])
        else:
            out.append(SPARK_CHARS[round((v - lo) / span * (len(SPARK_CHARS) - 1))])
    return "".join(out)

def bar(value: float | None, lo: float, hi: float, width: int) -> str:
    """A horizontal bar of `width` cells for `value` on [lo, hi], in eighths."""
    value = number(value)
    if value is None or width <= 0 or hi <= lo:
        return ""
    frac = min(1.0, max(0.0, (value - lo) / (hi - lo)))
    eighths = round(frac * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (BAR_EIGHTHS[rest] if rest else "")).ljust(width)


def _bar_line(label: str, value: float | None, width: int, note: str = "",
              lo: float = 0.5, hi: float = 1.0) -> Text:
    """'[0.50,0.75)  ██████▍     0.873  n=212' on an AUROC axis from `lo` to `hi`."""
    out = Text(f"{label:<13}")
    if value is None:
        out.append(" " * width, style="dim")
        out.append(f"  {DASH:>5}", style="dim")
    else:
        out.append(bar(value, lo, hi, width), style="cyan")
        out.append(f"  {value:5.3f}")
    if note:
        out.append(f"  {note}", style="dim")
    return out

def thetae_lines(bins: Sequence[Mapping[str, Any]] | None, width: int = 24) -> list[Text]:
    """One line per θ_E bin: a bar of its AUROC (its positives against all negatives) and its count.
    A bin without an AUROC (too few positives) takes one short line too."""
    if not bins:
        return [Text("no θ_E bins yet (the first gate is before epoch 1)", style="dim")]
    lines = []
    for item in bins:
        lo_hi = item.get("bin") if isinstance(item, Mapping) else None
        label = f"[{lo_hi[0]:.2f},{lo_hi[1]:.2f})" if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 else "?"
        value = number(item.get("auroc"))
        if value is None:   # the engine's note is long; the count says why
            line = Text(f"{label:<13}")
            line.append(f"{DASH}  n={item.get('count', '?')}, too few for an AUROC", style="dim")
            lines.append(line)
            continue
        note = f"n={item.get('count', '?')}" + (f" {item['note']}" if item.get("note") else "") + _ci_words(item)
        lines.append(_bar_line(label, value, width, note))
    return lines

def thetae_table(entry: Mapping[str, Any]) -> tuple[str, Sequence[Mapping[str, Any]] | None]:
    """(heading, bins) of the val AUROC by θ_E the detail view shows, with where they come from.

    A finished run shows the table measured at the end of training with best.pt
    (`final_val_auroc_by_thetae`); a run still training, its latest gate's. A finished run
    written before the engine measured that table says so, as does a gate before epoch 1
    (the untrained model)."""
    final = entry.get("final_val_auroc_by_thetae")
    if isinstance(final, list) and final:
        return "Val AUROC by θ_E (end of training, best.pt)", final
    gate = next((g for g in reversed(gates_in_order(entry)) if g.get("val_auroc_by_thetae")), None)
    if gate is None:
        return "Val AUROC by θ_E", None
    after = gate.get("after_epochs", "?")
    what = f"gate after {after} epoch{'' if after == 1 else 's'}"
    if after == 0:
        what += ": the untrained model"
    if entry.get("state") == RunState.DONE:
        what += "; no end-of-training table in this run's metrics (an engine before it)"
    return f"Val AUROC by θ_E ({what})", gate.get("val_auroc_by_thetae")

def sensitivity_lines(curve: Sequence[Mapping[str, Any]] | None, width: int = 24) -> list[Text]:
    """One bar per mask radius: AUROC with the central R pixels zeroed (plan §5.5)."""
    if not curve:
        return [Text("no core sensitivity curve yet (end of training)", style="dim")]
    return [_bar_line(f"R={item.get('radius', '?')}", number(item.get("auroc")), width, _ci_words(item).strip())
            for item in curve if isinstance(item, Mapping)]


def _ci_words(item: Mapping[str, Any]) -> str:
    """' 95% 0.71–0.78': a bin's or a curve point's interval over LRGs (end of training), else ''."""
    raw = item.get("ci95")
    if isinstance(raw, (list, tuple)) and len(raw) == 2 and all(number(v) is not None for v in raw):
        return f" 95% {in_words(raw[0])}–{in_words(raw[1])}"
    return ""
