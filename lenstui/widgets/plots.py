"""Charts with axes (textual-plotext): the training curves, val AUROC by θ_E bin, the core sensitivity curve.

Each chart draws with Plotext's own axes, ticks and legend, plus the plan's lines: the §6.4
val AUROC target, the §6.3 PASS/FAIL bounds of the min-bin AUROC, and the §6.2 core-reliance
band (AUROC at R=0 minus 0.03 and minus 0.05: a curve that reaches below the lower line at the
reliance radius relies on the core). Epochs are whole numbers counted from 1 on the x axis.

Plotext is imported off the UI thread once a chart is on screen (a thread worker; it costs
~0.15 s), so the first screen does not wait for it; until then the chart says it is loading.
A chart redraws only when what it shows changes. Table cells keep their text sparklines
(charts.py), where no widget can go.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from engine.numbers import number

MAX_TICKS = 8   # integer epoch ticks on an axis at most
LINE = "braille"   # 2×4 dots a cell: a line, not a staircase of blocks, in a few rows


class Chart(Widget):
    """A Plotext plot of some data, drawn by `draw(plt, data)` each time the data changes."""

    DEFAULT_CSS = """
    Chart { height: 1fr; min-height: 8; }
    Chart > .chart-wait { color: $text-muted; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._data: Any = None
        self._plot: Any = None     # the PlotextPlot, once plotext is imported

    def compose(self) -> ComposeResult:
        if _PLOT_CLASS is not None:   # Plotext is loaded: the plot itself, at once
            self._plot = _PLOT_CLASS()
            yield self._plot
        else:
            yield Static("drawing the chart…", classes="chart-wait")

    def on_mount(self) -> None:
        if self._plot is None:
            self._load()
        else:
            self._draw()

    @work(thread=True, group="charts")
    def _load(self) -> None:
        try:
            self.app.call_from_thread(self._ready, plot_class())
        except RuntimeError:   # the app closed meanwhile
            pass

    def _ready(self, plot_class: type) -> None:
        if not self.is_mounted:
            return
        self.query(".chart-wait").remove()
        self._plot = plot_class()
        self.mount(self._plot)
        self._draw()

    @property
    def ready(self) -> bool:
        """Whether plotext is loaded and the chart shows its data."""
        return self._plot is not None

    def show(self, data: Any) -> None:
        """Draw `data` (what draw() takes) unless it is what is shown already."""
        if data == self._data:
            return
        self._data = data
        self._draw()

    def _draw(self) -> None:
        if self._plot is None or self._data is None:
            return
        plt = self._plot.plt
        plt.clear_figure()
        self.draw(plt, self._data)
        self._plot.refresh()

    def draw(self, plt: Any, data: Any) -> None:   # pragma: no cover - every chart overrides it
        raise NotImplementedError


MIN_SIZE = (20, 6)   # columns, rows: Plotext fails on a smaller canvas (its legend has no room)
_PLOT_CLASS: Any = None


def plot_class() -> type:
    """textual-plotext's PlotextPlot (imported on first use), drawing a note instead of failing when
    the layout gives it less room than a plot needs."""
    global _PLOT_CLASS
    if _PLOT_CLASS is None:
        from rich.text import Text
        from textual_plotext import PlotextPlot   # ~0.15 s: called from a worker thread

        class Plot(PlotextPlot):
            def render(self) -> Any:
                if self.size.width < MIN_SIZE[0] or self.size.height < MIN_SIZE[1]:
                    return Text(f"(a chart needs {MIN_SIZE[0]}×{MIN_SIZE[1]}; this is "
                                f"{self.size.width}×{self.size.height})", style="dim")
                return super().render()

        _PLOT_CLASS = Plot
    return _PLOT_CLASS


def epoch_ticks(epochs: Sequence[int]) -> list[int]:
    """Whole epochs for the x axis, at most MAX_TICKS of them, first and last included."""
    if not epochs:
        return []
    first, last = min(epochs), max(epochs)
    step = max(1, math.ceil((last - first + 1) / MAX_TICKS))
    ticks = list(range(first, last + 1, step))
    if ticks[-1] != last:
        ticks[-1 if len(ticks) > 1 and last - ticks[-1] < step / 2 else len(ticks):] = [last]
    return ticks


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for n, row in enumerate(history, 1):
        value = number(row.get(key))
        epoch = row.get("epoch") if isinstance(row.get("epoch"), int) else n
        if value is not None:
            xs.append(epoch)
            ys.append(value)
    return xs, ys


class LossChart(Chart):
    """Train and val loss per epoch (§5.1)."""

    def draw(self, plt: Any, history: Sequence[Mapping[str, Any]]) -> None:
        epochs: list[int] = []
        for key, label, colour in (("train_loss", "train loss", "orange"), ("val_loss", "val loss", "magenta")):
            xs, ys = _series(history, key)
            if xs:
                plt.plot(xs, ys, label=label, color=colour, marker=LINE)
                epochs += xs
        plt.xticks(epoch_ticks(epochs))
        plt.title("Loss (BCE) by epoch" if epochs else "Loss: after the first epoch")


class AurocChart(Chart):
    """Val AUROC per epoch, the §6.4 target as a line, the best epoch marked."""

    def draw(self, plt: Any, data: tuple[Sequence[Mapping[str, Any]], float]) -> None:
        history, target = data
        xs, ys = _series(history, "val_auroc")
        if xs:
            plt.plot(xs, ys, label="val AUROC", color="green", marker=LINE)
            best = max(range(len(ys)), key=lambda i: ys[i])   # the first of equal values, as best.pt keeps
            plt.scatter([xs[best]], [ys[best]], label=f"best {ys[best]:.3f} (epoch {xs[best]})", color="cyan",
                        marker="dot")
        plt.hline(target, "gray")
        plt.xticks(epoch_ticks(xs))
        plt.title(f"Val AUROC; target {target:.2f} grey" if xs else "Val AUROC: after the first epoch")


class ThetaEChart(Chart):
    """Val AUROC of each θ_E bin (and the held-out test's, when measured), with the §6.3 bounds.

    Titles stay short (a title wider than the chart is not drawn at all): the heading of the
    table (best.pt's, or which gate's) is in the text beneath it.
    """

    def draw(self, plt: Any, data: tuple[str, Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]],
                                         float, float]) -> None:
        heading, val, test, pass_above, fail_below = data
        labels = [_bin_label(b) + ("" if number(b.get("auroc")) is not None else " n/a") for b in val]
        # The axis starts at 0.5 (chance): a bin without an AUROC, or below chance, sits on it (Plotext
        # cannot draw a bar below its axis); the text beneath lists every bin's value and count.
        val_y = [_on_axis(b.get("auroc")) for b in val]
        if test:
            test_by_edges = {_bin_label(b): _on_axis(b.get("auroc")) for b in test}
            plt.multiple_bar(labels, [val_y, [test_by_edges.get(_bin_label(b), FLOOR) for b in val]],
                             labels=["val", "test (held out)"], color=["blue", "gray"])
        elif labels:
            plt.bar(labels, val_y, label="val", color="blue")
        plt.hline(pass_above, "green")
        plt.hline(fail_below, "red")
        plt.ylim(FLOOR, 1.0)
        plt.title(f"θ_E bins: PASS>{pass_above:.2f} green, FAIL<{fail_below:.2f} red")


