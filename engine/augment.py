"""Training-time augmentation and core masks, batched on the training device (SCIENCE.md).

Every random choice is per sample: a batch draws one coin per image for each flip, one
k in {0,1,2,3} per image for rot90, and one coin per image for the core mask. The
randomness of batch b of epoch e comes from a generator seeded by (seed, e, b), so
- a sample gets fresh coins every epoch (the epoch is in the seed), and
- a run that is stopped mid-epoch and resumed draws exactly what it would have drawn.

A core mask of radius R zeroes, in all bands, the pixels whose distance from the
centre pixel ((31, 31) on a 63x63 cutout) is < R. Evaluation never masks except where a
metric asks for it (`mask_core`, for the core sensitivity curve).
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


def mask_core(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Every image of `x` (B, C, H, W) with its core (r < radius) set to 0 in all bands."""
    if radius <= 0:
        return x
    return x.masked_fill(_disk_for(x, radius), 0)


def random_core_mask(x: torch.Tensor, radius: float, p: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each image's core with probability `p`, one coin per image; returns (x, masked)."""
    coins = torch.rand(x.shape[0], device=x.device, generator=gen) < p
    if radius <= 0 or p <= 0:
        return x, torch.zeros_like(coins)
    select = coins.view(-1, 1, 1, 1) & _disk_for(x, radius)
    return x.masked_fill(select, 0), coins


def random_dihedral(x: torch.Tensor, gen: torch.Generator, *, hflip_p: float = 0.5,
                    vflip_p: float = 0.5, rot90: bool = True) -> torch.Tensor:
    """Per image: horizontal flip with prob. hflip_p, vertical with vflip_p, rot90 by k ~ U{0..3}."""
    if x.shape[-1] != x.shape[-2] and rot90:
        raise ValueError(f"rot90 needs square images, got {tuple(x.shape[-2:])}")
    n = x.shape[0]
    hflip = torch.rand(n, device=x.device, generator=gen) < hflip_p
    vflip = torch.rand(n, device=x.device, generator=gen) < vflip_p
    k = torch.randint(0, 4, (n,), device=x.device, generator=gen)
    x = torch.where(hflip.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(vflip.view(-1, 1, 1, 1), x.flip(-2), x)
    if rot90:
        out = x
        for turns in (1, 2, 3):
            out = torch.where((k == turns).view(-1, 1, 1, 1), torch.rot90(x, turns, dims=(-2, -1)), out)
        x = out
    return x


def augment_batch(x: torch.Tensor, gen: torch.Generator, aug: AugmentationConfig,
                  mask_radius: float, mask_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, rot90, then the stochastic core mask in force this epoch; returns (x, masked)."""
    x = random_dihedral(x, gen, hflip_p=aug.hflip_p, vflip_p=aug.vflip_p, rot90=aug.rot90)
    return random_core_mask(x, mask_radius, mask_p, gen)


def training_batch(images: torch.Tensor, *, seed: int, epoch: int, batch: int, aug: AugmentationConfig,
                   masking: Masking) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `batch` of epoch `epoch` as the model trains on it: float32, augmented, masked per `masking`."""
    radius, p = masking.at_epoch(epoch)
    gen = seeded_generator(images.device, seed, epoch, batch)
    return augment_batch(images.float(), gen, aug, radius, p)
