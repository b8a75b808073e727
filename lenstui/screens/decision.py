"""The decision screen: plan §10 on all hosts' results, the next phase one key away."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header

from engine.results.decision import PHASE1, VARIANTS, decide
from engine.results.representative import settings_text
from engine.protocol import rundir
from engine.protocol.rundir import ENDED_INCOMPLETE
from engine.results.reading import epochs_text
from lenstui import cells, runs
from lenstui.messages import LaunchRequested
from lenstui.screens.back import AltKeyMeansEscape
from lenstui.widgets.decision_panel import DecisionPanel, decision_text


Plan = list[tuple[str, str, str, "str | None"]]   # (experiment, host, gpu, base)


class DecisionScreen(AltKeyMeansEscape, Screen[None]):
    """Re-evaluated after every poll; `l`/enter opens the launch dialog for the proposed runs."""

    ESCAPE_ACTION = "back"

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
        Binding("l,enter", "launch_next", "Launch next"),
        Binding("r", "launch_replicates", "Replicates"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.decision: Any = None
        self.plan: Plan = []
        self.held: list[str] = []       # proposed runs no host can take now, and why
        self.replicates: list[tuple[str, str, str | None, tuple[str, ...]]] = []   # too close to call: seeds to run

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
        app = self.app
        try:
            self.decision = decide(app.results(), app.config)
        except Exception as exc:  # a decision bug must show, not blank the panel
            self.decision, self.plan = None, []
            self.query_one(DecisionPanel).show(
                Text(f"The decision tree could not be evaluated: {type(exc).__name__}: {exc}", style="red"))
            return
        self.plan, self.held = self._plan(self.decision)
        self.replicates = self._replicates(self.decision)
        self.query_one(DecisionPanel).show(decision_text(self.decision, self.plan, self.inputs(),
                                                         self.warnings(), self.held, self.replicates))

    def inputs(self) -> list[str]:
        """'A1: done on local, epoch 2/2 (epochs=2)' for each run the tree reads."""
        app = self.app
        out = []
        for exp_id in self.read_ids():
            choice = app.choices.get(exp_id)
            if choice is None:
                out.append(f"{exp_id}: not run")
                continue
            run = runs.ref_of(choice.chosen)
            text = (f"{exp_id}: {cells.state_text(run.state, as_of=run.as_of).plain} on {run.host}, "
                    f"epoch {epochs_text(run.entry)} ({settings_text(choice.chosen)})")
            group = app.groups.get(exp_id)
            if group is not None and group.is_replicated:
                text += f"; seed replicates: {group.words()}"
            elif choice.others:
                text += f"; {len(choice.others)} other run{'s' if len(choice.others) > 1 else ''}"
            out.append(text)
        return out

    def _replicates(self, decision: Any) -> list[tuple[str, str, str | None, tuple[str, ...]]]:
        """The seed replicates that would settle a decision too close to call, not yet run:
        (experiment, run name, host, extra arguments), each on a connected host (the default first)."""
        if decision is None or not getattr(decision, "settle_runs", ()):
            return []
        app = self.app
        connected = [h for h in app.enabled_hosts if getattr(app.snapshots.get(h), "connected", False)]
        if app.default_host in connected:
            connected.remove(app.default_host)
            connected.insert(0, app.default_host)
        out = []
        plan_seed = app.config.training.seed
        for exp_id, total in decision.settle_runs:
            group = app.groups.get(exp_id)
            have = {plan_seed if s is None else s for s in (group.seeds if group is not None else ())}
            missing = [s for s in range(plan_seed, plan_seed + total + len(have)) if s not in have]
            for i, seed in enumerate(missing[:max(0, total - len(have))]):
                host = connected[i % len(connected)] if connected else None
                out.append((exp_id, rundir.run_name(exp_id, seed, plan_seed), host,
                            tuple(rundir.seed_args(seed, plan_seed))))
        return out

    def action_launch_replicates(self) -> None:
        if not self.replicates:
            self.notify("No replicates to propose: the decision is not too close to call", severity="warning")
            return
        notes = [f"Seed replicates proposed by the decision panel (too close to call): {self.decision.title}."]
        self.post_message(LaunchRequested([(e, h, None, args) for e, _, h, args in self.replicates], notes))

    def read_ids(self) -> tuple[str, ...]:
        """The experiments this decision reads: A1 and B1, and the variants once B1 sends it to them."""
        branch = self.decision.branch if self.decision is not None else "waiting"
        phase1 = branch in ("waiting", "success_b1", "acceptable_b1", "stop_shortcut") or (
            branch == "outside_plan" and self.decision.criterion == "no B1 branch of §10 holds")
        return PHASE1 if phase1 else PHASE1 + VARIANTS

    def warnings(self) -> list[str]:
        """Smoke runs among the inputs: a decision on them is provisional at best."""
        smoke = self.app.smoke_inputs(self.read_ids())
        return ([f"The decision read runs shorter than the plan: {', '.join(smoke)}. Check before "
                 "spending a full run on it."] if smoke else [])

    def _plan(self, decision: Any) -> tuple[Plan, list[str]]:
        """Where each proposed run goes: never a host whose engine would refuse it.

        A run that ended incomplete is relaunched where it is (it resumes there). Otherwise a
        connected host without a run of that experiment, the default host first, spread in turn.
        A host where the experiment is running, or done (the engine refuses without --fresh), is
        never proposed; when no host fits, the screen says why instead.
        """
        if decision.stop or not decision.next_experiments:
            return [], []
        app = self.app
        connected = [h for h in app.enabled_hosts if getattr(app.snapshots.get(h), "connected", False)]
        if app.default_host in connected:
            connected.remove(app.default_host)
            connected.insert(0, app.default_host)
        plan: Plan = []
        held: list[str] = []
        turn = 0
        for exp_id in decision.next_experiments:
            base = decision.base if app.config.experiment(exp_id).base is not None else None
            runs = {h: app.run_on(exp_id, h) for h in connected}
            resume = [h for h, r in runs.items() if r is not None and r.state in ENDED_INCOMPLETE]
            free = [h for h, r in runs.items() if r is None]
            if resume:
                plan.append((exp_id, resume[0], "auto", base))
            elif free:
                plan.append((exp_id, free[turn % len(free)], "auto", base))
                turn += 1
            elif connected:
                where = ", ".join(f"{r.state} on {h}" for h, r in runs.items() if r is not None)
                held.append(f"{exp_id}: {where}; the engine refuses to start it again there without "
                            "--fresh: launch it from the matrix (l) if that is what you want")
        return plan, held

    def action_launch_next(self) -> None:
        if not self.plan:
            self.notify("Nothing to launch from the decision yet", severity="warning")
            return
        notes = [f"Proposed by the decision panel: {self.decision.title}."] + self.warnings()
        self.post_message(LaunchRequested([(e, h, b) for e, h, _, b in self.plan], notes))

    def action_back(self) -> None:
        self.dismiss(None)

    @property
    def text(self) -> str:
        """The panel's words."""
        return self.query_one(DecisionPanel).text
