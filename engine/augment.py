"""Training-time augmentation and core masks, batched on the training device (SCIENCE.md).

Every random choice is per sample: a batch draws one coin per image for each flip, one
k in {0,1,2,3} per image for rot90, and one coin per image for the core mask. The
randomness of batch b of epoch e comes from a generator seeded by (seed, e, b), so
- a sample gets fresh coins every epoch (the epoch is in the seed), and
- a run that is stopped mid-epoch and resumed draws exactly what it would have drawn.

A core mask of radius R zeroes, in all bands, the pixels whose distance from the
centre pixel ((31, 31) on a 63x63 cutout) is < R. Evaluation never masks except where a
metric asks for it (`mask_core`, for the core sensitivity curve).

On the CPU a batch is transformed in place, one copy per distinct flip/rotation, and the
mask touches only the disk's bounding box (docs/PERFORMANCE.md §1); on an accelerator the
flips and rotations are full-batch torch.where passes, which need no host sync. Both give
the same pixels for the same draws.
"""

from __future__ import annotations

import functools
import hashlib

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
    _core_mask_(x, radius, coins)
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


def _dihedral_grouped_(x: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor, k: torch.Tensor,
                       rot90: bool) -> torch.Tensor:
    """In place, the same pixels as _dihedral_where: one copy per distinct transform (CPU only).

    A vflip is an hflip plus a half turn, so (h, v, k) is the transform (h xor v, k + 2v mod 4):
    at most 8 distinct ones, each applied once to the images that drew it, the identity to none.
    `unique()` syncs with the host, which is free on the CPU and a stall on a GPU.
    """
    turns = (k if rot90 else torch.zeros_like(k)) + 2 * vflip.long()
    code = (hflip ^ vflip).long() + 2 * (turns % 4)
    for c in code.unique().tolist():
        if c == 0:
            continue
        pos = (code == c).nonzero().squeeze(1)
        part = x.index_select(0, pos)
        if c & 1:
            part = part.flip(-1)
        if c >> 1:
            part = torch.rot90(part, c >> 1, dims=(-2, -1))
        x.index_copy_(0, pos, part)
    return x


def _random_dihedral(x: torch.Tensor, gen: torch.Generator, hflip_p: float, vflip_p: float,
                     rot90: bool) -> torch.Tensor:
    """random_dihedral on a tensor the caller owns: on the CPU it is transformed in place."""
    if x.shape[-1] != x.shape[-2] and rot90:
        raise ValueError(f"rot90 needs square images, got {tuple(x.shape[-2:])}")
    n = x.shape[0]
    hflip = torch.rand(n, device=x.device, generator=gen) < hflip_p
    vflip = torch.rand(n, device=x.device, generator=gen) < vflip_p
    k = torch.randint(0, 4, (n,), device=x.device, generator=gen)
    if x.device.type == "cpu":
        return _dihedral_grouped_(x, hflip, vflip, k, rot90)
    return _dihedral_where(x, hflip, vflip, k, rot90)


def random_dihedral(x: torch.Tensor, gen: torch.Generator, *, hflip_p: float = 0.5,
                    vflip_p: float = 0.5, rot90: bool = True) -> torch.Tensor:
    """Per image: horizontal flip with prob. hflip_p, vertical with vflip_p, rot90 by k ~ U{0..3}. `x` is not changed."""
    return _random_dihedral(x.clone() if x.device.type == "cpu" else x, gen, hflip_p, vflip_p, rot90)


def augment_batch(x: torch.Tensor, gen: torch.Generator, aug: AugmentationConfig,
                  mask_radius: float, mask_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, rot90, then the stochastic core mask in force this epoch; returns (x, masked). `x` is not changed."""
    return _augment_batch_(x.clone(), gen, aug, mask_radius, mask_p)


def _augment_batch_(x: torch.Tensor, gen: torch.Generator, aug: AugmentationConfig,
                    mask_radius: float, mask_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """augment_batch on a tensor the caller owns (changed in place where the device allows)."""
    x = _random_dihedral(x, gen, aug.hflip_p, aug.vflip_p, aug.rot90)
    return _random_core_mask(x, mask_radius, mask_p, gen)


def training_batch(images: torch.Tensor, *, seed: int, epoch: int, batch: int, aug: AugmentationConfig,
                   masking: Masking) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `batch` of epoch `epoch` as the model trains on it: float32, augmented, masked per `masking`.

    `images` is not changed: the batch is its own float32 copy, made once and augmented in place.
    """
    radius, p = masking.at_epoch(epoch)
    gen = seeded_generator(images.device, seed, epoch, batch)
    return _augment_batch_(images.to(torch.float32, copy=True), gen, aug, radius, p)
