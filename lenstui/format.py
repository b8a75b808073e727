"""Pure functions that turn status and metrics into table cells and small charts.

Nothing here touches the screen, the network or NumPy: every function takes
plain values (the `engine.status` JSON, a metrics dict, the Config) and returns
strings or Rich `Text`, so it is tested without an app.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from rich.text import Text

from engine.config import Config, Experiment
from engine.protocol.rundir import RunState
from engine.protocol.schema import EPOCH_METRICS
from engine.results.reading import best_val_auroc, epochs_text, gates_in_order, last_val_auroc, latest_gate
from engine.numbers import DASH, fixed, number, scientific
from engine.results.representative import Choice, RunCandidate, candidate_from_entry, choose_all, last_seen_words

# A verdict is shown as its word in its colour: never colour alone.
VERDICT_STYLES = {"PASS": "bold green", "WARN": "bold yellow", "FAIL": "bold red"}
STATE_STYLES = {
    RunState.RUNNING: "bold cyan",
    RunState.PENDING: "cyan",
    RunState.DONE: "green",
    RunState.FAILED: "bold red",
    RunState.ABORTED: "yellow",
    RunState.LOST: "bold magenta",
}
SPARK_CHARS = "▁▂▃▄▅▆▇█"
BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"

# Live columns first so an 80-column terminal shows what changes; the plan's
# configuration columns (data mode, preprocessing, masking) follow.
MATRIX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("status", "Status"),
    ("host", "Host"),
    ("epoch", "Epoch"),
    ("val", "Val AUC"),
    ("best", "Best"),
    ("gates", "Gates c/r"),
    ("reliance", "Reliance"),
    ("mode", "Data"),
    ("prep", "Prep"),
    ("mask", "Masking"),
)
# Below 120 columns the configuration gives way (it is static, and the selected run names it).
NARROW_MATRIX_COLUMNS = tuple(c for c in MATRIX_COLUMNS if c[0] not in ("mode", "prep", "mask"))
# The §5.1 table: the epoch, then the plan's metrics under their own names.
EPOCH_COLUMNS: tuple[tuple[str, str], ...] = (("epoch", "Epoch"), *((name, name) for name in EPOCH_METRICS))


@dataclass(frozen=True)
class RunRef:
    """One experiment's run on one host, as the status probe reported it (or, when that host
    no longer answers, as it last reported it: `as_of` is when)."""

    exp_id: str
    host: str
    entry: Mapping[str, Any]
    as_of: float | None = None

    @property
    def state(self) -> str:
        return str(self.entry.get("state") or RunState.PENDING)

    @property
    def stale(self) -> bool:
        return self.as_of is not None


# ---------------------------------------------------------------------------
# Reading the status entry (tolerant of a run that has written nothing yet)


def verdict_of(entry: Mapping[str, Any], name: str) -> tuple[str | None, float | None]:
    """(verdict, value) the engine wrote for `name`, or (None, None)."""
    verdicts = entry.get("verdicts")
    item = verdicts.get(name) if isinstance(verdicts, dict) else None
    if not isinstance(item, dict):
        return None, None
    verdict = item.get("verdict")
    return (verdict if verdict in VERDICT_STYLES else None), number(item.get("value"))


def runs_of(snapshot: Any) -> dict[str, dict[str, Any]]:
    """A host snapshot's runs (exp_id -> status entry); empty when it has no status."""
    return runs_in(getattr(snapshot, "status", None))


def runs_in(status: Any) -> dict[str, dict[str, Any]]:
    """The runs of an engine.status answer (exp_id -> status entry)."""
    runs = status.get("runs") if isinstance(status, dict) else None
    return {e: r for e, r in runs.items() if isinstance(r, dict)} if isinstance(runs, dict) else {}


LastSeen = Mapping[str, "tuple[float, dict[str, Any]]"]   # host -> (when, its last status answer)


def all_runs(snapshots: Mapping[str, Any], host_order: Sequence[str],
             last_seen: LastSeen | None = None) -> list[RunRef]:
    """Every run on every host, host order then experiment order. A host whose latest poll has
    no status (disconnected, or its probe failing) shows its runs as last seen, with `as_of`."""
    out = []
    for host in host_order:
        snap = snapshots.get(host)
        runs, as_of = runs_of(snap), None
        if getattr(snap, "status", None) is None and last_seen and host in last_seen:
            as_of, status = last_seen[host]
            runs = runs_in(status)
        out += [RunRef(e, host, entry, as_of) for e, entry in runs.items()]
    return out


def candidate(ref: RunRef, order: int = 0) -> RunCandidate:
    """A run as engine.results.representative ranks it."""
    return candidate_from_entry(ref.exp_id, ref.entry, host=ref.host, order=order, as_of=ref.as_of)


