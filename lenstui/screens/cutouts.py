"""Cutouts of a run's data: a few positives and negatives, raw and preprocessed."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.strip import Strip
from textual.widgets import Footer, Header, Label, Static

from lenstui.fleet import host_paths
from lenstui.messages import CutoutsLoaded
from lenstui.screens.back import AltKeyMeansEscape
from lenstui.widgets.cutout import CutoutImage, halfblock_strips, stretch_rgb

N_EACH = 2  # positives and negatives shown
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
        self.query_one("#cutouts-box").border_title = f"{self.exp_id}: cutouts (g,r,z → b,g,r, asinh)"
        config = self.app.config
        host = config.host(self.host)
        if host.transport != "local":
            self._say(f"{self.exp_id} runs on {self.host}: cutouts are available for local datasets; "
                      "fetch the shards to a local host first", "yellow")
            return
        exp = config.experiment(self.exp_id)
        if exp.base is not None:
            exp = config.experiment(self.exp_id, exp.base)
        root = host_paths(config, host, self.app.config_path).data_root
        # Half-size images unless the terminal fits two full 63-px stamps side by side.
        factor = 1 if self.app.size.width >= 2 * 63 + 6 else 2
        self._load(root, exp.data_mode, exp.preprocessing, factor)

    def _say(self, words: str, style: str) -> None:
        self.error = words
        self.query_one("#cutouts-status", Static).update(Text(words, style=style))

    @work(thread=True, group="cutouts")
    def _load(self, root: str, data_mode: str, preprocessing: str, factor: int) -> None:
        try:
            panels = load_panels(root, data_mode, preprocessing, factor)
        except Exception as exc:  # missing data, bad shards: say which and why
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


def load_panels(root: str, data_mode: str, preprocessing: str, factor: int) -> list[Panel]:
    """Read N_EACH positives and negatives from the val split; each drawn raw and preprocessed."""
    from engine.data import load as data, preprocess  # NumPy-heavy: only ever imported here, off the UI thread

    examples = data.load_raw_examples(root, mode=data_mode, split="val", n_per_class=N_EACH, seed=0)
    if len(examples) == 0:
        raise ValueError(f"no readable examples in the val split of {root}")
    done = preprocess.preprocess(examples.images, preprocessing)
    order = sorted(range(len(examples)), key=lambda i: -int(examples.labels[i]))  # positives first
    panels = []
    for i in order:
        kind = "positive" if int(examples.labels[i]) == 1 else "negative"
        theta = f"  θ_E={float(examples.theta_e[i]):.2f}″" if kind == "positive" else ""
        images = [halfblock_strips(stretch_rgb(examples.images[i], factor)),
                  halfblock_strips(stretch_rgb(done[i], factor))]
        panels.append((f"{kind}{theta}   raw | {preprocessing}", images))
    return panels
