"""Training-time augmentation and core masks, batched on the training device (SCIENCE.md).

Every random choice is per sample: a batch draws one coin per image for each flip, one
k in {0,1,2,3} per image for rot90, and one coin per image for the core mask. The
randomness of batch b of epoch e comes from a generator seeded by (seed, e, b), so
- a sample gets fresh coins every epoch (the epoch is in the seed), and
- a run that is stopped mid-epoch and resumed draws exactly what it would have drawn.

A core mask of radius R zeroes, in all bands, the pixels whose distance from the
centre pixel ((31, 31) on a 63x63 cutout) is < R. Evaluation never masks except where a
metric asks for it (`mask_core`, for the core sensitivity curve).

On the CPU each image is written once, by one strided copy that reads it flipped and
rotated in place (a NumPy view with negative strides and swapped axes), in its stored
16-bit form; one vectorised cast then makes the float32 batch, and the mask zeroes only
the disk's pixels of the images that drew it (docs/PERFORMANCE.md §1). On an accelerator
the flips and rotations are full-batch torch.where passes, which need no host sync. Both
give the same pixels for the same draws.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Sequence

import numpy as np
import torch

from engine.config import AugmentationConfig, Masking


def seeded_generator(device: torch.device | str, *key: int | str) -> torch.Generator:
    """A torch.Generator on `device` seeded from `key`, e.g. (seed, epoch, batch)."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


@functools.lru_cache(maxsize=64)
def core_disk(height: int, width: int, radius: float, device: str) -> torch.Tensor:
    """Bool (H, W): True where the distance from the centre pixel is < radius."""
    cy, cx = (height - 1) / 2, (width - 1) / 2
    yy = torch.arange(height, dtype=torch.float32).view(-1, 1) - cy
    xx = torch.arange(width, dtype=torch.float32).view(1, -1) - cx
    return ((yy * yy + xx * xx) < radius * radius).to(device)


def _disk_for(x: torch.Tensor, radius: float) -> torch.Tensor:
    return core_disk(x.shape[-2], x.shape[-1], float(radius), str(x.device))