def ref_of(c: RunCandidate) -> RunRef:
    return RunRef(c.experiment, c.host or "?", c.metrics, c.as_of)


def representatives(snapshots: Mapping[str, Any], host_order: Sequence[str], last_seen: LastSeen | None = None,
                    plan_epochs: int | None = None) -> dict[str, Choice]:
    """For each experiment, every run of it ranked by the one rule (engine/results/representative.py):
    the first stands for it in the matrix, the decision, the report and the CLI."""
    refs = all_runs(snapshots, host_order, last_seen)
    return choose_all([candidate(r, i) for i, r in enumerate(refs)], plan_epochs)


def hosts_with(exp_id: str, snapshots: Mapping[str, Any], host_order: Sequence[str],
               last_seen: LastSeen | None = None) -> list[str]:
    """The hosts that report (or last reported) a run of `exp_id`, in host order."""
    return [r.host for r in all_runs(snapshots, host_order, last_seen) if r.exp_id == exp_id]


# ---------------------------------------------------------------------------
# Cells


def fmt_seconds(value: Any) -> str:
    """A duration: 12.3s, 4m05s, 1h02m."""
    value = number(value)
    if value is None:
        return DASH
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def verdict_text(verdict: str | None, value: float | None = None, digits: int = 3) -> Text:
    """'0.612 WARN' in the verdict's colour; a dash when there is nothing yet."""
    if verdict is None and value is None:
        return Text(DASH, style="dim")
    parts = [] if value is None else [f"{value:.{digits}f}"]
    if verdict:
        parts.append(verdict)
    return Text(" ".join(parts), style=VERDICT_STYLES.get(verdict or "", ""))


def state_text(state: str | None, reason: str = "", as_of: float | None = None) -> Text:
    """A run state in its colour (`lost` stands out: the process died silently). A run on a host
    that no longer answers reads as last seen: 'running? as of 00:15'."""
    if not state:
        return Text(DASH, style="dim")
    if as_of is not None:
        return Text(last_seen_words(state, as_of), style="dim " + STATE_STYLES.get(state, ""))
    return Text(state, style=STATE_STYLES.get(state, ""))


def gate_cell(gate: Mapping[str, Any] | None, config: Config) -> Text:
    """'PASS/WARN': the core and radial LR gates of one evaluation, as words."""
    if gate is None:
        return Text(DASH, style="dim")
    out = Text()
    bands = (("core_lr_auc", config.thresholds.core_lr_auc),
             ("radial_lr_auc", config.thresholds.radial_lr_auc))
    for i, (key, band) in enumerate(bands):
        if i:
            out.append("/")
        verdict = band.classify(number(gate.get(key)))
        out.append(verdict or "?", style=VERDICT_STYLES.get(verdict or "", "dim"))
    return out


def judged_gate_cell(entry: Mapping[str, Any], config: Config) -> Text:
    """'PASS/PASS': the core and radial gate verdicts the engine wrote, which judge a masking
    variant on its masked probe and a finished run on its end-of-training gates (engine.results.verdicts);
    a run whose metrics carry no verdicts yet has its latest gate classified here instead."""
    judged = [verdict_of(entry, name) for name in ("core_lr_auc", "radial_lr_auc")]
    if all(value is None for _, value in judged):
        return gate_cell(latest_gate(entry), config)
    out = Text()
    for i, (verdict, _) in enumerate(judged):
        if i:
            out.append("/")
        out.append(verdict or "?", style=VERDICT_STYLES.get(verdict or "", "dim"))
    return out


def reliance_cell(entry: Mapping[str, Any], config: Config) -> Text:
    """core_reliance with its §6.2 verdict, once training has ended."""
    verdict, value = verdict_of(entry, "core_reliance")
    if value is None:
        value = number(entry.get("core_reliance"))
    if verdict is None:
        verdict = config.thresholds.core_reliance.classify(value)
    return verdict_text(verdict, value)


