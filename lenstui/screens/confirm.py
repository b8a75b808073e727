"""A yes/no dialog that lists exactly what will happen, where."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from lenstui.screens.back import AltKeyMeansEscape


class ConfirmScreen(AltKeyMeansEscape, ModalScreen[bool]):
    """Dismisses with True on `y` or the confirm button, False on `n`, escape, backspace or No."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: auto; min-width: 40; max-width: 100; height: auto;
        border: thick $accent; background: $surface; padding: 1 2;
    }
    ConfirmScreen .title { text-style: bold; margin-bottom: 1; }
    ConfirmScreen #lines { margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n,escape,backspace", "cancel", "No"),
    ]
    AUTO_FOCUS = "#yes"  # enter presses the focused button: Yes, or No after a tab

    def __init__(self, title: str, lines: Sequence[str | Text], confirm_label: str = "Yes",
                 danger: bool = False) -> None:
        super().__init__()
        self._title, self._lines = title, list(lines)
        self._confirm_label, self._danger = confirm_label, danger

    def compose(self) -> ComposeResult:
        body = Text("\n").join(Text(line) if isinstance(line, str) else line for line in self._lines)
        with Vertical():
            yield Label(self._title, classes="title")
            yield Static(body, id="lines")
            with Horizontal():
                yield Button("No (n)", id="no")
                yield Button(f"{self._confirm_label} (y)", id="yes",
                             variant="error" if self._danger else "primary")

    @property
    def text(self) -> str:
        """The dialog's words, for tests and screen readers."""
        return "\n".join([self._title] + [str(line) for line in self._lines])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
