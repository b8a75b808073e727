"""Run detail: per-epoch table, curves, θ_E bins, core sensitivity, gates, log tail."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Static

from engine.numbers import fixed
from engine.results.reading import best_val_auroc, epochs_text, history_of, last_val_auroc
from lenstui import cells, charts, runs
from lenstui.messages import AbortRequested, LogFetched
from lenstui.screens.back import AltKeyMeansEscape
from lenstui.screens.cutouts import CutoutScreen
from lenstui.widgets.plots import Curves, SensitivityChart, ThetaEChart
from lenstui.widgets.metrics_table import MetricsTable

LOG_TAIL_BYTES = 20000
LOG_OVERLAP = 200  # characters used to find where a newer tail continues the shown one


def probe_lines(entry: dict[str, Any]) -> list[Text]:
    """The two gate verdicts with what rides beside them: the unmasked probe of a masked reading,
    the published method's ungrouped value, the raw_robust context, and why a gate cannot fail."""
    verdicts = entry.get("verdicts") if isinstance(entry.get("verdicts"), dict) else {}
    lines = []
    for name in ("core_lr_auc", "radial_lr_auc"):
        item = verdicts.get(name)
        if not isinstance(item, dict) or item.get("value") is None:
            continue
        line = Text(f"{name:<15}")
        line.append_text(cells.verdict_text(item.get("verdict"), item.get("value")))
        line.append(f" masked R={item.get('mask_radius')}" if item.get("reading") == "masked" else " unmasked")
        lines.append(line)
        extras = []
        if item.get("reading") == "masked":
            extras.append(f"unmasked (the data's shortcut) {fixed(item.get('unmasked_value'))}")
        extras.append(f"ungrouped (published method, leaks LRG identity) {fixed(item.get('ungrouped_value'))}")
        if item.get("raw_robust_value") is not None:
            extras.append(f"raw_robust inputs {fixed(item.get('raw_robust_value'))}")
        lines.append(Text("    " + "; ".join(extras), style="dim"))
        if item.get("uninformative"):
            lines.append(Text(f"    {item['uninformative']}", style="yellow"))
    return lines or [Text("no gate verdict yet", style="dim")]