def matrix_row(exp: Experiment, run: RunRef | None, config: Config, *, other_hosts: int = 0) -> dict[str, str | Text]:
    """The matrix cells of one experiment, keyed by MATRIX_COLUMNS.

    `run` is the run that stands for the experiment (engine/results/representative.py); `other_hosts`:
    how many more runs of it there are (shown as "+N"; the detail view's `h` key steps through them).
    """
    row: dict[str, str | Text] = {
        "id": Text(exp.id, style="bold"),
        "mode": exp.data_mode,
        "prep": exp.preprocessing,
        "mask": exp.masking.describe() if exp.base is None else f"from {exp.base}",
    }
    if run is None:
        row.update(host=DASH, status=Text("not run", style="dim"), epoch=DASH, val=DASH,
                   best=DASH, gates=Text(DASH, style="dim"), reliance=Text(DASH, style="dim"))
        return row
    entry = run.entry
    host: str | Text = run.host
    if other_hosts:
        host = Text(run.host)
        host.append(f" +{other_hosts}", style="dim")
    row.update(
        host=host,
        status=state_text(run.state, as_of=run.as_of),
        epoch=epochs_text(entry),
        val=fixed(last_val_auroc(entry)),
        best=fixed(best_val_auroc(entry)[0]),
        gates=judged_gate_cell(entry, config),
        reliance=reliance_cell(entry, config),
    )
    return row


def epoch_row(row: Mapping[str, Any]) -> dict[str, str]:
    """One §5.1 history row as cells keyed by EPOCH_COLUMNS."""
    epoch = row.get("epoch")
    return {
        "epoch": str(epoch) if isinstance(epoch, int) else DASH,
        "train_loss": fixed(row.get("train_loss"), 4),
        "val_auroc": fixed(row.get("val_auroc"), 4),
        "val_loss": fixed(row.get("val_loss"), 4),
        "learning_rate": scientific(row.get("learning_rate")),
        "epoch_time_sec": fmt_seconds(row.get("epoch_time_sec")),
    }


def row_matches(cells: Mapping[str, Any], query: str) -> bool:
    """Whether any cell's plain text contains every word of `query` (case-insensitive)."""
    words = query.lower().split()
    if not words:
        return True
    haystack = " ".join(c.plain if isinstance(c, Text) else str(c) for c in cells.values()).lower()
    return all(w in haystack for w in words)


# ---------------------------------------------------------------------------
# Hosts


def ago(since: float | None, now: float | None = None) -> str:
    """'12s', '4m', '2h' since a Unix time; a dash for None."""
    if since is None:
        return DASH
    seconds = max(0.0, (time.time() if now is None else now) - since)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"


def not_configured_line(host: str) -> Text:
    """A host with `enabled = false`: shown plainly, not as an error."""
    return Text.assemble((host, "bold"), "  ", ("not configured", "dim"))


def host_headline(snapshot: Any, now: float | None = None) -> Text:
    """'local  connected' / 'lambda  not configured' / 'lambda2  disconnected since 14:02:11 (3m)'."""
    if not snapshot.configured:
        return not_configured_line(snapshot.host)
    out = Text(snapshot.host, style="bold")
    out.append("  ")
    if snapshot.connected:
        out.append("connected", style="green")
    else:
        out.append("disconnected", style="bold red")
        if snapshot.since is not None:
            clock = time.strftime("%H:%M:%S", time.localtime(snapshot.since))
            out.append(f" since {clock} ({ago(snapshot.since, now)})", style="red")
    return out


def gpu_line(gpu: Mapping[str, Any], run_ids: Sequence[str]) -> Text:
    """'GPU0 H100  45%  12.3/80G  61°C  A1': one GPU with the run on it.

    The model's first word only ('H100' of 'NVIDIA H100 80GB HBM3', 'A100' of 'A100-SXM4-40GB'): the memory column
    already says 80G, and the whole line must fit the hosts panel without wrapping.
    """
    model = re.split(r"[\s-]+", str(gpu.get("name") or "GPU").replace("NVIDIA ", "").strip())[0] or "GPU"
    out = Text(f"GPU{gpu.get('index', '?')} {model[:10]}", style="bold")
    util = number(gpu.get("utilization"))
    used, total = number(gpu.get("memory_used_mib")), number(gpu.get("memory_total_mib"))
    temp = number(gpu.get("temperature_c"))
    out.append(f"  {DASH if util is None else f'{util:.0f}%':>4}")
    if used is not None and total:
        out.append(f"  {used / 1024:.1f}/{total / 1024:.0f}G")
    if temp is not None:
        out.append(f"  {temp:.0f}°C", style="red" if temp >= 85 else "")
    out.append("  " + (", ".join(run_ids) if run_ids else "idle"),
               style="cyan" if run_ids else "dim")
    return out


