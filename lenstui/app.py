"""The Textual control center: wiring of widgets, screens, workers and the Fleet.

The UI thread only draws and keeps state. Every call to the Fleet (poll,
launch, abort, logs, sync) runs in a thread worker and reports back with a
message from `lenstui.messages`, so a slow or dead host never freezes the
screen. Nothing here imports torch or NumPy: the app starts on a laptop.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen

from engine.config import Config, ConfigError, load_config
from engine.numbers import fixed
from engine.protocol import exitcodes
from engine.protocol import rundir
from engine.protocol.rundir import ENDED_INCOMPLETE, IN_PROGRESS, RunState
from engine.results.representative import settings_rank, settings_text
from engine.protocol.train_options import extra_args as recorded_args
from engine.protocol.train_options import is_fresh, seed_in, settings_difference
from engine.results.reading import best_val_auroc, epochs_text, gates_in_order, latest_gate
from lenstui import cells, runs
from lenstui.fleet import Fleet, FleetError
from lenstui.messages import (AbortRequested, Action, ActionFinished, DetailRequested, HostPolled,
                              LaunchRequested, MainScreenReady, PlanFactsGathered, PlanPreviewReady)
from lenstui.palette import LensCommands
from lenstui.screens.confirm import ConfirmScreen
from lenstui.screens.detail import DetailScreen
from lenstui.screens.decision import DecisionScreen
from lenstui.screens.help import HelpScreen
from lenstui.screens.launch import HostChoice, LaunchChoice, LaunchScreen, PriorRun, Problem
from lenstui.screens.main import MainScreen
from lenstui.screens.plan import PlanScreen
from lenstui.widgets.matrix import ExperimentMatrix

ABORT_GRACE_S = 30


class LensTUI(App[None]):
    """The control center: the fleet's latest state, the workers that talk to it, the actions."""

    CSS_PATH = "app.tcss"
    TITLE = "lenstui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    COMMANDS = App.COMMANDS | {LensCommands}
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "request_quit", "Quit"),
    ]

    def __init__(self, config: Config, config_path: Path, fleet: Any, host: str | None = None,
                 refresh_s: float = 2.0, train_args: Sequence[str] = ()) -> None:
        super().__init__()
        self.config = config
        self.config_path = Path(config_path)
        self.sub_title = config.plan_name
        self.fleet = fleet
        self.refresh_s = refresh_s
        self.train_args = tuple(train_args)
        self.host_order: list[str] = list(config.hosts)
        self.enabled_hosts = [h for h in self.host_order if config.hosts[h].enabled]
        if host is not None:
            config.host(host)  # an unknown name fails here, with the known ones listed
        self.default_host = host or ("local" if "local" in self.enabled_hosts else
                                     next(iter(self.enabled_hosts), None))
        self.snapshots: dict[str, Any] = {}   # host -> latest HostSnapshot (enabled hosts only)
        self.last_seen: dict[str, tuple[float, dict]] = {}   # host -> (when, its last status answer)
        self._polling: set[str] = set()
        self._seen: dict[tuple[str, str], tuple[str, int, Any]] = {}   # (exp, host) -> (state, gates, failure)
        self.runs: dict[str, runs.RunRef] = {}     # experiment -> the run that stands for it
        self.groups: dict[str, Any] = {}          # experiment -> its seed replicates (engine.results.replicates)
        self.choices: dict[str, Any] = {}         # experiment -> engine.results.representative.Choice
        # The plan screen (lenstui/plan.py): the hosts' manifest checks and this checkout's code version,
        # asked when the screen opens and after each Advance; the runs confirmed but waiting for a GPU.
        self.plan_manifests: dict[str, Any] = {}
        self.code_version: str | None = None
        self.plan_queue: list[Any] = []           # lenstui.scheduler.RunRequest, in order
        self.plan_note: str | None = None
        self.gone: set[str] = set()               # hosts the user declared gone (their GPUs are not held)
        self._plan_busy = False
        self._poll_started: dict[str, float] = {}    # host -> when its poll in flight started (monotonic)
        self._answer_from: dict[str, float] = {}     # host -> when the poll behind its latest snapshot started
        self._queue_after = 0.0                      # the queue waits for snapshots asked after the last start

    # -- screens ----------------------------------------------------------------

    def get_default_screen(self) -> MainScreen:
        self.main = MainScreen()
        return self.main

    def on_main_screen_ready(self, message: MainScreenReady) -> None:
        """The main screen's widgets exist: draw, then start polling."""
        self._redraw()
        self.poll_hosts()
        self.set_interval(self.refresh_s, self.poll_hosts)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A dialog is answered first: the app's own keys wait until it is closed.
        if action in ("help", "request_quit") and isinstance(self.screen, ModalScreen):
            return False
        return True

    @property
    def experiment_ids(self) -> list[str]:
        """The plan's experiments, in matrix order (for the palette)."""
        return list(self.config.experiments)

    @property
    def matrix(self) -> ExperimentMatrix:
        """The main screen's matrix (it exists while any screen is on top of it)."""
        return self.main.matrix

    # -- polling --------------------------------------------------------------

    def poll_hosts(self) -> None:
        """Start a poll of every enabled host that has none in flight."""
        for host in self.enabled_hosts:
            if host not in self._polling:  # a hung host keeps one thread, never a pile
                self._polling.add(host)
                self._poll_started[host] = time.monotonic()
                self._poll_worker(host)

    @work(thread=True, group="poll")
    def _poll_worker(self, host: str) -> None:
        try:
            snapshot = self.fleet.poll(host)
        except Exception as exc:  # Fleet.poll must not raise; if it does, say so on screen
            self.post_message(HostPolled(host, None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(HostPolled(host, snapshot))

    def on_host_polled(self, message: HostPolled) -> None:
        self._polling.discard(message.host)
        if not self.is_running:  # a poll that lands while the app shuts down has nowhere to go
            return
        if message.snapshot is None:
            self.notify(f"Polling {message.host} failed: {message.error}", severity="error",
                        title="lenstui bug or Fleet error")
            return
        self.snapshots[message.host] = message.snapshot
        if isinstance(message.snapshot.status, dict):
            self.gone.discard(message.host)   # it is back: its GPUs count again
        self._answer_from[message.host] = self._poll_started.get(message.host, 0.0)
        if isinstance(message.snapshot.status, dict):
            self.last_seen[message.host] = (time.time(), message.snapshot.status)
        self._notify_transitions(message.host, message.snapshot)
        self._redraw()

    def action_refresh(self) -> None:
        self.poll_hosts()

    def _notify_transitions(self, host: str, snapshot: Any) -> None:
        """Tell the user when a run ends, fails, is lost, or a gate FAILs."""
        for exp_id, entry in runs.runs_of(snapshot).items():
            state, n_gates = str(entry.get("state") or RunState.PENDING), len(gates_in_order(entry))
            failure = (entry.get("launched_at"), entry.get("launch_failure")) if entry.get("launch_failure") else None
            before = self._seen.get((exp_id, host))
            self._seen[(exp_id, host)] = (state, n_gates, failure)
            if before is None:
                continue  # first sight: the user already knows how things stood
            where = f"{exp_id} on {host}"
            if failure is not None and failure != before[2]:
                # The newest launch ended before the engine took over: a failed launch, whatever
                # state the run's earlier start left behind.
                self.notify(f"{where}: {failure[1]}", severity="error", title="Launch failed", timeout=30)
            elif state != before[0]:
                if state == RunState.DONE:
                    best = fixed(best_val_auroc(entry)[0])
                    self.notify(f"{where} finished: best val AUROC {best}", title="Run done")
                elif state == RunState.FAILED:
                    self.notify(f"{where} failed. Press enter on it for the log.",
                                severity="error", title="Run failed", timeout=30)
                elif state == RunState.LOST:
                    self.notify(f"{where} is lost: {entry.get('reason') or 'process gone'}",
                                severity="error", title="Run lost", timeout=30)
                elif state == RunState.ABORTED:
                    self.notify(f"{where} aborted", title="Run aborted")
            if n_gates > before[1]:
                self._notify_gate(where, latest_gate(entry))

    def _notify_gate(self, where: str, gate: dict[str, Any] | None) -> None:
        if gate is None:
            return
        bands = {"core_lr_auc": self.config.thresholds.core_lr_auc,
                 "radial_lr_auc": self.config.thresholds.radial_lr_auc}
        failed = [f"{k} {gate[k]:.3f} ({band.describe()})" for k, band in bands.items()
                  if band.classify(gate.get(k)) == "FAIL"]
        if failed:
            self.notify(f"{where}: gate after {gate.get('after_epochs', '?')} epochs FAIL: "
                        + "; ".join(failed), severity="warning", title="Gate FAIL", timeout=30)

    # -- drawing --------------------------------------------------------------

    def _redraw(self) -> None:
        """Bring every view up to date with the latest snapshots."""
        self.choices = runs.representatives(self.snapshots, self.host_order, self.last_seen,
                                           self.config.training.epochs)
        self.groups = runs.replicate_groups(self.choices, self.config)
        # The run that stands for each experiment; with seed replicates done, their mean (replicates.pooled).
        self.runs = {e: runs.shown_run(c, self.groups.get(e), self.config) for e, c in self.choices.items()}
        rows = {exp_id: cells.matrix_row(exp, self.runs.get(exp_id), self.config,
                                       other_hosts=self._other_runs(exp_id))
                for exp_id, exp in self.config.experiments.items()}
        disabled = [h for h in self.host_order if h not in self.enabled_hosts]
        self.main.show(rows, self.runs, self.host_order, self.snapshots, disabled, self.choices)
        for screen in self.screen_stack:
            # A screen still being composed draws itself from the app when it mounts.
            if isinstance(screen, (DetailScreen, DecisionScreen, PlanScreen)) and screen.is_mounted:
                screen.refresh_from_app()
        if self.plan_queue:
            self._launch_queued()

    def _other_runs(self, exp_id: str) -> int:
        """How many runs of `exp_id` the matrix shows as '+N': those that neither stand for it nor
        are its seed replicates (the status cell counts those: 'done 2/3')."""
        choice = self.choices.get(exp_id)
        if choice is None:
            return 0
        group = self.groups.get(exp_id)
        members = group.members if group is not None else ()
        return sum(1 for o in choice.others if not any(o is m for m in members))

    # -- launch ---------------------------------------------------------------

    def host_choices(self) -> list[HostChoice]:
        """Enabled hosts with their state and GPUs, for the launch dialog."""
        out = []
        for host in self.enabled_hosts:
            snap = self.snapshots.get(host)
            state = "connecting…" if snap is None else ("connected" if snap.connected else "disconnected")
            status = snap.status if snap is not None and isinstance(snap.status, dict) else {}
            gpus = tuple((f"GPU {g.get('index')} {g.get('name', '')}", str(g.get("index")))
                         for g in status.get("gpus") or [] if isinstance(g, dict))
            label = f"{host} ({state}{'' if gpus or not status else ', CPU only'})"
            out.append(HostChoice(host, label, gpus))
        return out

    def prior_runs(self, exp_id: str) -> dict[str, PriorRun]:
        """The experiment's run on each enabled host, with the arguments it was started with."""
        out = {}
        for host in self.enabled_hosts:
            run = self.run_on(exp_id, host)
            if run is None:
                continue
            args = tuple(recorded_args((run.entry.get("run") or {}).get("command")))
            shown = shlex.join(args) if args else "no extra arguments"
            state = cells.state_text(run.state, as_of=run.as_of).plain
            out[host] = PriorRun(run.state, args, f"{state} at epoch {epochs_text(run.entry)}, "
                                                  f"started with {shown}")
        return out

    def launch_problems(self, choice: LaunchChoice) -> list[Problem]:
        """What the engine would refuse about `choice` (errors), and what deserves a second look."""
        exp_id, host, args = choice.exp_id, choice.host, choice.extra_args
        try:
            settings_difference([], args)   # engine.train's own parser: a bad option is said here
        except ValueError as exc:
            return [("error", f"Extra arguments: {exc}")]
        out: list[Problem] = []
        try:   # a --seed other than the plan's starts a seed replicate, in a directory of its own
            name = rundir.run_name(exp_id, seed_in(args), self.config.training.seed)
        except ValueError as exc:
            return [("error", f"Extra arguments: {exc}")]
        run = self.run_on(exp_id, host, name)
        if run is not None and run.stale:
            out.append(("warning", f"{host} does not answer: {name} there was last seen "
                                   f"{cells.state_text(run.state, as_of=run.as_of).plain}"))
        elif run is not None and run.state in IN_PROGRESS:
            out.append(("error", f"{name} is already {run.state} on {host}: the engine refuses a second run "
                                 "(abort it first, or choose another host)"))
        elif run is not None and run.state == RunState.DONE and not is_fresh(args):
            out.append(("error", f"{name} is already done on {host}: the engine refuses unless --fresh is "
                                 "among the arguments (the old run is moved aside and kept)"))
        elif run is not None and run.state in ENDED_INCOMPLETE and not is_fresh(args):
            before = recorded_args((run.entry.get("run") or {}).get("command"))
            differ = settings_difference(before, args) if run.entry.get("resumable", True) else []
            if differ:
                out.append(("error", f"{name} {run.state} on {host} resumes from last.pt only with the arguments "
                                     f"it was started with ({shlex.join(before) or 'none'}); these differ "
                                     f"({'; '.join(differ)}). Use those, or add --fresh to start over "
                                     "(the old run is kept)"))
            elif run.entry.get("resumable", True):
                out.append(("info", f"{name} {run.state} on {host}: it resumes from last.pt "
                                    "(the log is appended, never overwritten)"))
            else:
                out.append(("info", f"{name} {run.state} on {host} before its first checkpoint: it starts "
                                    "over there (the log is appended, never overwritten)"))
        snap = self.snapshots.get(host)
        status = snap.status if snap is not None and isinstance(snap.status, dict) else None
        if status is not None and not status.get("gpus") and choice.gpu != "cpu":
            epochs = self.config.training.epochs
            for i, a in enumerate(args):   # what --epochs this launch asks for
                if a == "--epochs" and i + 1 < len(args) and args[i + 1].isdigit():
                    epochs = int(args[i + 1])
                elif a.startswith("--epochs=") and a[9:].isdigit():
                    epochs = int(a[9:])
            sample = self.config.experiment(exp_id, choice.base).sample
            out.append(("warning", f"{host} has no GPU: {exp_id} trains on its CPU for {epochs} epochs"
                                   + (" on the full dataset" if sample == "full" else "")
                                   + (" (hours)" if epochs >= 10 else "")))
        return out

    def action_launch(self, exp_id: str | None = None) -> None:
        exp_id = exp_id or self.matrix.selected_id
        if exp_id is None:
            self.notify("No experiment selected", severity="warning")
            return
        if not self.enabled_hosts:
            self.notify("No host is enabled: set enabled = true on one in experiments.toml",
                        severity="error")
            return
        self.launch_dialogs([(exp_id, self.launch_host(exp_id), None)], self._launch_chosen)

    def launch_host(self, exp_id: str) -> str | None:
        """The host the launch dialog starts on: where the run that stands for it ended incomplete
        (a relaunch resumes there); else the default host, unless the engine would refuse it there
        (running, or done) and another connected host would not."""
        shown = self.runs.get(exp_id)
        if shown is not None and shown.state in ENDED_INCOMPLETE and shown.host in self.enabled_hosts:
            return shown.host
        order = ([self.default_host] if self.default_host else []) + \
            [h for h in self.enabled_hosts if h != self.default_host]
        for host in order:
            snap = self.snapshots.get(host)
            run = self.run_on(exp_id, host)
            if getattr(snap, "connected", False) and (run is None or run.state not in (*IN_PROGRESS, RunState.DONE)):
                return host
        return self.default_host

    def launch_dialogs(self, items: Sequence[tuple], done: Any, notes: Sequence[str] = ()) -> None:
        """One launch dialog per (experiment, host, base[, extra arguments]), in turn; `done` gets the
        choices made."""
        chosen: list[LaunchChoice] = []
        todo = list(items)

        def next_dialog(answer: LaunchChoice | None = None) -> None:
            if answer is not None:
                chosen.append(answer)
            if not todo:
                done(chosen)
                return
            exp_id, host, base, *more = todo.pop(0)
            extra = (*self.train_args, *more[0]) if more else self.train_args   # a replicate's --seed
            exp = self.config.experiment(exp_id)
            bases = [e.id for e in self.config.experiments.values() if e.base is None] if exp.base else []
            count = len(items)
            title = f"Launch {exp_id}" + (f" ({count - len(todo)} of {count})" if count > 1 else "")
            self.push_screen(LaunchScreen(exp_id, self.host_choices(), host, bases=bases,
                                          base=base or exp.base, extra_args=extra,
                                          prior=self.prior_runs(exp_id), check=self.launch_problems,
                                          notes=notes, title=title), next_dialog)

        next_dialog()

    def _launch_chosen(self, choices: list[LaunchChoice]) -> None:
        if choices:
            self.confirm_launch(choices)

    def confirm_launch(self, choices: Sequence[LaunchChoice]) -> None:
        """Ask, listing what runs where; on yes, launch each choice in a worker."""
        lines: list[str | Any] = []
        for c in choices:
            exp = self.config.experiment(c.exp_id, c.base)
            dataset = self.config.dataset_for(self.config.host(c.host))
            lines.append(f"{c.exp_id} on {c.host} (GPU {c.gpu}): {exp.data_mode}, {exp.preprocessing}, "
                         f"masking {exp.masking.describe()}, dataset {dataset.name}"
                         + (f", base {c.base}" if c.base else ""))
            lines.append("  arguments: " + (shlex.join(c.extra_args) if c.extra_args else "none (the plan's settings)"))
            lines += [f"  {words}" for level, words in self.launch_problems(c) if level != "error"]
        lines.append("Runs are detached: they keep going if lenstui quits.")
        title = "Launch " + ", ".join(c.exp_id for c in choices) + "?"

        def answered(yes: bool | None) -> None:
            if yes:
                for c in choices:
                    self.fleet_action("launch", lambda c=c: self.fleet.launch(
                        c.exp_id, c.host, gpu=c.gpu, base=c.base, extra_args=tuple(c.extra_args)), c.exp_id, c.host)

        self.push_screen(ConfirmScreen(title, lines, confirm_label="Launch"), answered)

    def on_launch_requested(self, message: LaunchRequested) -> None:
        self.launch_dialogs(message.items, self._launch_chosen, notes=message.notes)

    # -- abort ----------------------------------------------------------------

    def run_on(self, exp_id: str, host: str, name: str | None = None) -> runs.RunRef | None:
        """`exp_id`'s run named `name` on `host` (its own run when `name` is None, else its first seed
        replicate there) as last polled (as last seen, while the host does not answer), or None."""
        mine = [r for r in runs.all_runs(self.snapshots, [host], self.last_seen) if r.exp_id == exp_id]
        wanted = name or exp_id
        exact = [r for r in mine if r.run_name == wanted]
        if exact or name is not None:
            return exact[0] if exact else None
        return mine[0] if mine else None

    def action_abort(self, exp_id: str | None = None, host: str | None = None, name: str | None = None) -> None:
        exp_id = exp_id or self.matrix.selected_id
        if exp_id is None:
            return
        run = self.run_on(exp_id, host, name) if host else self.runs.get(exp_id)
        if run is not None and run.state not in IN_PROGRESS and not host:
            live = [r for r in runs.all_runs(self.snapshots, self.host_order, self.last_seen)
                    if r.exp_id == exp_id and r.state in IN_PROGRESS]
            run = live[0] if live else run   # the matrix shows a finished run; another host still runs one
        if run is None or run.state not in IN_PROGRESS:
            state = run.state if run else "not running"
            self.notify(f"{exp_id} is {state}: nothing to abort", severity="warning")
            return
        target = run.run_name   # the run's directory: the experiment id, or a replicate's <id>@seed<N>
        lines = [f"Run: {target}", f"Host: {run.host}", f"Epoch: {epochs_text(run.entry)}",
                 f"SIGTERM to its process group (pgid {run.entry.get('pgid', '?')}); it saves "
                 f"last.pt and stops. SIGKILL after {ABORT_GRACE_S} s."]

        def answered(yes: bool | None) -> None:
            if yes:
                self.fleet_action("abort", lambda: self.fleet.abort(target, run.host, grace=ABORT_GRACE_S),
                                target, run.host)

        self.push_screen(ConfirmScreen(f"Abort {target} on {run.host}?", lines,
                                       confirm_label="Abort", danger=True), answered)

    def on_abort_requested(self, message: AbortRequested) -> None:
        self.action_abort(message.exp_id, message.host, message.name)

    def on_detail_requested(self, message: DetailRequested) -> None:
        self.action_detail(message.exp_id)

    # -- detail, decision, help -----------------------------------------------

    def action_detail(self, exp_id: str | None = None) -> None:
        exp_id = exp_id or self.matrix.selected_id
        if exp_id is None:
            return
        run = self.runs.get(exp_id)
        if run is None:
            self.notify(f"{exp_id} has not run on any host yet: press l to launch it",
                        severity="warning")
            return
        self.push_screen(DetailScreen(exp_id, run.host, run.run_name))

    def smoke_inputs(self, exp_ids: Iterable[str]) -> list[str]:
        """'A1 (epochs=2, limit_train=256 on local)' for each shown run that ran short of the plan."""
        out = []
        for e in exp_ids:
            run = self.runs.get(e)
            if run is not None and settings_rank(runs.candidate(run).overrides, self.config.training.epochs) >= 2:
                out.append(f"{e} ({settings_text(runs.candidate(run))} on {run.host})")
        return out

    def action_filter(self) -> None:
        """Back to the matrix (closing views on top of it) and open its filter."""
        while self.screen is not self.main:
            self.pop_screen()
        self.main.action_filter()

    def action_decision(self) -> None:
        self.push_screen(DecisionScreen())

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- the plan (lenstui/plan.py, plan_run.py, scheduler.py) --------------------

    def action_plan(self) -> None:
        self.push_screen(PlanScreen())
        self.action_plan_refresh()

    def action_plan_refresh(self) -> None:
        self._plan_facts_worker()

    @work(thread=True, group="plan", exclusive=True)
    def _plan_facts_worker(self) -> None:
        from engine.protocol.codeversion import checkout_version
        from lenstui.plan_run import host_facts

        try:
            facts = host_facts(self.fleet, dict(self.snapshots))
            self.post_message(PlanFactsGathered({f.host: f.manifests for f in facts}, checkout_version()))
        except Exception as exc:
            self.post_message(PlanFactsGathered({}, self.code_version or "", _words(exc)))

    def on_plan_facts_gathered(self, m: PlanFactsGathered) -> None:
        self.plan_manifests, self.code_version = dict(m.facts), m.code_version
        self.plan_note = f"Could not ask the hosts: {m.error}" if m.error else None
        self._redraw()

    def plan_state(self) -> Any:
        """The plan's table from the latest snapshots and manifest checks (None until the first checks)."""
        from lenstui.plan import HostFacts, derive
        from lenstui.plan_run import report_path

        if self.code_version is None:
            return None
        facts = []
        for host in self.enabled_hosts:
            snap = self.snapshots.get(host)
            status = getattr(snap, "status", None)
            facts.append(HostFacts(host, status if isinstance(status, dict) else None,
                                   getattr(snap, "error", None) if snap is not None else "not polled yet",
                                   self.plan_manifests.get(host), self.fleet.same_tree(host)))
        return derive(self.config, self.choices, facts, self.code_version, report_path(self.fleet), self.train_args)

    def plan_view(self) -> tuple[Any, list[Any], list[Any], list[str], str | None]:
        """(plan state, the queue with why each waits, the GPU slots, the hosts held, a note) for the plan screen."""
        from lenstui.scheduler import schedule, slots_of

        slots, held = slots_of(self.snapshots, self.config, self.gone)
        waiting = list(schedule(self.plan_queue, self.snapshots, self.config, self.gone).waiting)
        try:
            state = self.plan_state()
        except Exception as exc:   # a bug in the plan must show, not blank the screen
            return None, waiting, slots, held, f"The plan could not be derived: {_words(exc)}"
        return state, waiting, slots, held, self.plan_note

    def action_plan_declare_gone(self) -> None:
        """Hosts that do not answer keep their GPUs held for their runs; the user may give them up."""
        from lenstui.scheduler import slots_of

        _, held = slots_of(self.snapshots, self.config, self.gone)
        if not held:
            self.notify("Every enabled host answers: none to declare gone", title="Plan")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.gone |= set(held)
                self._redraw()

        self.push_screen(ConfirmScreen(f"Declare {', '.join(held)} gone?", [
            f"{', '.join(held)} has not answered: its runs may still be going there (they are detached).",
            "Declared gone, its GPUs are no longer held for them: the queue no longer waits for it.",
            "It counts again as soon as it answers."], confirm_label="Declare gone", danger=True), answered)

    def action_plan_advance(self) -> None:
        if self._plan_busy:
            self.notify("Advance is already working", severity="warning")
            return
        self._plan_busy = True
        self.notify("Asking the hosts what is ready …", title="Advance")
        self._plan_preview_worker()

    @work(thread=True, group="plan-advance")
    def _plan_preview_worker(self) -> None:
        from lenstui import plan_run

        from lenstui.cli import poll_all

        try:
            # Asked afresh, not the latest snapshots: a run started a moment ago must show, or its
            # step would read "ready" again (on another host, the engine's lock could not refuse it).
            snaps = poll_all(self.fleet, self.enabled_hosts)
            state = plan_run.gather(self.fleet, snaps, self.last_seen, self.train_args)
            self.post_message(PlanPreviewReady(plan_run.preview(state, snaps, self.fleet, self.plan_queue, self.gone)))
        except Exception as exc:
            self.post_message(PlanPreviewReady(None, _words(exc)))

    def on_plan_preview_ready(self, m: PlanPreviewReady) -> None:
        if m.preview is None:
            self._plan_busy = False
            self.notify(f"Advance: {m.error}", severity="error", title="Advance")
            return
        preview = m.preview
        if preview.halted or preview.empty:
            self._plan_busy = False
            self.notify(preview.lines()[0], title="Advance", severity="warning" if preview.halted else "information",
                        timeout=20 if preview.halted else 8)
            return
        gpus = len(preview.schedule.placed)
        lines = preview.lines() + ([f"{gpus} run(s) start now on the GPUs above; queued runs start "
                                    "when a GPU frees up, without asking again."] if gpus or preview.schedule.waiting else [])

        def answered(yes: bool | None) -> None:
            if not yes:
                self._plan_busy = False
                return
            queued = {r.name for r in self.plan_queue}
            self.plan_queue += [w.request for w in preview.schedule.waiting if w.request.name not in queued]
            placed = {p.request.name for p in preview.schedule.placed}
            self.plan_queue = [r for r in self.plan_queue if r.name not in placed]
            self.fleet_action("plan", lambda: self._perform(preview))

        self.push_screen(ConfirmScreen("Advance the plan?", lines, confirm_label="Start"), answered)

    def _perform(self, preview: Any) -> str:
        from lenstui import plan_run

        try:
            done = plan_run.perform(self.fleet, preview)
        finally:
            self._plan_busy = False
        if done.failed:
            raise FleetError("; ".join(done.lines + done.failed))
        return "; ".join(done.lines) or "nothing to do"

    def _launch_queued(self) -> None:
        """Start the queued runs a GPU now has room for (after a poll: no polling of its own)."""
        from lenstui.plan_run import Preview
        from lenstui.scheduler import Schedule, schedule

        existing = set(self.choices)
        self.plan_queue = [r for r in self.plan_queue if r.name not in existing]
        if not self.plan_queue or self._plan_busy or len(self.snapshots) < len(self.enabled_hosts):
            return
        # Only snapshots asked after the last start count: an older one would not show that run yet,
        # and its GPU would look free.
        if any(self._answer_from.get(h, 0.0) < self._queue_after for h in self.enabled_hosts):
            return
        placed = schedule(self.plan_queue, self.snapshots, self.config, self.gone).placed
        if not placed:
            return
        names = {p.request.name for p in placed}
        self.plan_queue = [r for r in self.plan_queue if r.name not in names]
        self._plan_busy = True
        self.notify(", ".join(f"{p.request.name} → {p.label}" for p in placed), title="Queued runs start")
        self.fleet_action("plan", lambda: self._perform(Preview(schedule=Schedule(placed=placed))))

    # -- sync and report --------------------------------------------------------

    def action_sync(self) -> None:
        remote = [h for h in self.enabled_hosts if self.config.hosts[h].transport != "local"]
        if not remote:
            self.notify("No enabled remote host to sync: local runs use this folder's code",
                        title="Sync")
            return
        for host in remote:
            self.fleet_action("sync", lambda host=host: self.fleet.sync(host), host=host)
        self.notify(f"Syncing code to {', '.join(remote)}…", title="Sync")

    def action_report(self) -> None:
        from engine.results.report import DEFAULT_OUT

        out = self.config_path.resolve().parent / DEFAULT_OUT
        self.notify(f"Writing the report to {out} …", title="Report")
        collection = self.run_collection()

        def write() -> str:
            from engine.results import report  # torch-free, but only needed on demand
            return f"wrote {report.write_report(collection, self.config, out).summary}"

        self.fleet_action("report", write)

    # -- the Fleet's actions, in workers ---------------------------------------------

    def fleet_action(self, action: Action, do: Any, exp_id: str | None = None, host: str | None = None) -> None:
        """Run `do()` (a Fleet call) in a thread worker; its result or its error comes back as ActionFinished."""
        self._action_worker(action, do, exp_id, host)

    @work(thread=True, group="actions")
    def _action_worker(self, action: Action, do: Any, exp_id: str | None, host: str | None) -> None:
        try:
            result = do()
        except Exception as exc:  # FleetError carries words for the user; anything else too
            self.post_message(ActionFinished(action, False, _words(exc), exp_id, host))
        else:
            self.post_message(ActionFinished(action, True, _result_words(result), exp_id, host))

    def on_action_finished(self, message: ActionFinished) -> None:
        """Say how an action ended, in the words and the colour of its kind; a launch or abort repolls."""
        m = message
        said = {
            ("launch", True): ("Launched", f"{m.exp_id} launched on {m.host}: {m.message}"),
            ("launch", False): ("Launch failed", f"{m.exp_id} on {m.host}: {m.message}"),
            ("abort", True): ("Aborted", f"{m.exp_id} on {m.host}: {m.message}"),
            ("abort", False): ("Abort failed", f"Abort {m.exp_id} on {m.host} failed: {m.message}"),
            ("sync", True): ("Synced", f"{m.host}: {m.message}"),
            ("sync", False): ("Sync failed", f"{m.host}: {m.message}"),
            ("report", True): ("Report", m.message),
            ("report", False): ("Report failed", m.message),
            ("plan", True): ("Advance", m.message),
            ("plan", False): ("Advance failed", m.message),
        }
        title, words = said[(m.action, m.ok)]
        if m.ok:
            self.notify(words, title=title)
        elif m.action in ("launch", "abort", "plan"):   # a run that did not start or stop: stays on screen longer
            self.notify(words, title=title, severity="error", timeout=30)
        else:
            self.notify(words, title=title, severity="error")
        if m.action in ("launch", "abort", "plan"):
            self.poll_hosts()
        if m.action == "plan":
            self._queue_after = time.monotonic()
            self.action_plan_refresh()

    def results(self) -> dict[str, dict[str, Any]]:
        """The run that stands for each experiment as a metrics-like dict (its host in `run`), for
        the decision tree."""
        return {exp_id: {**run.entry, "run": {**(run.entry.get("run") or {}), "host": run.host}}
                for exp_id, run in self.runs.items() if exp_id in self.config.experiments}

    def run_collection(self) -> Any:
        """Every run on every host, as the report reads them (engine.report.Collection)."""
        from engine.results import report
        refs = runs.all_runs(self.snapshots, self.host_order, self.last_seen)
        looked = [f"{h} ({'as last seen' if any(r.stale for r in refs if r.host == h) else 'live'})"
                  for h in self.enabled_hosts if any(r.host == h for r in refs)]
        return report.collection_from_candidates([runs.candidate(r, i) for i, r in enumerate(refs)], self.config,
                                                 looked or ["the hosts lenstui polls (no run yet)"])

    # -- quit -----------------------------------------------------------------

    def action_request_quit(self) -> None:
        live = [f"{r.exp_id} on {r.host}" for r in runs.all_runs(self.snapshots, self.host_order)
                if r.state == RunState.RUNNING]
        if not live:
            self.exit()
            return
        lines = [f"{len(live)} run(s) keep going on their hosts: {', '.join(live)}.",
                 "Start lenstui again to see them."]
        self.push_screen(ConfirmScreen("Quit lenstui?", lines, confirm_label="Quit"),
                         lambda yes: self.exit() if yes else None)


def _words(exc: BaseException) -> str:
    """An exception as words for a notification (FleetError and ConfigError are already worded)."""
    if isinstance(exc, (FleetError, ConfigError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _result_words(result: Any) -> str:
    """A Fleet result (LaunchResult, AbortResult, SyncResult) as its one-line message."""
    return getattr(result, "message", None) or str(result)


def make_app(config_path: Path | str, host: str | None = None, fleet: Any | None = None,
             refresh_s: float = 2.0, train_args: Sequence[str] = ()) -> LensTUI:
    """Build the app (used by the CLI and the tests); raises ConfigError for a bad config."""
    config = load_config(config_path)
    if fleet is None:
        fleet = Fleet(config, Path(config_path))
    return LensTUI(config, Path(config_path), fleet, host=host, refresh_s=refresh_s, train_args=train_args)


def run_app(config_path: Path, host: str | None = None) -> None:
    """Run the control center until the user quits; runs keep going after."""
    try:
        app = make_app(config_path, host)
    except ConfigError as exc:
        print(f"lenstui: {exc}", file=sys.stderr)
        raise SystemExit(exitcodes.BAD_INPUT) from None
    try:
        app.run()
    finally:
        app.fleet.close()
