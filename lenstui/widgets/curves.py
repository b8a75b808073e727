"""Training curves (train/val loss, val AUROC) drawn in braille, growing each epoch."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich.text import Text
from textual.widget import Widget

from engine.numbers import fixed
from lenstui.charts import braille_plot

SERIES: tuple[tuple[str, str, str], ...] = (
    # (metric key, label, colour)
    ("train_loss", "train loss", "yellow"),
    ("val_loss", "val loss", "magenta"),
    ("val_auroc", "val AUROC", "green"),
)


class Curves(Widget):
    """One small braille plot per metric, sized to the widget; redrawn only on new epochs."""

    DEFAULT_CSS = """
    Curves { height: 1fr; min-height: 9; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._history: list[dict[str, Any]] = []

    def show(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Plot `history` (the §5.1 rows); no redraw when nothing changed."""
        rows = [dict(r) for r in history]
        if rows != self._history:
            self._history = rows
            self.refresh()

    def render(self) -> Text:
        width, height = max(10, self.size.width), max(3, self.size.height)
        if not self._history:
            return Text("curves appear after the first epoch", style="dim")
        per = max(2, (height - 1) // len(SERIES))  # rows per series, the title line included
        out = Text()
        for i, (key, label, colour) in enumerate(SERIES):
            values = [r.get(key) for r in self._history]
            numbers = [v for v in values if isinstance(v, (int, float))]
            title = Text(f"{label}", style=f"bold {colour}")
            if numbers:
                title.append(f"  {fixed(numbers[-1], 4)}", style="bold")
                title.append(f"  [{fixed(min(numbers), 4)}–{fixed(max(numbers), 4)}]", style="dim")
            title.truncate(width, overflow="ellipsis")
            if i:
                out.append("\n")
            out.append_text(title)
            for line in braille_plot([values], width, per - 1):
                out.append("\n")
                out.append(line, style=colour)
        out.append("\n")
        out.append_text(epoch_axis(self._history, width))
        return out


def epoch_axis(history: Sequence[Mapping[str, Any]], width: int) -> Text:
    """'epoch 1 ……… 4': the x axis, in whole epochs counted from 1 as everywhere else."""
    first = history[0].get("epoch") if isinstance(history[0].get("epoch"), int) else 1
    last = history[-1].get("epoch") if isinstance(history[-1].get("epoch"), int) else len(history)
    left, right = f"epoch {first}", f"{last}"
    if len(history) == 1:
        return Text(left, style="dim")
    return Text(left + " " * max(1, width - len(left) - len(right)) + right, style="dim")
