"""The command palette (ctrl+p): every action of the app by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, action name on the app, help). The palette and the help screen list the same actions.
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Launch selected experiment", "launch", "choose host and GPU, then confirm"),
    ("Abort selected run", "abort", "SIGTERM its process group, SIGKILL after the grace period"),
    ("Open run detail", "detail", "epochs, curves, θ_E bins, core sensitivity, gates, log tail"),
    ("Plan", "plan", "the plan's §7 steps, derived from the hosts now; Advance runs the ready ones"),
    ("Decision panel", "decision", "plan §10 on the results so far; launch the next phase"),
    ("Filter experiments", "filter", "show only rows matching words"),
    ("Sync code to hosts", "sync", "push engine/ and experiments.toml to every enabled remote host"),
    ("Write report", "report", "EXPERIMENT_RESULTS.md and experiment_metrics.csv"),
    ("Refresh now", "refresh", "poll every host now"),
    ("Help", "help", "keys and legend"),
    ("Quit", "request_quit", "runs keep going on their hosts"),
)


class LensCommands(Provider):
    """Offers ACTIONS, plus 'Detail: <exp>' and 'Launch: <exp>' for each experiment."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        out: list[tuple[str, object, str]] = [
            (title, partial(app.run_action, action), help) for title, action, help in ACTIONS
        ]
        for exp_id in getattr(app, "experiment_ids", ()):
            out.append((f"Detail: {exp_id}", partial(app.run_action, f"detail('{exp_id}')"),
                        f"open the detail view of {exp_id}"))
            out.append((f"Launch: {exp_id}", partial(app.run_action, f"launch('{exp_id}')"),
                        f"launch {exp_id} (choose host and GPU, then confirm)"))
        return out

    async def discover(self) -> Hits:
        for title, command, help in self._commands():
            yield DiscoveryHit(title, command, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, command, help in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, help=help)
