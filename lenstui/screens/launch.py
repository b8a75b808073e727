"""Choose where an experiment runs: host, GPU, Phase-4 base, extra engine arguments."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select


@dataclass(frozen=True)
class HostChoice:
    """A host offered in the dialog, with its GPUs as (label, value) options."""

    name: str
    label: str
    gpus: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LaunchChoice:
    """What the user chose: run `exp_id` on `host`/`gpu`, with `base` and `extra_args`."""

    exp_id: str
    host: str
    gpu: str
    base: str | None
    extra_args: tuple[str, ...]


class LaunchScreen(ModalScreen["LaunchChoice | None"]):
    """Pick host and GPU (the preselected host first); enter continues to the confirmation.

    `hosts` holds at least one host: the app says what to do when none is enabled.
    """

    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen > Vertical {
        width: 70; max-width: 100%; height: auto;
        border: thick $accent; background: $surface; padding: 1 2;
    }
    LaunchScreen .title { text-style: bold; margin-bottom: 1; }
    LaunchScreen Label { margin-top: 1; }
    LaunchScreen #error { color: $error; }
    LaunchScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    LaunchScreen Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Continue", show=False),
    ]
    AUTO_FOCUS = "#next"

    def __init__(self, exp_id: str, hosts: Sequence[HostChoice], host: str | None,
                 bases: Sequence[str] = (), base: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__()
        self.exp_id = exp_id
        self._hosts = {h.name: h for h in hosts}
        self._host = host if host in self._hosts else next(iter(self._hosts), None)
        self._bases, self._base = tuple(bases), base
        self._extra = shlex.join(extra_args)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Launch {self.exp_id}", classes="title")
            yield Label("Host")
            yield Select([(h.label, h.name) for h in self._hosts.values()], value=self._host,
                         allow_blank=False, id="host")
            yield Label("GPU")
            yield Select(self._gpu_options(self._host), value="auto", allow_blank=False, id="gpu")
            if self._bases:
                yield Label("Configuration to train on full data (base)")
                yield Select([(b, b) for b in self._bases], value=self._base or self._bases[0],
                             allow_blank=False, id="base")
            yield Label("Extra engine.train arguments (optional)")
            yield Input(self._extra, placeholder="e.g. --epochs 3", id="extra")
            yield Label("", id="error")
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Continue", id="next", variant="primary")

    def _gpu_options(self, host: str | None) -> list[tuple[str, str]]:
        gpus = self._hosts[host].gpus if host in self._hosts else ()
        return [("auto (a free GPU)", "auto"), *gpus]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "host" and isinstance(event.value, str):
            self.query_one("#gpu", Select).set_options(self._gpu_options(event.value))
            self.query_one("#gpu", Select).value = "auto"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.action_submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        host = self.query_one("#host", Select).value
        try:
            extra = tuple(shlex.split(self.query_one("#extra", Input).value))
        except ValueError as exc:
            self.query_one("#error", Label).update(f"Extra arguments: {exc}")
            return
        base = self.query_one("#base", Select).value if self._bases else None
        gpu = self.query_one("#gpu", Select).value
        self.dismiss(LaunchChoice(self.exp_id, str(host), gpu if isinstance(gpu, str) else "auto",
                                  base if isinstance(base, str) else None, extra))

    def action_cancel(self) -> None:
        self.dismiss(None)
