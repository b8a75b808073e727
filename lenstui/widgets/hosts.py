"""The hosts panel: each host's connection and each GPU's load and run."""

from __future__ import annotations

import time
from typing import Any, Collection, Mapping, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

from lenstui.hostlines import host_lines, not_configured_line


class HostsPanel(Static, can_focus=True):
    """One block per host: connected / disconnected since when / not configured, then its GPUs.

    Focusable, so that a list longer than its share of a small terminal is reached with Tab and
    scrolled with the arrows and PageUp/PageDown."""

    DEFAULT_CSS = """
    HostsPanel { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("up", "scroll_up", show=False),
        Binding("down", "scroll_down", show=False),
        Binding("pageup", "page_up", show=False),
        Binding("pagedown", "page_down", show=False),
        Binding("home", "scroll_home", show=False),
        Binding("end", "scroll_end", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._drawn: tuple | None = None

    def show(self, order: Sequence[str], snapshots: Mapping[str, Any], disabled: Collection[str] = (),
             now: float | None = None) -> None:
        """Draw the hosts in `order`; a host never polled yet reads 'connecting…'."""
        lines: list[Text] = []
        for host in order:
            snap = snapshots.get(host)
            if host in disabled:
                lines.append(not_configured_line(host))
            elif snap is None:
                lines.append(Text.assemble((host, "bold"), "  ", ("connecting…", "dim")))
            else:
                lines.extend(host_lines(snap, time.time() if now is None else now))
        text = Text("\n").join(lines)
        key = (text.plain, tuple(text.spans))
        if key != self._drawn:  # redraw only when something visible changed
            self._drawn = key
            self.update(text)

    @property
    def text(self) -> str:
        """The panel's current plain text (what a user reads)."""
        return self._drawn[0] if self._drawn else ""
