"""Colour cutouts in a terminal: two pixels per cell with the upper-half block ▀.

`halfblock_strips` is pure Python: a grid of RGB triples in (as `python -m engine.data.cutouts`
sends them, stretched on the host where the data is), Strips out.
"""

from __future__ import annotations

from typing import Sequence

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

RGB = tuple[int, int, int]
UPPER_HALF = "▀"


def halfblock_strips(pixels: Sequence[Sequence[RGB]]) -> list[Strip]:
    """Rows of RGB pixels -> one Strip per two rows: each cell the top pixel (fg) over the bottom (bg)."""
    styles: dict[tuple[RGB, RGB | None], Style] = {}  # stamps repeat colours (sky): share the Style
    strips = []
    for y in range(0, len(pixels), 2):
        top = [tuple(p) for p in pixels[y]]   # JSON gives lists
        bottom = [tuple(p) for p in pixels[y + 1]] if y + 1 < len(pixels) else [None] * len(top)
        segments = []
        for upper, lower in zip(top, bottom):
            style = styles.get((upper, lower))
            if style is None:
                style = styles[(upper, lower)] = Style(
                    color=Color.from_rgb(*upper), bgcolor=Color.from_rgb(*lower) if lower else None)
            segments.append(Segment(UPPER_HALF, style))
        strips.append(Strip(segments, len(segments)))
    return strips


class CutoutImage(Widget):
    """One stamp drawn from prepared strips (fast: no text layout, one Strip per line)."""

    DEFAULT_CSS = """
    CutoutImage { width: auto; height: auto; margin-right: 2; }
    """

    def __init__(self, strips: list[Strip], **kwargs) -> None:
        super().__init__(**kwargs)
        self.strips = strips

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return max((s.cell_length for s in self.strips), default=0)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.strips)

    def render_line(self, y: int) -> Strip:
        return self.strips[y] if 0 <= y < len(self.strips) else Strip.blank(self.size.width)