class SensitivityChart(Chart):
    """AUROC with the core masked at each radius R (§5.5), and the §6.2 reliance band at R=radius."""

    def draw(self, plt: Any, data: tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]],
                                         int, float, float]) -> None:
        val, test, radius, pass_below, fail_above = data
        points = {}
        for curve, label, colour in ((val, "val", "green"), (test, "test (held out)", "gray")):
            xs = [int(c["radius"]) for c in curve if number(c.get("auroc")) is not None and number(c.get("radius")) is not None]
            ys = [number(c["auroc"]) for c in curve if number(c.get("auroc")) is not None and number(c.get("radius")) is not None]
            if xs:
                plt.plot(xs, ys, label=label, color=colour, marker="dot")
                points[label] = dict(zip(xs, ys))
        at_zero = (points.get("val") or {}).get(0)
        if at_zero is not None:
            plt.hline(at_zero - pass_below, "green")
            plt.hline(at_zero - fail_above, "red")
        plt.vline(radius, "gray")
        plt.xticks(sorted({r for p in points.values() for r in p}) or [0])
        plt.title(f"AUROC vs mask R px; reliance at R={radius}")


FLOOR = 0.5   # the θ_E chart's lowest AUROC: chance


def _on_axis(value: Any) -> float:
    v = number(value)
    return FLOOR if v is None else max(FLOOR, v)


def _bin_label(record: Mapping[str, Any]) -> str:
    edges = record.get("bin")
    if isinstance(edges, (list, tuple)) and len(edges) == 2 and all(number(e) is not None for e in edges):
        return f"{number(edges[0]):g}–{number(edges[1]):g}"
    return "?"


class Curves(Vertical):
    """The training curves: loss and val AUROC per epoch, one chart each, growing every epoch."""

    DEFAULT_CSS = """
    Curves { height: 1fr; min-height: 12; }
    Curves > Chart { height: 1fr; min-height: 6; }
    """

    def compose(self) -> ComposeResult:
        yield LossChart()
        yield AurocChart()

    def show(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Plot `history` (the §5.1 rows); no redraw when nothing changed."""
        rows = [dict(r) for r in history]
        self.query_one(LossChart).show(rows)
        self.query_one(AurocChart).show((rows, self.app.config.targets.val_auroc))

    @property
    def ready(self) -> bool:
        return all(chart.ready for chart in self.query(Chart))