class DetailScreen(AltKeyMeansEscape, Screen[None]):
    """One run on one host, live; escape goes back to the matrix."""

    ESCAPE_ACTION = "back"

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
        Binding("c", "cutouts", "Cutouts"),
        Binding("a", "abort", "Abort"),
        Binding("h", "other_host", "Other run"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, exp_id: str, host: str, run_name: str | None = None) -> None:
        super().__init__()
        self.exp_id, self.host = exp_id, host
        self.run_name = run_name or exp_id   # the run directory: the experiment id, or <id>@seed<N>
        self._log_text = ""
        self._log_in_flight = False
        self._drawn: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="detail-title")
        with VerticalScroll(id="detail-grid"):
            with Vertical(id="epochs-box"):
                yield MetricsTable(id="epochs")
            with Vertical(id="curves-box"):
                yield Curves(id="curves")
            with VerticalScroll(id="analysis-box"):
                yield ThetaEChart(id="thetae-chart")
                yield SensitivityChart(id="sensitivity-chart")
                yield Static(id="analysis")
            with Vertical(id="log-box"):
                yield Log(id="log", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        titles = {"#epochs-box": "Epochs (§5.1)", "#curves-box": "Curves",
                  "#analysis-box": "θ_E bins · core sensitivity · gates · verdicts",
                  "#log-box": "stdout.log (following)"}
        for selector, title in titles.items():
            self.query_one(selector).border_title = title
        self.refresh_from_app()
        self.fetch_log()
        self.set_interval(self.app.refresh_s, self.fetch_log)
        if self.app.size.width < 120:
            # One column: the page scrolls (PageDown, arrows) and Tab visits each panel.
            self.query_one("#detail-grid").focus()

    @property
    def entry(self) -> dict[str, Any] | None:
        """This run's latest status entry (as last seen while its host does not answer), or None."""
        run = self.app.run_on(self.exp_id, self.host, self.run_name)
        return dict(run.entry) if run else None

    def refresh_from_app(self) -> None:
        """Redraw from the app's latest snapshot of this host (called after each poll)."""
        run = self.app.run_on(self.exp_id, self.host, self.run_name)
        entry = dict(run.entry) if run else {}
        title = Text(f"{self.run_name} on {self.host}  ", style="bold")
        title.append_text(cells.state_text(entry.get("state") or "unknown", as_of=run.as_of if run else None))
        title.append(f"  epoch {epochs_text(entry)}  val AUROC {fixed(last_val_auroc(entry))}"
                     f"  best {fixed(best_val_auroc(entry)[0])}")
        if entry.get("reason"):
            title.append(f"  ({entry['reason']})", style="dim")
        for error in entry.get("errors") or []:
            title.append(f"\n{error}", style="red")
        group = getattr(self.app, "groups", {}).get(self.exp_id)
        if group is not None and group.is_replicated:
            title.append(f"\nseed replicates of {self.exp_id}: {group.words()} (h: the next run)", style="dim")
        history = history_of(entry)
        self.query_one(MetricsTable).show((self.run_name, self.host), history)
        self.query_one(Curves).show(history)
        th = self.app.config.thresholds
        heading, bins = charts.thetae_table(entry)
        test = entry.get("test_auroc_by_thetae") if entry.get("test_auroc") is not None else None
        self.query_one(ThetaEChart).show((heading, list(bins or []), list(test or []),
                                          th.thetae_min_bin_auroc.pass_limit, th.thetae_min_bin_auroc.fail_limit))
        self.query_one(SensitivityChart).show((list(entry.get("core_sensitivity") or []),
                                               list(entry.get("test_core_sensitivity") or []),
                                               self.app.config.metrics.core_reliance_radius,
                                               th.core_reliance.pass_limit, th.core_reliance.fail_limit))
        for selector, text in (("#detail-title", title), ("#analysis", self._analysis(entry))):
            key = (text.plain, tuple(text.spans))
            if self._drawn.get(selector) != key:  # an idle poll redraws nothing
                self._drawn[selector] = key
                self.query_one(selector, Static).update(text)

    def _analysis(self, entry: dict[str, Any]) -> Text:
        heading, bins = charts.thetae_table(entry)
        parts: list[tuple[str, list[Text]]] = [
            (heading, charts.thetae_lines(bins)),
            ("Core sensitivity (val)", charts.sensitivity_lines(entry.get("core_sensitivity"))),
            ("Gate history", cells.gate_history_lines(entry, self.app.config)),
            ("Shortcut probes (what the gate verdicts judge, and beside them)", probe_lines(entry)),
            ("Verdicts (§6), with the 95% interval over LRGs", cells.verdict_lines(entry)),
        ]
        group = getattr(self.app, "groups", {}).get(self.exp_id)
        if group is not None and group.is_replicated:
            parts.append((f"Seed replicates of {self.exp_id} ({group.words()})",
                          cells.replicate_lines(group, self.app.runs.get(self.exp_id), self.run_name, self.host)))
        if entry.get("test_auroc") is not None:
            parts += [
                (f"Test AUROC {fixed(entry.get('test_auroc'))} (held out, not used for selection) — by θ_E",
                 charts.thetae_lines(entry.get("test_auroc_by_thetae"))),
                ("Core sensitivity (test, held out)", charts.sensitivity_lines(entry.get("test_core_sensitivity"))),
            ]
        out = Text()
        for i, (heading, lines) in enumerate(parts):
            out.append(("\n\n" if i else "") + heading, style="bold underline")
            for line in lines:
                out.append("\n")
                out.append_text(line)
        return out

    # -- the log tail, fetched in a worker ---------------------------------------

    def fetch_log(self) -> None:
        """Fetch the log tail unless a fetch is already in flight."""
        if not self._log_in_flight:
            self._log_in_flight = True
            self._log_worker()

    @work(thread=True, group="log")
    def _log_worker(self) -> None:
        name, host = self.run_name, self.host
        try:
            text = self.app.fleet.logs(name, host, tail_bytes=LOG_TAIL_BYTES)
        except Exception as exc:
            self.post_message(LogFetched(name, host, "", f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(LogFetched(name, host, text))

    def on_log_fetched(self, message: LogFetched) -> None:
        self._log_in_flight = False
        if (message.exp_id, message.host) != (self.run_name, self.host):   # fetched before `h` switched runs
            self.fetch_log()
            return
        log = self.query_one(Log)
        if message.error:
            self.query_one("#log-box").border_subtitle = f"cannot read the log: {message.error}"[:120]
            return
        self.query_one("#log-box").border_subtitle = ""
        new = message.text
        if new == self._log_text:
            return
        old, self._log_text = self._log_text, new
        anchor = old[-LOG_OVERLAP:]
        at = new.rfind(anchor) if anchor else -1
        if anchor and at >= 0:
            log.write(new[at + len(anchor):])  # append what is new; the view keeps following
        else:
            log.clear()
            log.write(new)

    @property
    def log_text(self) -> str:
        """The log tail as last fetched."""
        return self._log_text

    # -- keys -----------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss(None)

    def action_abort(self) -> None:
        self.post_message(AbortRequested(self.exp_id, self.host, self.run_name))

    def action_other_host(self) -> None:
        """The same experiment's next run: on another host, or another seed replicate (when it has several)."""
        found = [(r.run_name, r.host) for r in runs.runs_with(self.exp_id, self.app.snapshots, self.app.host_order,
                                                              self.app.last_seen)]
        here = (self.run_name, self.host)
        others = [k for k in found if k != here]
        if not others:
            self.notify(f"{self.exp_id} has no other run (another host, or a seed replicate)", severity="warning")
            return
        after = found[found.index(here) + 1:] if here in found else []
        self.run_name, self.host = (after or others)[0]
        self._log_text, self._drawn = "", {}
        self.query_one(Log).clear()
        self.refresh_from_app()
        self.fetch_log()

    def action_cutouts(self) -> None:
        self.app.push_screen(CutoutScreen(self.exp_id, self.host))
