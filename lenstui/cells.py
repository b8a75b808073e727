"""Table cells: the matrix's row of each experiment, the §5.1 epoch rows, verdicts and states in words and colour.

Nothing here touches the screen, the network or NumPy: every function takes plain values (a
status entry, a metrics dict, the Config) and returns strings or Rich `Text`, so it is tested
without an app. The runs the hosts report are runs.py; the hosts panel hostlines.py; charts charts.py.
"""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text

from engine.config import Config, Experiment
from engine.protocol.rundir import RunState
from engine.protocol.schema import EPOCH_METRICS
from lenstui.runs import RunRef, verdict_of
from engine.results.reading import best_val_auroc, epochs_text, gates_in_order, last_val_auroc, latest_gate
from engine.numbers import DASH, fixed, number, scientific
from engine.results.representative import last_seen_words
from engine.results.uncertainty import edge_words, pair, range_words, seeds_of

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
    seeds = seeds_of(entry, "core_reliance")
    if seeds is not None and value is not None:   # the mean of seed replicates, ± their sd
        return Text(f"{value:.3f}±{seeds.sd:.3f} {verdict or ''}".rstrip(), style=VERDICT_STYLES.get(verdict or "", ""))
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
    status = state_text(run.state, as_of=run.as_of)
    replicates = entry.get("replicates") if isinstance(entry.get("replicates"), Mapping) else None
    if replicates is not None:   # seed replicates (engine/results/replicates.py): how many are done
        status.append(f" {replicates.get('done', 0)}/{replicates.get('n', 1)}", style="bold")
    row.update(
        host=host,
        status=status,
        epoch=epochs_text(entry),
        val=fixed(last_val_auroc(entry)),
        best=mean_sd_text(entry, "best_val_auroc", best_val_auroc(entry)[0]),
        gates=judged_gate_cell(entry, config),
        reliance=reliance_cell(entry, config),
    )
    return row


def mean_sd_text(entry: Mapping[str, Any], key: str, value: float | None) -> str:
    """'0.812' for one run; '0.812±0.004' for the mean of seed replicates (their sd)."""
    seeds = seeds_of(entry, key)
    if seeds is None:
        return fixed(value)
    return f"{seeds.mean:.3f}±{seeds.sd:.3f}"


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
# Run detail: θ_E bins, core sensitivity, gate history


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


def uncertainty_text(item: Mapping[str, Any]) -> Text:
    """'  95% 0.041–0.056 crosses 0.05' beside a verdict: its interval over LRGs, its seed spread, and
    the band edges they cross (in yellow: the verdict could be the other one)."""
    out = Text()
    lrgs = pair(item.get("interval"))
    seeds = seeds_of({"v_seeds": item.get("seeds")}, "v")
    if seeds is not None:
        out.append(f"  ±{seeds.sd:.3f} over {seeds.n} seeds", style="dim")
    if lrgs is not None:
        out.append(f"  95% {range_words(*lrgs)}", style="dim")
    if seeds is not None:
        out.append(f"  seeds 95% {range_words(seeds.low, seeds.high)}", style="dim")
    if item.get("crosses"):
        out.append(f"  {edge_words(item['crosses'])}", style="bold yellow")
    return out


def replicate_lines(group: Any, shown: Any, run_name: str, host: str) -> list[Text]:
    """The detail view's seed replicates: each run (the one shown marked), its seed, state, best val
    AUROC and core_reliance with their intervals over LRGs, then their mean ± sd."""
    lines = []
    for c in group.members:
        here = c.run_name == run_name and c.host == host
        line = Text(("▶ " if here else "  ") + f"{c.run_name:<14} seed {c.metrics.get('seed', '?')!s:<5} on "
                    f"{c.host or '?'}  ", style="bold" if here else "")
        line.append_text(state_text(c.state))
        for key, label in (("best_val_auroc", "val AUROC"), ("core_reliance", "core_reliance")):
            value = number(c.metrics.get(key))
            if value is None:
                continue
            line.append(f"  {label} {value:.3f}")
            lrgs = pair(c.metrics.get(f"{key}_ci95"))
            if lrgs is not None:
                line.append(f" (95% {range_words(*lrgs)})", style="dim")
        lines.append(line)
    for c in group.ended:
        lines.append(Text(f"  {c.run_name:<14} on {c.host or '?'}  {c.state}: left out of the mean", style="dim"))
    entry = shown.entry if shown is not None else {}
    spread = [f"{label} {s.mean:.3f} ± {s.sd:.3f}" for key, label in
              (("best_val_auroc", "val AUROC"), ("core_reliance", "core_reliance"))
              if (s := seeds_of(entry, key)) is not None]
    lines.append(Text("  mean over done seeds: " + "; ".join(spread) if spread
                      else "  fewer than two seeds done: no mean yet", style="bold" if spread else "dim"))
    return lines


def verdict_lines(entry: Mapping[str, Any]) -> list[Text]:
    """The engine's §6 verdicts: name, value, verdict word, its interval and the edges it crosses, rule."""
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
        line.append_text(uncertainty_text(item))
        if item.get("rule"):
            line.append(f"  {item['rule']}", style="dim")
        lines.append(line)
    return lines