@functools.lru_cache(maxsize=64)
def _disk_box(height: int, width: int, radius: float) -> tuple[slice, slice] | None:
    """The rows and columns of the disk's bounding box (None for an empty disk), found on the CPU once."""
    disk = core_disk(height, width, radius, "cpu")
    rows, cols = disk.any(1).nonzero().squeeze(1), disk.any(0).nonzero().squeeze(1)
    if len(rows) == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def mask_core(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Every image of `x` (B, C, H, W) with its core (r < radius) set to 0 in all bands."""
    if radius <= 0:
        return x
    return x.masked_fill(_disk_for(x, radius), 0)


def _core_mask_(x: torch.Tensor, radius: float, coins: torch.Tensor) -> None:
    """In place: zero r < radius in the images whose coin is set, touching only the disk's bounding box."""
    box = _disk_box(x.shape[-2], x.shape[-1], float(radius))
    if box is None:
        return
    rows, cols = box
    disk = _disk_for(x, radius)[rows, cols]
    x[:, :, rows, cols].masked_fill_(coins.view(-1, 1, 1, 1) & disk, 0)


@functools.lru_cache(maxsize=64)
def _disk_rectangles(height: int, width: int, radius: float) -> tuple[tuple[slice, slice], ...]:
    """The disk as a few (rows, columns) rectangles: each of its rows is one run; equal runs of adjacent rows merge."""
    disk = core_disk(height, width, radius, "cpu").numpy()
    merged: list[tuple[int, int, int, int]] = []   # (first row, end row, first column, end column)
    for row in range(height):
        cols = np.flatnonzero(disk[row])
        if len(cols) == 0:
            continue
        first, end = int(cols[0]), int(cols[-1]) + 1
        if merged and merged[-1][1] == row and merged[-1][2:] == (first, end):
            merged[-1] = (merged[-1][0], row + 1, first, end)
        else:
            merged.append((row, row + 1, first, end))
    return tuple((slice(r0, r1), slice(c0, c1)) for r0, r1, c0, c1 in merged)


def _core_mask_cpu_(x: torch.Tensor, radius: float, coins: torch.Tensor) -> None:
    """_core_mask_ for a CPU tensor: zeros written to the disk's pixels of the coin images only, a rectangle at a time.

    Zero bits are +0.0 in every float format, so it writes the raw bits (bf16 has no NumPy type).
    """
    chosen = np.flatnonzero(coins.numpy())
    if len(chosen) == 0:
        return
    pixels = _bits(x)
    for rows, cols in _disk_rectangles(x.shape[-2], x.shape[-1], float(radius)):
        pixels[chosen, :, rows, cols] = 0


def random_core_mask(x: torch.Tensor, radius: float, p: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each image's core with probability `p`, one coin per image; returns (x, masked). `x` is not changed."""
    return _random_core_mask(x.clone(), radius, p, gen)


def _random_core_mask(x: torch.Tensor, radius: float, p: float,
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """random_core_mask on a tensor the caller owns: masks it in place and returns it."""
    coins = torch.rand(x.shape[0], device=x.device, generator=gen) < p
    if radius <= 0 or p <= 0:
        return x, torch.zeros_like(coins)
    if x.device.type == "cpu":
        _core_mask_cpu_(x, radius, coins)
    else:
        _core_mask_(x, radius, coins)   # no host sync: for accelerators
    return x, coins


def _dihedral_where(x: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor, k: torch.Tensor,
                    rot90: bool) -> torch.Tensor:
    """The drawn transforms as full-batch torch.where passes: no host sync, for accelerators."""
    x = torch.where(hflip.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(vflip.view(-1, 1, 1, 1), x.flip(-2), x)
    if rot90:
        out = x
        for turns in (1, 2, 3):
            out = torch.where((k == turns).view(-1, 1, 1, 1), torch.rot90(x, turns, dims=(-2, -1)), out)
        x = out
    return x


def _view_steps(code: int) -> tuple[int, int, bool]:
    """Transform `code` = h + 2t, i.e. rot90(hflip^h(x), t), as (row step, column step, transpose) of a view."""
    rows, cols = 1, -1 if code & 1 else 1
    turns = code >> 1
    # torch.rot90 by 1 is flip(-1) then transpose, by 2 flip both, by 3 flip(-2) then transpose.
    if turns == 1:
        cols = -cols
    elif turns == 2:
        rows, cols = -rows, -cols
    elif turns == 3:
        rows = -rows
    return rows, cols, turns % 2 == 1


_VIEW_STEPS = tuple(_view_steps(code) for code in range(8))
_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _dihedral_codes(hflip: torch.Tensor, vflip: torch.Tensor, k: torch.Tensor, rot90: bool) -> list[int]:
    """The drawn (h, v, k) of each image as one of the 8 transforms: h + 2t with t the quarter turns.

    A vflip is an hflip plus a half turn, so (h, v, k) is (h xor v, k + 2v mod 4).
    """
    h, v = hflip.numpy(), vflip.numpy()
    turns = ((k.numpy() if rot90 else 0) + 2 * v) % 4
    return ((h ^ v) + 2 * turns).tolist()


def _bits(x: torch.Tensor) -> np.ndarray:
    """`x`'s memory as NumPy same-size integers: moving pixels needs no arithmetic, and bf16 has no NumPy type."""
    return x.detach().view(_SAME_SIZE_INT[x.element_size()]).numpy()


def _dihedral_copy(src: np.ndarray, rows: Sequence[int], codes: Sequence[int], out: np.ndarray) -> None:
    """out[i] = transform codes[i] of src[rows[i]]: one strided copy per image, each pixel read and written once (CPU).

    One image at a time, so a transpose's strided reads stay within one 8 kB band that
    is already in cache; a whole-batch copy of the same views measured slower.
    """
    views = []
    for row_step, col_step, transpose in _VIEW_STEPS:
        view = src[:, :, ::row_step, ::col_step]
        views.append(view.swapaxes(-1, -2) if transpose else view)
    for i, (row, code) in enumerate(zip(rows, codes)):
        out[i] = views[code][row]


def _draw_dihedral(shape: torch.Size, device: torch.device, gen: torch.Generator, hflip_p: float,
                   vflip_p: float, rot90: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image of a batch of `shape`: the hflip coin, the vflip coin and k, drawn in this order.

    Resume-exactness depends on the order. Checks first that rot90 has square images to turn.
    """
    if rot90 and shape[-1] != shape[-2]:
        raise ValueError(f"rot90 needs square images, got {tuple(shape[-2:])}")
    n = shape[0]
    hflip = torch.rand(n, device=device, generator=gen) < hflip_p
    vflip = torch.rand(n, device=device, generator=gen) < vflip_p
    k = torch.randint(0, 4, (n,), device=device, generator=gen)
    return hflip, vflip, k


def random_dihedral(x: torch.Tensor, gen: torch.Generator, *, hflip_p: float = 0.5,
                    vflip_p: float = 0.5, rot90: bool = True) -> torch.Tensor:
    """Per image: horizontal flip with prob. hflip_p, vertical with vflip_p, rot90 by k ~ U{0..3}.

    A new tensor (`x` is not changed): per-image strided copies on the CPU, where passes elsewhere.
    """
    hflip, vflip, k = _draw_dihedral(x.shape, x.device, gen, hflip_p, vflip_p, rot90)
    if x.device.type != "cpu":
        return _dihedral_where(x, hflip, vflip, k, rot90)
    out = torch.empty(x.shape, dtype=x.dtype)
    _dihedral_copy(_bits(x), range(x.shape[0]), _dihedral_codes(hflip, vflip, k, rot90), _bits(out))
    return out


def augment_batch(x: torch.Tensor, gen: torch.Generator, aug: AugmentationConfig,
                  mask_radius: float, mask_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, rot90, then the stochastic core mask in force this epoch; returns (x, masked). `x` is not changed.

    The dihedral transforms make a new tensor, which is then masked in place.
    """
    x = random_dihedral(x, gen, hflip_p=aug.hflip_p, vflip_p=aug.vflip_p, rot90=aug.rot90)
    return _random_core_mask(x, mask_radius, mask_p, gen)


def training_batch(images: torch.Tensor, *, seed: int, epoch: int, batch: int, aug: AugmentationConfig,
                   masking: Masking, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `batch` of epoch `epoch` as the model trains on it: float32, augmented, masked per `masking`.

    The batch is `images[index]` (all of `images` when `index` is None); passing the
    resident split and `index` lets the CPU path gather while it flips, in one pass.
    `images` is not changed: the batch is a new float32 tensor.
    """
    radius, p = masking.at_epoch(epoch)
    gen = seeded_generator(images.device, seed, epoch, batch)
    if images.device.type != "cpu":
        batch_images = images if index is None else images.index_select(0, index)
        # No forced copy: random_dihedral's where passes make the new tensor the mask writes.
        return augment_batch(batch_images.float(), gen, aug, radius, p)
    return _training_batch_cpu(images, index, gen, aug, radius, p)


def _training_batch_cpu(images: torch.Tensor, index: torch.Tensor | None, gen: torch.Generator,
                        aug: AugmentationConfig, radius: float, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """training_batch on the CPU: each pixel read once and written once in its stored form, then cast once.

    The gather, flips and rotations move 16-bit pixels (half the bytes of float32), then
    one contiguous, vectorised cast makes float32. Same draws, in the same order, as the
    accelerator path.
    """
    rows = range(images.shape[0]) if index is None else index.tolist()
    if index is not None and rows and not 0 <= min(rows) <= max(rows) < images.shape[0]:
        raise IndexError(f"training_batch: index holds rows {min(rows)}..{max(rows)}, images has {images.shape[0]}")
    shape = (len(rows), *images.shape[1:])
    hflip, vflip, k = _draw_dihedral(shape, images.device, gen, aug.hflip_p, aug.vflip_p, aug.rot90)
    codes = _dihedral_codes(hflip, vflip, k, aug.rot90)
    # NumPy's allocator, not torch.empty: NumPy asks for huge pages for large arrays, and a
    # fresh 6 MB torch.empty page-faulted ~1,500 times per batch here (a third of the time).
    out = torch.from_numpy(np.empty(shape, dtype=np.float32))
    src = _bits(images)
    if images.dtype == torch.float32:
        _dihedral_copy(src, rows, codes, _bits(out))
    else:
        staged = np.empty(shape, dtype=src.dtype)
        _dihedral_copy(src, rows, codes, staged)
        out.copy_(torch.from_numpy(staged).view(images.dtype))
    return _random_core_mask(out, radius, p, gen)
