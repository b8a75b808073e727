"""The decision panel: plan §10 evaluated on the results so far."""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text
from textual.widgets import Static

from lenstui.format import fmt_float


def decision_text(decision: Any, plan: list[tuple[str, str, str, str | None]]) -> Text:
    """The branch, why, the numbers that chose it, and the next launch (if any).

    `decision` is an engine.decision.Decision; `plan` the (exp, host, gpu, base) to launch.
    """
    out = Text()
    out.append(f"{decision.title}", style="bold")
    out.append(f"  [{decision.branch}]", style="dim")
    if decision.outside_plan:
        out.append("  outside the plan's tree", style="bold yellow")
    if decision.provisional:
        out.append("  provisional", style="bold yellow")
    out.append(f"\n\n{decision.reason}\n")
    if decision.criterion:
        out.append(f"Criterion: {decision.criterion}\n", style="dim")
    for note in decision.notes:
        out.append(f"Note: {note}\n", style="yellow")
    for reading in getattr(decision, "readings", ()):
        out.append(f"Read: {reading}\n", style="dim")
    numbers: Mapping[str, Any] = decision.numbers or {}
    if numbers:
        out.append("\nNumbers that chose this branch\n", style="bold underline")
        for name, value in numbers.items():
            shown = fmt_float(value) if value is None or isinstance(value, (int, float)) else str(value)
            out.append(f"  {name:<28} {shown}\n")
    if decision.stop:
        out.append("\nSTOP: the plan ends here.", style="bold red")
        return out
    if not plan:
        if decision.next_experiments:
            why = f"{', '.join(decision.next_experiments)} should run next, but no enabled host is connected"
        elif decision.outside_plan:
            why = "nothing is launched outside the plan: a person decides and records why"
        else:
            why = "nothing to launch yet: waiting for the runs above"
        out.append(f"\n{why[0].upper()}{why[1:]}.", style="dim")
        return out
    out.append("\nNext (l or enter to launch, with a confirmation)\n", style="bold underline")
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