def host_lines(snapshot: Any, now: float | None = None) -> list[Text]:
    """The hosts panel's lines for one host: headline, error, then one per GPU."""
    lines = [host_headline(snapshot, now)]
    if not snapshot.configured:
        return lines
    if snapshot.error:
        lines.append(Text("  " + snapshot.error.splitlines()[0][:200], style="red"))
    status = snapshot.status if isinstance(snapshot.status, dict) else None
    if status is None:
        return lines
    live = {e: r for e, r in runs_of(snapshot).items() if r.get("state") == RunState.RUNNING}
    gpus = [g for g in status.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        line = Text("  no GPU (CPU)", style="dim")
        if live:
            line.append("  " + ", ".join(live), style="cyan")
        lines.append(line)
        return lines
    for gpu in gpus:
        on_it = [e for e, r in live.items() if str(r.get("gpu")) == str(gpu.get("index"))]
        lines.append(Text("  ").append_text(gpu_line(gpu, on_it)))
    return lines


# ---------------------------------------------------------------------------
# Small charts


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


def braille_plot(series: Sequence[Sequence[Any]], width: int, height: int) -> list[str]:
    """Line plot of one or more series in braille dots (2×4 per cell), shared y scale.

    Returns `height` strings of `width` characters; consecutive samples are
    joined by straight segments, a missing value breaks the line.
    """
    width, height = max(1, width), max(1, height)
    clean = [[number(v) for v in s] for s in series]
    present = [v for s in clean for v in s if v is not None]
    grid = [[0] * width for _ in range(height)]
    if present:
        lo, hi = min(present), max(present)
        span = (hi - lo) or 1.0
        px_w, px_h = width * 2, height * 4
        for s in clean:
            prev: tuple[int, int] | None = None
            for i, v in enumerate(s):
                if v is None:
                    prev = None
                    continue
                x = 0 if len(s) == 1 else round(i * (px_w - 1) / (len(s) - 1))
                y = px_h - 1 - round((v - lo) / span * (px_h - 1))
                _segment(grid, prev or (x, y), (x, y))
                prev = (x, y)
    return ["".join(chr(0x2800 + cell) for cell in row) for row in grid]


def _segment(grid: list[list[int]], a: tuple[int, int], b: tuple[int, int]) -> None:
    """Dots along the straight line from a to b, one per pixel step."""
    steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
    for k in range(steps + 1):
        _dot(grid, round(a[0] + (b[0] - a[0]) * k / steps), round(a[1] + (b[1] - a[1]) * k / steps))


_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def _dot(grid: list[list[int]], x: int, y: int) -> None:
    cy, cx = y // 4, x // 2
    if 0 <= cy < len(grid) and 0 <= cx < len(grid[0]):
        grid[cy][cx] |= _BRAILLE_BITS[y % 4][x % 2]


# ---------------------------------------------------------------------------
# Run detail: θ_E bins, core sensitivity, gate history


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
        note = f"n={item.get('count', '?')}" + (f" {item['note']}" if item.get("note") else "")
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
    return [_bar_line(f"R={item.get('radius', '?')}", number(item.get("auroc")), width)
            for item in curve if isinstance(item, Mapping)]


def gate_history_lines(entry: Mapping[str, Any], config: Config) -> list[Text]:
    """One line per gate evaluation: after N epochs, core and radial LR AUC with verdicts."""
    rows = gates_in_order(entry)
    if not rows:
        return [Text("no gate evaluated yet", style="dim")]
    t = config.thresholds
    lines = [Text(f"{'after':>5}  {'core_lr_auc':<16}{'radial_lr_auc':<16}n", style="bold")]
    for g in rows:
        core, radial = number(g.get("core_lr_auc")), number(g.get("radial_lr_auc"))
        line = Text(f"{g.get('after_epochs', '?'):>5}  ")
        for cell in (verdict_text(t.core_lr_auc.classify(core), core),
                     verdict_text(t.radial_lr_auc.classify(radial), radial)):
            line.append_text(cell)
            line.append(" " * max(1, 16 - len(cell.plain)))
        line.append(str(g.get("gate_n_samples", DASH)))
        lines.append(line)
    return lines


def verdict_lines(entry: Mapping[str, Any]) -> list[Text]:
    """The engine's §6 verdicts: name, value, verdict word, rule."""
    verdicts = entry.get("verdicts")
    if not isinstance(verdicts, dict) or not verdicts:
        return [Text("no verdicts yet (written at the end of training)", style="dim")]
    lines = []
    for name, item in verdicts.items():
        if not isinstance(item, dict):
            continue
        verdict = item.get("verdict") if item.get("verdict") in VERDICT_STYLES else None
        line = Text(f"{name:<22}")
        line.append_text(verdict_text(verdict, number(item.get("value"))))
        if item.get("reading") == "masked":       # a masking variant's core gate (engine.results.verdicts)
            line.append(f" masked R={item.get('mask_radius')}")
        if item.get("uninformative"):             # a gate that cannot fail on the run's inputs
            line.append("  cannot fail on residual inputs", style="yellow")
        if item.get("rule"):
            line.append(f"  {item['rule']}", style="dim")
        lines.append(line)
    return lines
