"""The help screen: every key, what the colours mean, where runs keep going."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.protocol.rundir import RunState
from lenstui.cells import STATE_STYLES, VERDICT_STYLES
from lenstui.screens.back import AltKeyMeansEscape

KEYS: tuple[tuple[str, str], ...] = (
    ("l", "launch the selected experiment: host, GPU, arguments (a relaunch is pre-filled with the run's "
          "own), then confirm; a launch the engine would refuse is not offered"),
    ("a", "abort the selected run (confirm: run, host, epoch); SIGTERM, then SIGKILL after a grace"),
    ("enter", "run detail: epochs, curves, θ_E bins, core sensitivity, gates, log tail"),
    ("c", "in the detail view: cutouts, raw and preprocessed (local datasets)"),
    ("h", "in the detail view: the same experiment's next run: on the next host, or its next seed replicate"),
    ("escape", "back / close a dialog / clear the filter (backspace goes back too)"),
    ("tab", "the next panel (on a small terminal each one scrolls: arrows, PageUp/PageDown)"),
    ("/", "filter the matrix (words match any column: id, host, status, …)"),
    ("p", "the plan (§7): every step's status from the hosts now, the queue, the GPUs; in it, a advances "
          "(shows what runs where, asks once) and g asks the hosts again"),
    ("d", "decision panel: plan §10 on the results so far; l opens the launch dialog for the next phase; r there, the seed replicates that would settle a call too close to call"),
    ("s", "sync code (engine + experiments.toml) to every enabled remote host"),
    ("r", "write the results report (EXPERIMENT_RESULTS.md, experiment_metrics.csv)"),
    ("ctrl+p", "command palette: every action by name"),
    ("?", "this help"),
    ("q", "quit; runs keep going on their hosts"),
)


class HelpScreen(AltKeyMeansEscape, ModalScreen[None]):
    """Keys and legend; any of escape, q, ? or backspace closes it."""

    ESCAPE_ACTION = "close"

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 1 2;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark,backspace", "close", "Close")]

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, what in KEYS:
            keys.add_row(key, what)
        legend = Text("\nVerdicts (plan §6): ")
        for word, style in VERDICT_STYLES.items():
            legend.append(word, style=style).append("  ")
        legend.append("\nA run shown as ")
        legend.append(RunState.LOST.value, style=STATE_STYLES[RunState.LOST])
        legend.append(" stopped without writing a final status (process gone).")
        legend.append("\nEach row shows the run that stands for the experiment (+N: more runs, h in the "
                      "detail view);\na host that stops answering keeps its runs as last seen "
                      "('running? as of 00:15').")
        legend.append("\nRuns are detached from this screen: quitting, or losing the network, "
                      "does not stop them.\nMouse: click a row to select it, click it again for its detail.")
        with VerticalScroll():
            yield Static(Text("lenstui — keys", style="bold"))
            yield Static(keys)
            yield Static(legend)

    def action_close(self) -> None:
        self.dismiss(None)
