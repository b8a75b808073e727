"""The decision panel: plan §10 evaluated on the results so far."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich.text import Text
from textual.widgets import Static

from engine.numbers import fixed


def decision_text(decision: Any, plan: list[tuple[str, str, str, str | None]], inputs: Sequence[str] = (),
                  warnings: Sequence[str] = (), held: Sequence[str] = (),
                  replicates: Sequence[tuple[str, str, str | None, tuple[str, ...]]] = ()) -> Text:
    """The branch, why, the runs it read (with their hosts), the numbers that chose it, and the next
    launch (if any).

    `decision` is an engine.results.decision.Decision; `plan` the (exp, host, gpu, base) to launch; `inputs`
    one line per run the tree read; `warnings` what a reader must see before launching; `held` the
    proposed runs no host can take now, and why; `replicates` the seed replicates (experiment, run
    name, host, extra arguments) that would settle a decision too close to call.
    """
    out = Text()
    out.append(f"{decision.title}", style="bold")
    out.append(f"  [{decision.branch}]", style="dim")
    if decision.outside_plan:
        out.append("  outside the plan's tree", style="bold yellow")
    if decision.provisional:
        out.append("  provisional", style="bold yellow")
    if getattr(decision, "too_close", ()):
        out.append("  too close to call", style="bold yellow")
    out.append(f"\n\n{decision.reason}\n")
    if getattr(decision, "too_close", ()):
        out.append("\nToo close to call: the tree decided on the point estimates, but an interval puts another "
                   "branch within reach\n", style="bold yellow")
        for line in decision.too_close:
            out.append(f"  {line}\n", style="yellow")
        for line in decision.settle:
            out.append(f"  To settle it: {line}\n")
        if replicates:
            out.append("  r: the launch dialog for each of " + ", ".join(
                f"{name} on {host or 'a host to choose'}" for _, name, host, _ in replicates) + "\n", style="bold cyan")
    if decision.criterion:
        out.append(f"Criterion: {decision.criterion}\n", style="dim")
    for note in decision.notes:
        out.append(f"Note: {note}\n", style="yellow")
    for reading in getattr(decision, "readings", ()):
        out.append(f"Read: {reading}\n", style="dim")
    for warning in warnings:
        out.append(f"Warning: {warning}\n", style="bold yellow")
    if inputs:
        out.append("\nRuns read (the run that stands for each experiment)\n", style="bold underline")
        for line in inputs:
            out.append(f"  {line}\n")
    numbers: Mapping[str, Any] = decision.numbers or {}
    if numbers:
        out.append("\nNumbers that chose this branch\n", style="bold underline")
        for name, value in numbers.items():
            shown = fixed(value) if value is None or isinstance(value, (int, float)) else str(value)
            out.append(f"  {name:<28} {shown}\n")
    if decision.stop:
        out.append("\nSTOP: the plan ends here.", style="bold red")
        return out
    if held:
        out.append("\nNot proposed\n", style="bold underline")
        for line in held:
            out.append(f"  {line}\n", style="yellow")
    if not plan:
        if held:
            return out
        if decision.next_experiments:
            why = f"{', '.join(decision.next_experiments)} should run next, but no enabled host is connected"
        elif decision.outside_plan:
            why = "nothing is launched outside the plan: a person decides and records why"
        else:
            why = "nothing to launch yet: waiting for the runs above"
        out.append(f"\n{why[0].upper()}{why[1:]}.", style="dim")
        return out
    out.append("\nNext (l or enter: the launch dialog for each, then a confirmation)\n", style="bold underline")
    for exp_id, host, gpu, base in plan:
        out.append(f"  {exp_id}", style="bold cyan")
        out.append(f" on {host} (GPU {gpu})" + (f", base {base}" if base else "") + "\n")
    return out


class DecisionPanel(Static):
    """Shows one decision; redraws only when its words change."""

    DEFAULT_CSS = """
    DecisionPanel { height: auto; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.text = ""

    def show(self, content: Text) -> None:
        """Draw `content` unless it is what is already shown."""
        if content.plain != self.text:
            self.text = content.plain
            self.update(content)
