"""The selected run's per-epoch metrics (plan §5.1), newest epoch at the bottom."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from textual.widgets import DataTable

from lenstui.cells import EPOCH_COLUMNS, epoch_row


class MetricsTable(DataTable):
    """train_loss, val_auroc, val_loss, learning_rate, epoch_time_sec per epoch.

    Epochs only ever get appended during a run, so a refresh adds the new rows
    and leaves the old ones alone; a different run (or a restart) redraws all.
    """

    DEFAULT_CSS = """
    MetricsTable { height: auto; max-height: 100%; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._owner: tuple[str, str] | None = None
        self._rows: list[dict[str, str]] = []

    def on_mount(self) -> None:
        for key, label in EPOCH_COLUMNS:
            self.add_column(label, key=key)

    def show(self, owner: tuple[str, str] | None, history: Sequence[Mapping[str, Any]]) -> None:
        """Show `history` of run `owner` = (exp_id, host); None clears the table."""
        rows = [epoch_row(r) for r in history] if owner else []
        if owner != self._owner or rows[: len(self._rows)] != self._rows:
            self.clear()
            self._rows = []
            self._owner = owner
        follow = self.cursor_row >= len(self._rows) - 1
        for row in rows[len(self._rows):]:
            self.add_row(*(row[key] for key, _ in EPOCH_COLUMNS))
        if len(rows) > len(self._rows):
            self._rows = rows
            if follow:  # keep the newest epoch in view unless the user scrolled up
                self.move_cursor(row=len(rows) - 1)

    @property
    def row_texts(self) -> list[dict[str, str]]:
        """The rows shown, as cells by column key."""
        return list(self._rows)
