"""Cutouts of a run's data: a few positives and negatives, raw and preprocessed, from the host it ran on.

The host reads and stretches them (`python -m engine.data.cutouts`, through the fleet like every
engine command); this screen draws the pixels it sends. Nothing here reads shards or imports NumPy.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.strip import Strip
from textual.widgets import Footer, Header, Label, Static

from lenstui.fleet import FleetError
from lenstui.messages import CutoutsLoaded
from lenstui.screens.back import AltKeyMeansEscape
from lenstui.widgets.cutout import CutoutImage, halfblock_strips

Panel = tuple[str, list[list[Strip]]]  # title, then the images side by side (raw, preprocessed)


class CutoutScreen(AltKeyMeansEscape, Screen[None]):
    """Loads examples from the local host's dataset in a worker (NumPy only there)."""

    ESCAPE_ACTION = "back"

    BINDINGS = [Binding("escape,backspace", "back", "Back")]

    def __init__(self, exp_id: str, host: str) -> None:
        super().__init__()
        self.exp_id, self.host = exp_id, host
        self.panels: list[Panel] = []
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="cutouts-box"):
            yield Static("loading cutouts…", id="cutouts-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#cutouts-box").border_title = (f"{self.exp_id}: cutouts on {self.host} "
                                                       "(g,r,z → b,g,r, asinh)")
        self.query_one("#cutouts-status", Static).update(
            Text(f"loading cutouts from {self.host} (its first look at a dataset builds the manifests there)…",
                 style="dim"))
        # Half-size images unless the terminal fits two full 63-px stamps side by side.
        factor = 1 if self.app.size.width >= 2 * 63 + 6 else 2
        self._load(factor)

    def _say(self, words: str, style: str) -> None:
        self.error = words
        self.query_one("#cutouts-status", Static).update(Text(words, style=style))

    @work(thread=True, group="cutouts")
    def _load(self, factor: int) -> None:
        try:
            panels = panels_of(self.app.fleet.cutouts(self.exp_id, self.host, factor=factor))
        except FleetError as exc:   # missing data, bad shards, an unreachable host: its words
            self.post_message(CutoutsLoaded(error=exc.message))
        except Exception as exc:
            self.post_message(CutoutsLoaded(error=f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(CutoutsLoaded(panels=panels))

    def on_cutouts_loaded(self, message: CutoutsLoaded) -> None:
        if message.error:
            self._say(f"Cannot load cutouts: {message.error}", "red")
            return
        self.panels = message.panels
        self.query_one("#cutouts-status", Static).display = False
        box = self.query_one("#cutouts-box")
        for title, images in message.panels:
            box.mount(Label(Text(title, style="bold")))
            box.mount(Horizontal(*(CutoutImage(strips) for strips in images), classes="cutout-row"))

    def action_back(self) -> None:
        self.dismiss(None)


def panels_of(answer: dict) -> list[Panel]:
    """The host's examples (engine.data.cutouts' answer) as titled pairs of images, positives first."""
    panels = []
    for ex in answer["examples"]:
        kind = "positive" if ex["label"] == 1 else "negative"
        theta = f"  θ_E={ex['theta_e']:.2f}″" if kind == "positive" else ""
        panels.append((f"{kind}{theta}   raw | {answer['preprocessing']}",
                       [halfblock_strips(ex["raw"]), halfblock_strips(ex["preprocessed"])]))
    return panels
