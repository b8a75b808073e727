"""Per-band, per-image preprocessing of stamp batches (N, 3, H, W), NumPy, vectorised.

- raw_robust: subtract the median of the outer annulus and divide by its MAD (+1e-8).
  The annulus is 20 ≤ r < 32 pixels from the LRG pixel, as the published pipeline computes
  it on the 64-px stamp. The 63-px crop drops only row 0 and column 0 (r ≥ 32 from the LRG),
  so it holds every annulus pixel at the same radius: the radii are not rescaled
  (docs/DATA.md, "Preprocessing").
- residual: raw_robust, then subtract the azimuthal *median* radial profile (rings
  k ≤ r < k+1; model = profile[floor(r)]; pixels beyond the last ring use the last ring).
- Both end with NaN/Inf -> 0 and a clip to ±50.

r is the distance in pixels from the centre pixel (size // 2: 31 on the 63-px crop).
Deterministic, so the stamp cache computes it once. `radial_profile` is shared with
the shortcut gates.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from engine.config import PREPROCESSINGS

PREPROCESS_VERSION = 2   # bump when the numbers change: stamp caches are keyed by it (2: annulus not rescaled)
CLIP = 50.0
MAD_EPS = 1e-8
ANNULUS = (20.0, 32.0)      # pixels from the LRG: the published pipeline's, on any stamp size
_CHUNK = 512                 # images per vectorised step: bounds the temporary copies


@functools.lru_cache(maxsize=8)
def radius_map(size: int) -> np.ndarray:
    """(size, size) distance of each pixel from the centre pixel (size // 2, size // 2)."""
    c = size // 2
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - c, xx - c)
    r.setflags(write=False)
    return r


def default_n_rings(size: int) -> int:
    """Rings up to the inscribed circle: 32 on 63 or 64 px; the corners use the last ring."""
    return math.ceil(size / 2)


@functools.lru_cache(maxsize=8)
def _annulus_pixels(size: int) -> np.ndarray:
    lo, hi = ANNULUS
    c = size // 2
    if c - math.ceil(hi - 1) < 0 or c + math.ceil(hi - 1) > size - 1:
        raise ValueError(f"a {size}-px stamp does not hold the whole annulus {lo:g} ≤ r < {hi:g} around its "
                         "centre pixel: the normalisation needs stamps of at least 63 px (the data's are 63 and 64)")
    r = radius_map(size).ravel()
    idx = np.flatnonzero((r >= lo) & (r < hi))
    idx.setflags(write=False)
    return idx


@functools.lru_cache(maxsize=8)
def _ring_layout(size: int, n_rings: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of rings 0..n_rings-1 grouped by ring, the ring bounds, and each pixel's ring."""
    ring = np.floor(radius_map(size)).astype(np.int64).ravel()
    inside = np.flatnonzero(ring < n_rings)
    order = inside[np.argsort(ring[inside], kind="stable")]
    counts = np.bincount(ring[order], minlength=n_rings)
    if np.any(counts == 0):
        raise ValueError(f"{n_rings} rings do not fit a {size}-px stamp (some ring has no pixel)")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    pixel_ring = np.minimum(ring, n_rings - 1)   # beyond the last ring: use the last ring
    for a in (order, bounds, pixel_ring):
        a.setflags(write=False)
    return order, bounds, pixel_ring


def _check(images: np.ndarray) -> tuple[int, int, int]:
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected a batch of square stamps (N, C, H, H), got shape {images.shape}")
    n, c, h, _ = images.shape
    return n, c, h


def radial_profile(images: np.ndarray, n_rings: int | None = None) -> np.ndarray:
    """(N, C, n_rings) float32: the median of each integer ring k ≤ r < k+1, per band per image."""
    n, c, size = _check(images)
    n_rings = default_n_rings(size) if n_rings is None else n_rings
    order, bounds, _ = _ring_layout(size, n_rings)
    out = np.empty((n, c, n_rings), np.float32)
    flat = images.reshape(n, c, size * size)
    for s in range(0, n, _CHUNK):
        # One gather puts every ring's pixels side by side; a sort per ring then gives its median.
        grouped = flat[s:s + _CHUNK][..., order].astype(np.float32, copy=False)
        for k in range(n_rings):
            out[s:s + _CHUNK, :, k] = _median_last(grouped[..., bounds[k]:bounds[k + 1]])
    return out


def _median_last(a: np.ndarray) -> np.ndarray:
    """Median along the last axis (the mean of the two middle values for an even count).

    A full sort of these short rows measures about twice as fast as np.partition/np.median here.
    """
    m = a.shape[-1]
    if m == 1:
        return a[..., 0]
    s = np.sort(a, axis=-1)
    half = m // 2
    if m % 2:
        return s[..., half]
    return 0.5 * (s[..., half - 1] + s[..., half])


def _robust_scale(images: np.ndarray) -> np.ndarray:
    """(x - median(annulus)) / (MAD(annulus) + 1e-8), per band per image, float32, no clip."""
    n, c, size = _check(images)
    idx = _annulus_pixels(size)
    out = np.empty((n, c, size, size), np.float32)
    for s in range(0, n, _CHUNK):
        x = images[s:s + _CHUNK].astype(np.float32, copy=False)
        ring = x.reshape(len(x), c, -1)[..., idx]
        med = _median_last(ring)
        mad = _median_last(np.abs(ring - med[..., None]))
        # In place into the output: fresh temporaries of this size cost more than the arithmetic.
        o = out[s:s + _CHUNK]
        np.subtract(x, med[..., None, None], out=o)
        # Divide by the float32 MAD + 1e-8, as the published pipeline does in float32: a reciprocal
        # multiply differs by an ulp, 3e-5 at the 500-MAD cores that the residual then subtracts.
        o /= (mad.astype(np.float64) + MAD_EPS).astype(np.float32)[..., None, None]
    return out


def _finish(x: np.ndarray) -> np.ndarray:
    np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(x, -CLIP, CLIP, out=x)
    return x


def raw_robust(images: np.ndarray) -> np.ndarray:
    """Annulus-median / MAD scaled, NaN/Inf -> 0, clipped to ±50; float32."""
    return _finish(_robust_scale(images))


def residual(images: np.ndarray, n_rings: int | None = None) -> np.ndarray:
    """raw_robust minus its azimuthal median profile, NaN/Inf -> 0, clipped to ±50; float32."""
    x = _robust_scale(images)
    n, c, size = _check(x)
    n_rings = default_n_rings(size) if n_rings is None else n_rings
    _, _, pixel_ring = _ring_layout(size, n_rings)
    flat = x.reshape(n, c, size * size)
    for s in range(0, n, _CHUNK):
        profile = radial_profile(x[s:s + _CHUNK], n_rings)
        flat[s:s + _CHUNK] -= profile[..., pixel_ring]
    return _finish(x)


def preprocess(images: np.ndarray, method: str) -> np.ndarray:
    """Dispatch on the experiment's `preprocessing` ("raw_robust" or "residual")."""
    if method == "raw_robust":
        return raw_robust(images)
    if method == "residual":
        return residual(images)
    raise ValueError(f"unknown preprocessing {method!r}; expected one of {', '.join(PREPROCESSINGS)}")
