"""The main screen: experiment matrix, hosts panel, the selected run's metric table."""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input

from engine.results.representative import describe
from engine.results.reading import history_of
from lenstui import cells, charts, runs
from lenstui.messages import DetailRequested, MainScreenReady
from lenstui.widgets.plots import Curves
from lenstui.widgets.hosts import HostsPanel
from lenstui.widgets.matrix import ExperimentMatrix
from lenstui.widgets.metrics_table import MetricsTable


class MainScreen(Screen[None]):
    """Draws what the app knows; its keys ask the app to act on the selected experiment."""

    BINDINGS = [
        Binding("l", "app.launch", "Launch"),
        Binding("a", "app.abort", "Abort"),
        Binding("enter", "app.detail", "Detail"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("d", "app.decision", "Decision"),
        Binding("s", "app.sync", "Sync"),
        Binding("r", "app.report", "Report"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._runs: Mapping[str, runs.RunRef] = {}
        self._choices: Mapping[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words matching id, host, status, masking …", id="filter")
        with Container(id="main"):
            with Vertical(id="experiments"):
                yield ExperimentMatrix(id="matrix")
            with Vertical(id="selected"):
                yield MetricsTable(id="metrics")
                yield Curves(id="selected-curves")  # shown on wide terminals only
            yield HostsPanel(id="hosts")   # focusable: Tab reaches it, the arrows scroll a long list
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#experiments").border_title = "Experiments"
        self.query_one("#hosts").border_title = "Hosts"
        self.query_one("#selected").border_title = "Selected run"
        self.query_one("#filter").display = False
        self.matrix.focus()
        self.post_message(MainScreenReady())

    @property
    def matrix(self) -> ExperimentMatrix:
        return self.query_one(ExperimentMatrix)

    @property
    def selected_id(self) -> str | None:
        """The experiment under the matrix cursor."""
        return self.matrix.selected_id

    def show(self, rows: Mapping[str, Mapping[str, Any]], runs: Mapping[str, runs.RunRef],
             host_order: Sequence[str], snapshots: Mapping[str, Any], disabled: Collection[str],
             choices: Mapping[str, Any] | None = None) -> None:
        """Bring the matrix, the hosts panel and the selected run's table up to date."""
        self._runs = runs
        self._choices = choices or {}
        self.matrix.set_rows(rows)
        self.query_one(HostsPanel).show(host_order, snapshots, disabled)
        self._show_selected()

    def _show_selected(self) -> None:
        exp_id = self.selected_id
        run = self._runs.get(exp_id) if exp_id else None
        box = self.query_one("#selected")
        if run is None:
            box.border_title = (f"{exp_id}: not run yet  ({self._config_words(exp_id)})" if exp_id
                                else "Selected run")
            self.query_one(MetricsTable).show(None, [])
            self.query_one(Curves).show([])
            return
        history = history_of(run.entry)
        trend = charts.sparkline([row.get("val_auroc") for row in history], width=20)
        choice = self._choices.get(exp_id)
        others = "".join(f"; also {describe(o)}" for o in choice.others) if choice is not None else ""
        box.border_title = (f"{exp_id} on {run.host}: {cells.state_text(run.state, as_of=run.as_of).plain}"
                            + (f"  val AUROC {trend}" if trend else "") + f"  ({self._config_words(exp_id)})"
                            + others)
        self.query_one(MetricsTable).show((exp_id, run.host), history)
        self.query_one(Curves).show(history)

    def _config_words(self, exp_id: str) -> str:
        """'unpaired · residual · R=5 p=0.5': the plan's configuration (the matrix drops it at 80 columns)."""
        exp = self.app.config.experiment(exp_id)
        return (f"{exp.data_mode} · {exp.preprocessing} · "
                f"{'masking ' + exp.masking.describe() if exp.base is None else 'from ' + exp.base}")

    @on(DataTable.RowHighlighted, "#matrix")
    def _row_highlighted(self) -> None:
        self._show_selected()

    @on(DataTable.RowSelected, "#matrix")
    def _row_selected(self) -> None:
        self.post_message(DetailRequested())

    # -- filter ---------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.matrix.set_filter(event.value)
        self._show_selected()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.matrix.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.matrix.set_filter("")
            self.matrix.focus()
