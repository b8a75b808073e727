"""The plan screen: §7's table with every step's status derived from the hosts now, the queue, the GPUs.

Redrawn after every poll from the app's latest state (lenstui/plan.py derives it; nothing is
kept between runs of the app). `a` is Advance: the app shows what would run where and asks once.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from lenstui.plan import (BLOCKED, DONE, FAILED, NOT_NEEDED, READY, RUNNING, STOPPED, WAITING, PlanState)
from lenstui.screens.back import AltKeyMeansEscape

STYLE = {DONE: "green", RUNNING: "cyan", READY: "bold yellow", WAITING: "dim", BLOCKED: "bold red",
         FAILED: "bold red", STOPPED: "bold red", NOT_NEEDED: "dim"}


def plan_text(state: PlanState | None, queue: list[Any], slots: list[Any], held: list[str],
              note: str | None = None) -> Text:
    """The screen's words: the steps by phase, then the queue and the GPUs."""
    out = Text()
    if state is None:
        out.append(note or "Asking the hosts where the plan stands …", style="dim")
        return out
    phase = None
    for s in state.steps:
        if s.phase != phase:
            phase = s.phase
            out.append(f"{'' if phase == 1 else chr(10)}Phase {phase}\n", style="bold")
        out.append(f" {s.key:<4} ")
        out.append(f"{s.status.upper():<10}", style=STYLE.get(s.status, ""))
        out.append(f" {s.title}\n")
        out.append(f"      {s.detail}\n", style="dim" if s.status in (DONE, NOT_NEEDED, WAITING) else "")
        if s.blocked_by:
            word = "waits on" if s.status == WAITING else "blocked by"
            out.append(f"      {word}: {s.blocked_by}\n", style="red" if s.status != WAITING else "dim")
    out.append("\nQueue ", style="bold")
    if queue:
        out.append(f"({len(queue)} waiting for a GPU with room)\n")
        for w in queue:
            out.append(f" {w.request.name} ({w.request.requested_by}, step {w.request.plan_step or '-'}): {w.why}\n")
    else:
        out.append("(empty)\n", style="dim")
    out.append("\nGPUs\n", style="bold")
    for slot in slots:
        mem = (f", {slot.free_mib:,} of {slot.total_mib:,} MiB free" if slot.free_mib is not None and slot.total_mib
               else "")
        out.append(f" {slot.label:<14} {len(slot.runs)}/{slot.limit} runs{mem}"
                   f"{': ' + ', '.join(slot.runs) if slot.runs else ''}\n")
        if slot.foreign:
            out.append(f"   not lenstui's: {', '.join(slot.foreign)}\n", style="yellow")
    for host in held:
        out.append(f" {host:<14} not answering: its GPUs are held for its runs\n", style="yellow")
    if note:
        out.append(f"\n{note}\n", style="yellow")
    return out


class PlanScreen(AltKeyMeansEscape, Screen[None]):
    """The plan as one live checklist; `a` advances it (after one confirmation)."""

    ESCAPE_ACTION = "back"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
        Binding("a", "app.plan_advance", "Advance"),
        Binding("g", "app.plan_refresh", "Recheck hosts"),
        Binding("x", "app.plan_declare_gone", "Declare silent hosts gone"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="plan-box"):
            yield Static(id="plan")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#plan-box").border_title = "The plan (§7), as the hosts show it now"
        self.refresh_from_app()

    def refresh_from_app(self) -> None:
        app = self.app
        view = app.plan_view()
        self.query_one("#plan", Static).update(plan_text(*view))

    def action_back(self) -> None:
        self.dismiss(None)

    @property
    def text(self) -> str:
        return str(self.query_one("#plan", Static).render())
