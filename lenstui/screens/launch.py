"""Choose where an experiment runs: host, GPU, Phase-4 base, extra engine arguments.

The dialog checks each choice as it is made, with the app's `check` (what the engine would
refuse, and what deserves a second look): a launch the engine will refuse cannot be
continued, and says why. A relaunch comes pre-filled with the arguments the run was
started with (a resume must repeat them); the dialog says when the typed ones differ.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from engine.protocol.rundir import ENDED_INCOMPLETE
from lenstui.screens.back import AltKeyMeansEscape


@dataclass(frozen=True)
class HostChoice:
    """A host offered in the dialog, with its GPUs as (label, value) options."""

    name: str
    label: str
    gpus: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PriorRun:
    """The experiment's run already on a host: its state, and the arguments it was started with."""

    state: str
    args: tuple[str, ...]
    summary: str            # "aborted at epoch 3/30, started with --epochs 30"


@dataclass(frozen=True)
class LaunchChoice:
    """What the user chose: run `exp_id` on `host`/`gpu`, with `base` and `extra_args`."""

    exp_id: str
    host: str
    gpu: str
    base: str | None
    extra_args: tuple[str, ...]


Problem = tuple[str, str]   # ("error" | "warning" | "info", words)
Check = Callable[[LaunchChoice], Sequence[Problem]]
STYLES = {"error": "bold red", "warning": "yellow", "info": "dim"}


class LaunchScreen(AltKeyMeansEscape, ModalScreen["LaunchChoice | None"]):
    """Pick host, GPU and arguments (focus starts on the arguments); enter continues.

    `hosts` holds at least one host: the app says what to do when none is enabled. `prior`
    maps a host to the experiment's run there; `notes` are shown above the fields (the
    decision panel's warnings); `check` is the app's judgement of a choice.
    """

    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    LaunchScreen .title { text-style: bold; width: 1fr; }
    LaunchScreen .row { height: auto; }
    LaunchScreen .row > Label { width: 7; padding-top: 0; }
    LaunchScreen .row > Select, LaunchScreen .row > Input { width: 1fr; }
    LaunchScreen #notes, LaunchScreen #prior, LaunchScreen #problems { height: auto; }
    LaunchScreen #buttons { height: auto; align-horizontal: right; margin-top: 1; }
    LaunchScreen Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Continue", show=False),
    ]
    AUTO_FOCUS = "#extra"   # typing goes into the arguments; shift+tab reaches GPU and host

    def __init__(self, exp_id: str, hosts: Sequence[HostChoice], host: str | None,
                 bases: Sequence[str] = (), base: str | None = None,
                 extra_args: Sequence[str] = (), prior: Mapping[str, PriorRun] | None = None,
                 check: Check | None = None, notes: Sequence[str] = (), title: str | None = None) -> None:
        super().__init__()
        self.exp_id = exp_id
        self._hosts = {h.name: h for h in hosts}
        self._host = host if host in self._hosts else next(iter(self._hosts), None)
        self._bases, self._base = tuple(bases), base
        self._prior = dict(prior or {})
        self._default_args = tuple(extra_args)
        self._check = check
        self._notes = tuple(notes)
        self._title = title or f"Launch {exp_id}"
        self._prefilled = shlex.join(self._args_for(self._host))
        self.problems: list[Problem] = []

    def _args_for(self, host: str | None) -> tuple[str, ...]:
        """The arguments to offer on `host`: a run there that ended incomplete resumes with its own."""
        prior = self._prior.get(host or "")
        if prior is not None and prior.state in ENDED_INCOMPLETE:
            return prior.args
        return self._default_args

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(self._title, classes="title")
            if self._notes:
                yield Static(Text("\n".join(self._notes), style="yellow"), id="notes")
            with Horizontal(classes="row"):
                yield Label("Host")
                yield Select([(h.label, h.name) for h in self._hosts.values()], value=self._host,
                             allow_blank=False, id="host", compact=True)
            with Horizontal(classes="row"):
                yield Label("GPU")
                yield Select(self._gpu_options(self._host), value="auto", allow_blank=False, id="gpu", compact=True)
            if self._bases:
                with Horizontal(classes="row"):
                    yield Label("Base")
                    yield Select([(f"{b} (the configuration to train on full data)", b) for b in self._bases],
                                 value=self._base or self._bases[0], allow_blank=False, id="base", compact=True)
            with Horizontal(classes="row"):
                yield Label("Args")
                yield Input(self._prefilled, placeholder="extra engine.train arguments, e.g. --epochs 3",
                            id="extra", compact=True)
            yield Static(id="prior")
            yield Static(id="problems")
            with Horizontal(id="buttons"):
                yield Button("Cancel (esc)", id="cancel", compact=True)
                yield Button("Continue (enter)", id="next", variant="primary", compact=True)

    def on_mount(self) -> None:
        self._show_prior()
        self._recheck()

    def _gpu_options(self, host: str | None) -> list[tuple[str, str]]:
        gpus = self._hosts[host].gpus if host in self._hosts else ()
        return [("auto (a free GPU)", "auto"), *gpus]

    def _show_prior(self) -> None:
        host = self.query_one("#host", Select).value
        prior = self._prior.get(str(host))
        text = Text()
        if prior is not None:
            text.append(f"{self.exp_id} on {host}: {prior.summary}", style="dim")
        widget = self.query_one("#prior", Static)
        widget.update(text)
        widget.display = prior is not None

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "host" and isinstance(event.value, str):
            self.query_one("#gpu", Select).set_options(self._gpu_options(event.value))
            self.query_one("#gpu", Select).value = "auto"
            extra = self.query_one("#extra", Input)
            if extra.value == self._prefilled:   # untouched: offer what fits this host
                self._prefilled = shlex.join(self._args_for(event.value))
                extra.value = self._prefilled
            self._show_prior()
        self._recheck()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._recheck()

    def choice(self) -> LaunchChoice | str:
        """What the fields say now, or why they cannot be read."""
        host = self.query_one("#host", Select).value
        try:
            extra = tuple(shlex.split(self.query_one("#extra", Input).value))
        except ValueError as exc:
            return f"Extra arguments: {exc}"
        base = self.query_one("#base", Select).value if self._bases else None
        gpu = self.query_one("#gpu", Select).value
        return LaunchChoice(self.exp_id, str(host), gpu if isinstance(gpu, str) else "auto",
                            base if isinstance(base, str) else None, extra)

    def _recheck(self) -> None:
        choice = self.choice()
        if isinstance(choice, str):
            self.problems = [("error", choice)]
        else:
            self.problems = list(self._check(choice)) if self._check else []
        text = Text("\n").join(Text(words, style=STYLES.get(level, "")) for level, words in self.problems)
        self.query_one("#problems", Static).update(text)
        self.query_one("#next", Button).disabled = any(level == "error" for level, _ in self.problems)

    @property
    def text(self) -> str:
        """The dialog's words (title, notes, the run already there, the checks), for tests."""
        return "\n".join([self._title, *self._notes,
                          str(self.query_one("#prior", Static).render()),
                          *(words for _, words in self.problems)])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.action_submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        self._recheck()
        choice = self.choice()
        if isinstance(choice, str) or any(level == "error" for level, _ in self.problems):
            self.query_one("#problems").scroll_visible()
            return   # the reason is on screen; Continue stays disabled until it is fixed
        self.dismiss(choice)

    def action_cancel(self) -> None:
        self.dismiss(None)
