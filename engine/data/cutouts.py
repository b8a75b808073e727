"""A few examples of a data view as colour pixels for a terminal: `python -m engine.data.cutouts`.

    python -m engine.data.cutouts --data-root ROOT --mode unpaired --preprocessing residual
                                  [--n-each 2] [--factor 1] [--config experiments.toml --host NAME]

prints one JSON object: `examples`, each a positive or negative of the val split with its θ_E and
two images as rows of [R, G, B] (0-255), the stamp as stored and as the experiment preprocesses
it. It runs where the data is, on any host, like every engine command, so lenstui's cutout view
needs neither the shards nor NumPy on the laptop. On failure: `{"error": ...}` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np

from engine.config import DATA_MODES, PREPROCESSINGS, ConfigError
from engine.data.load import load_raw_examples
from engine.data.preprocess import preprocess
from engine.data.settings import settings_for_command
from engine.files import CacheError
from engine.protocol import exitcodes

RGB = tuple[int, int, int]


def stretch_rgb(bands: Any, factor: int = 1, q: float = 8.0) -> list[list[RGB]]:
    """(3, H, W) g, r, z -> rows of [R, G, B] 0–255: z→red, r→green, g→blue, asinh stretch.

    All three bands share one scale (the 99.5th percentile of the positive pixels), so colours
    stay physical; `factor` > 1 averages factor×factor blocks to fit a small terminal.
    """
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
    return [[(int(r), int(g), int(b)) for r, g, b in row] for row in np.moveaxis(rgb, 0, -1)]


def cutout_examples(data_root: str, *, mode: str, preprocessing: str, n_each: int = 2, factor: int = 1,
                    settings: Any = None) -> dict[str, Any]:
    """`n_each` positives and negatives of the val split, positives first, raw and preprocessed, as RGB rows."""
    examples = load_raw_examples(data_root, mode=mode, split="val", n_per_class=n_each, seed=0, settings=settings)
    if len(examples) == 0:
        raise ValueError(f"no readable examples in the val split of {data_root}")
    done = preprocess(examples.images, preprocessing)
    order = sorted(range(len(examples)), key=lambda i: -int(examples.labels[i]))
    return {"data_root": str(data_root), "mode": mode, "preprocessing": preprocessing, "examples": [
        {"label": int(examples.labels[i]), "theta_e": float(examples.theta_e[i]),
         "raw": stretch_rgb(examples.images[i], factor), "preprocessed": stretch_rgb(done[i], factor)}
        for i in order]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.data.cutouts", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--mode", choices=DATA_MODES, required=True)
    p.add_argument("--preprocessing", choices=PREPROCESSINGS, required=True)
    p.add_argument("--n-each", type=int, default=2, help="positives and negatives shown (default 2)")
    p.add_argument("--factor", type=int, default=1, help="average factor×factor pixels (2: half size)")
    p.add_argument("--config", help="experiments.toml whose sample and unpaired settings pick the rows")
    p.add_argument("--host", help="with --config: this host's cache folder")
    args = p.parse_args(argv)
    try:
        _, settings = settings_for_command(args.config, args.host)
        answer = cutout_examples(args.data_root, mode=args.mode, preprocessing=args.preprocessing,
                                 n_each=max(1, args.n_each), factor=max(1, args.factor), settings=settings)
    except (ConfigError, CacheError, ValueError, OSError) as exc:   # the data layer's errors are ValueErrors
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return exitcodes.BAD_INPUT
    print(json.dumps(answer))
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
