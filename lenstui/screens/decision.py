"""The decision screen: plan §10 on all hosts' results, the next phase one key away."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header

from lenstui.widgets.decision_panel import DecisionPanel, decision_text


class DecisionScreen(Screen[None]):
    """Re-evaluated after every poll; `l`/enter launches the proposed next runs."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("l,enter", "launch_next", "Launch next"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.decision: Any = None
        self.plan: list[tuple[str, str, str, str | None]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="decision-box"):
            yield DecisionPanel(id="decision")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#decision-box").border_title = "Decision (plan §10)"
        self.refresh_from_app()

    def refresh_from_app(self) -> None:
        """Evaluate the decision tree on the app's latest results and redraw."""
        from engine.decision import decide  # torch-free; loaded when the panel first opens
        app = self.app
        try:
            self.decision = decide(app.results(), app.config)
        except Exception as exc:  # a decision bug must show, not blank the panel
            self.decision, self.plan = None, []
            self.query_one(DecisionPanel).show(
                Text(f"The decision tree could not be evaluated: {type(exc).__name__}: {exc}", style="red"))
            return
        self.plan = self._plan(self.decision)
        self.query_one(DecisionPanel).show(decision_text(self.decision, self.plan))

    def _plan(self, decision: Any) -> list[tuple[str, str, str, str | None]]:
        """Spread the next experiments over connected hosts, the default host first."""
        if decision.stop or not decision.next_experiments:
            return []
        app = self.app
        connected = [h for h in app.enabled_hosts
                     if getattr(app.snapshots.get(h), "connected", False)]
        hosts = connected or ([app.default_host] if app.default_host else [])
        if app.default_host in hosts:
            hosts.remove(app.default_host)
            hosts.insert(0, app.default_host)
        if not hosts:
            return []
        plan = []
        for i, exp_id in enumerate(decision.next_experiments):
            base = decision.base if app.config.experiment(exp_id).base is not None else None
            plan.append((exp_id, hosts[i % len(hosts)], "auto", base))
        return plan

    def action_launch_next(self) -> None:
        if not self.plan:
            self.app.notify("Nothing to launch from the decision yet", severity="warning")
            return
        self.app.confirm_launch(self.plan, self.app.train_args)

    def action_back(self) -> None:
        self.dismiss(None)

    @property
    def text(self) -> str:
        """The panel's words."""
        return self.query_one(DecisionPanel).text
