"""Colour cutouts in a terminal: two pixels per cell with the upper-half block ▀.

`halfblock_strips` is pure Python (a grid of RGB triples in, Strips out).
`stretch_rgb` turns a (3, H, W) g, r, z stamp into that grid with an asinh
stretch; it needs NumPy and is only called inside the cutout worker, so the
app never imports NumPy at start-up.
"""

from __future__ import annotations

from typing import Any, Sequence

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
        top = pixels[y]
        bottom = pixels[y + 1] if y + 1 < len(pixels) else [None] * len(top)
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


def stretch_rgb(bands: Any, factor: int = 1, q: float = 8.0) -> list[list[RGB]]:
    """(3, H, W) g, r, z -> rows of (R, G, B) 0–255: z→red, r→green, g→blue, asinh stretch.

    All three bands share one scale (the 99.5th percentile of the positive
    pixels), so colours stay physical; `factor` > 1 averages factor×factor
    blocks to fit a small terminal.
    """
    import numpy as np

    img = np.nan_to_num(np.asarray(bands, dtype=np.float64))
    if factor > 1:
        c, h, w = img.shape
        h2, w2 = h // factor, w // factor
        img = img[:, : h2 * factor, : w2 * factor].reshape(c, h2, factor, w2, factor).mean(axis=(2, 4))
    positive = img[img > 0]
    scale = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    scale = scale if scale > 0 else 1.0
    stretched = np.arcsinh(np.clip(img, 0.0, None) * q / scale) / np.arcsinh(q)
    rgb = (np.clip(stretched, 0.0, 1.0) * 255).astype(np.uint8)[::-1]  # g,r,z -> z,r,g = R,G,B
    return [[(int(r), int(g), int(b)) for r, g, b in zip(*rows)] for rows in zip(*rgb)]
