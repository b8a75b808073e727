"""A second way back from every screen that escape closes.

Through nested tmux or a slow SSH link, escape followed quickly by another key arrives as one
Alt+key (tmux's escape-time joins them): escape then `q` reads `alt+q`, and a help screen that
waits for escape stays open. On these screens an Alt+key means what was typed: go back, then
the key, for the screen below. Backspace goes back too (the footer says so).
"""

from __future__ import annotations

from textual import events


class AltKeyMeansEscape:
    """Mixin for a Screen: `ESCAPE_ACTION` is the action its escape key runs (back, close, cancel)."""

    ESCAPE_ACTION = "cancel"

    async def on_key(self, event: events.Key) -> None:
        key = event.key
        if not key.startswith("alt+") or key.count("+") != 1:
            return
        rest = key[len("alt+"):]
        if len(rest) != 1 and rest not in ("question_mark", "slash", "escape"):
            return
        event.stop()
        event.prevent_default()
        app = self.app   # type: ignore[attr-defined]
        await self.run_action(self.ESCAPE_ACTION)   # type: ignore[attr-defined]
        if rest != "escape":
            app.call_after_refresh(app.simulate_key, rest)
