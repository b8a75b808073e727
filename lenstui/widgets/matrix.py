"""The experiment matrix: one row per experiment of the plan, live."""

from __future__ import annotations

from typing import Mapping

from rich.text import Text
from textual.widgets import DataTable

from lenstui.cells import MATRIX_COLUMNS, NARROW_MATRIX_COLUMNS, row_matches

Cells = Mapping[str, "str | Text"]


class ExperimentMatrix(DataTable):
    """The plan's matrix (A1 … FULL) with each run's live state.

    Rows are keyed by experiment id and columns by MATRIX_COLUMNS keys; a
    refresh touches only the cells whose text changed, so a 2 s poll of an
    idle fleet redraws nothing. Narrower than WIDE_AT columns, the plan's
    configuration columns (data, preprocessing, masking) give way to the live
    ones, which then all fit 80 columns; the selected run's title names the
    configuration, and the filter still matches it.
    """

    WIDE_AT = 120

    DEFAULT_CSS = """
    ExperimentMatrix { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[str, dict[str, str | Text]] = {}   # every experiment, filtered or not
        self._shown: list[str] = []
        self._query = ""
        self._columns: tuple[tuple[str, str], ...] = ()

    def on_mount(self) -> None:
        self._set_columns()

    def on_resize(self) -> None:
        self._set_columns()

    def _set_columns(self) -> None:
        wanted = MATRIX_COLUMNS if self.app.size.width >= self.WIDE_AT else NARROW_MATRIX_COLUMNS
        if wanted == self._columns:
            return
        keep = self.selected_id
        self.clear(columns=True)
        self._columns, self._shown = wanted, []
        for key, label in wanted:
            self.add_column(label, key=key)
        self._sync()
        if keep is not None:
            self.select(keep)

    def cells(self, exp_id: str) -> dict[str, "str | Text"]:
        """Every cell of an experiment's row, shown or not (the narrow matrix drops the configuration)."""
        return dict(self._rows.get(exp_id, {}))

    @property
    def column_keys(self) -> list[str]:
        """The columns shown now."""
        return [key for key, _ in self._columns]

    @property
    def selected_id(self) -> str | None:
        """The experiment under the cursor, or None when no row is shown."""
        if not self._shown or self.cursor_row < 0:
            return None
        return self._shown[min(self.cursor_row, len(self._shown) - 1)]

    @property
    def shown_ids(self) -> list[str]:
        """The experiment ids visible now (after the filter), top to bottom."""
        return list(self._shown)

    def set_rows(self, rows: Mapping[str, Cells]) -> None:
        """Show `rows` (exp_id -> cells, in plan order), updating only changed cells."""
        self._rows = {exp_id: dict(cells) for exp_id, cells in rows.items()}
        self._sync()

    def set_filter(self, query: str) -> None:
        """Show only rows whose text contains every word of `query`."""
        self._query = query
        self._sync()

    def select(self, exp_id: str) -> None:
        """Move the cursor to `exp_id` if it is shown."""
        if exp_id in self._shown:
            self.move_cursor(row=self._shown.index(exp_id))

    def _sync(self) -> None:
        wanted = [e for e, cells in self._rows.items() if row_matches(cells, self._query)]
        if wanted != self._shown:
            keep = self.selected_id
            self.clear()
            for exp_id in wanted:
                cells = self._rows[exp_id]
                self.add_row(*(cells[key] for key, _ in self._columns), key=exp_id)
            self._shown = wanted
            if keep in wanted:
                self.move_cursor(row=wanted.index(keep))
            return
        for exp_id in wanted:
            cells = self._rows[exp_id]
            for key, _ in self._columns:
                new = cells[key]
                if _same(self.get_cell(exp_id, key), new):
                    continue
                self.update_cell(exp_id, key, new, update_width=True)


def _same(a: object, b: object) -> bool:
    """Whether two cells would draw the same (text, style and spans)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return (a.plain, str(a.style), a.spans) == (b.plain, str(b.style), b.spans)
    return not isinstance(a, Text) and not isinstance(b, Text) and str(a) == str(b)
