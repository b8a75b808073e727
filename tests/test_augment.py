"""Augmentation and core masks: per sample, fresh every epoch, batched, exactly the pixels r < R."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.training.augment import (core_disk, mask_core, random_core_mask, random_dihedral, seeded_generator,
                            training_batch)
from engine.config import AugmentationConfig, load_config

torch.set_num_threads(1)
PLAN = load_config(Path(__file__).resolve().parent.parent / "experiments.toml")
AUG = PLAN.augmentation


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of one (C, H, W) image."""
    out = []
    for flipped in (x, x.flip(-1)):
        out += [torch.rot90(flipped, k, dims=(-2, -1)) for k in range(4)]
    return out


def _constant_images(n: int, size: int = 63) -> torch.Tensor:
    """Image i is the constant i + 1 in every band: zeros can only come from a mask."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(-1, 1, 1, 1).expand(n, 3, size, size).clone()


def test_disk_is_the_pixels_closer_than_r_to_the_centre_pixel():
    disk = core_disk(63, 63, 3.0, "cpu")
    assert disk[31, 31] and disk[31, 33] and disk[33, 31] and disk[29, 31]
    assert not disk[31, 34] and not disk[28, 31]  # distance exactly 3 is not < 3
    assert disk[33, 33] and not disk[34, 33]      # sqrt(8) < 3 < sqrt(13)
    assert int(disk.sum()) == 25                  # lattice points with x² + y² < 9: a 5x5 square
    assert torch.equal(disk, disk.flip(0)) and torch.equal(disk, disk.flip(1)) and torch.equal(disk, disk.T)


def test_deterministic_mask_zeroes_the_core_in_all_bands_and_nothing_else():
    x = torch.randn(4, 3, 63, 63) + 10
    out = mask_core(x, 7)
    disk = core_disk(63, 63, 7.0, "cpu")
    assert (out[:, :, disk] == 0).all()
    assert torch.equal(out[:, :, ~disk], x[:, :, ~disk])
    assert torch.equal(mask_core(x, 0), x)


def test_each_image_gets_its_own_flip_and_rotation_and_all_eight_occur_equally():
    n = 4000
    x = torch.arange(n * 25, dtype=torch.float32).view(n, 1, 5, 5)  # every pixel unique
    out = random_dihedral(x, seeded_generator("cpu", 1, 0, 0), hflip_p=0.5, vflip_p=0.5, rot90=True)
    which = []
    for i in range(n):
        matches = [k for k, v in enumerate(_dihedral(x[i])) if torch.equal(v, out[i])]
        assert len(matches) == 1, f"image {i} is not a flip/rotation of its input"
        which.append(matches[0])
    counts = torch.bincount(torch.tensor(which), minlength=8).float()
    # h, v flips at 0.5 and k uniform make the 8 group elements equally likely (1/8 each).
    assert ((counts / n - 1 / 8).abs() < 0.025).all(), counts


def test_flip_probabilities_are_honoured():
    x = torch.arange(2000 * 9, dtype=torch.float32).view(2000, 1, 3, 3)
    out = random_dihedral(x, seeded_generator("cpu", 2), hflip_p=1.0, vflip_p=0.0, rot90=False)
    assert torch.equal(out, x.flip(-1))
    out = random_dihedral(x, seeded_generator("cpu", 3), hflip_p=0.25, vflip_p=0.0, rot90=False)
    flipped = (out != x).flatten(1).any(1).float().mean()
    assert abs(float(flipped) - 0.25) < 0.04


@pytest.mark.parametrize("radius,p", [(5, 0.5), (3, 0.3), (7, 0.7)])
def test_stochastic_mask_is_per_sample_with_fraction_p(radius, p):
    n = 3000
    x = _constant_images(n, size=21)
    out, masked = random_core_mask(x, radius, p, seeded_generator("cpu", 42, radius))
    disk = core_disk(21, 21, float(radius), "cpu")
    zero = out == 0
    for i in range(n):
        expected = disk.expand(3, 21, 21) if masked[i] else torch.zeros(3, 21, 21, dtype=torch.bool)
        assert torch.equal(zero[i], expected)
    assert abs(float(masked.float().mean()) - p) < 0.03


@pytest.mark.parametrize("exp_id", ["B2", "B3", "B4"])
def test_the_plans_mask_variants_differ_by_sample_and_by_epoch(exp_id):
    """Training batches as train.py makes them: each sample draws its own coin every epoch."""
    masking = PLAN.experiment(exp_id).masking
    n, epochs = 256, 12
    images = _constant_images(n).half()
    seen = torch.zeros(epochs, n, dtype=torch.bool)
    for epoch in range(epochs):
        radius, p = masking.at_epoch(epoch)
        x, masked = training_batch(images, seed=42, epoch=epoch, batch=0, aug=AUG, masking=masking)
        assert x.dtype == torch.float32
        disk = core_disk(63, 63, float(radius), "cpu")
        zero = (x == 0).all(1)  # zero in all bands
        assert torch.equal(zero[masked], disk.expand(int(masked.sum()), 63, 63))
        assert not zero[~masked].any()
        assert abs(float(masked.float().mean()) - p) < 0.1, (epoch, float(masked.float().mean()), p)
        seen[epoch] = masked
    # Different samples are masked in different epochs, and no sample keeps one coin throughout.
    assert not torch.equal(seen[0], seen[1])
    per_sample = seen.float().mean(0)
    assert (per_sample > 0).float().mean() > 0.9 and (per_sample < 1).float().mean() > 0.9


def test_the_b3_schedule_switches_at_epochs_10_and_30():
    masking = PLAN.experiment("B3").masking
    assert [masking.at_epoch(e) for e in (0, 9, 10, 29, 30, 49)] == \
        [(7, 0.7), (7, 0.7), (5, 0.5), (5, 0.5), (3, 0.3), (3, 0.3)]
    images = _constant_images(512).half()
    for epoch, radius, p in ((9, 7, 0.7), (10, 5, 0.5), (29, 5, 0.5), (30, 3, 0.3)):
        x, masked = training_batch(images, seed=1, epoch=epoch, batch=3, aug=AUG, masking=masking)
        zero = (x[masked] == 0).all(1)
        assert torch.equal(zero[0], core_disk(63, 63, float(radius), "cpu")), epoch
        assert abs(float(masked.float().mean()) - p) < 0.07, epoch


def test_unmasked_experiments_are_never_masked_and_batches_are_reproducible():
    images = _constant_images(64).half()
    x, masked = training_batch(images, seed=5, epoch=3, batch=2, aug=AUG, masking=PLAN.experiment("B1").masking)
    assert not masked.any() and not (x == 0).any()
    again, _ = training_batch(images, seed=5, epoch=3, batch=2, aug=AUG, masking=PLAN.experiment("B1").masking)
    assert torch.equal(x, again)
    noise = torch.randn(64, 3, 63, 63).half()
    a, _ = training_batch(noise, seed=5, epoch=3, batch=2, aug=AUG, masking=PLAN.experiment("B2").masking)
    b, _ = training_batch(noise, seed=5, epoch=3, batch=2, aug=AUG, masking=PLAN.experiment("B2").masking)
    c, _ = training_batch(noise, seed=5, epoch=4, batch=2, aug=AUG, masking=PLAN.experiment("B2").masking)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_augmentation_when_the_config_turns_it_off():
    x = torch.randn(16, 3, 63, 63)
    off = AugmentationConfig(hflip_p=0.0, vflip_p=0.0, rot90=False)
    out, _ = training_batch(x, seed=0, epoch=0, batch=0, aug=off, masking=PLAN.experiment("A1").masking)
    assert torch.equal(out, x)


# --- The in-place CPU path against a straightforward reference ------------------------------------


def _reference_batch(images: torch.Tensor, idx: torch.Tensor, *, seed: int, epoch: int, batch: int,
                     aug: AugmentationConfig, masking) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch the plain way: gather, float32, per image hflip, vflip, rot90 by k, then the full-disk mask."""
    radius, p = masking.at_epoch(epoch)
    gen = seeded_generator("cpu", seed, epoch, batch)
    x = images[idx].float()
    n = x.shape[0]
    hflip = torch.rand(n, generator=gen) < aug.hflip_p
    vflip = torch.rand(n, generator=gen) < aug.vflip_p
    k = torch.randint(0, 4, (n,), generator=gen)
    coins = torch.rand(n, generator=gen) < p
    out = []
    for i in range(n):
        img = x[i]
        if hflip[i]:
            img = img.flip(-1)
        if vflip[i]:
            img = img.flip(-2)
        if aug.rot90:
            img = torch.rot90(img, int(k[i]), dims=(-2, -1))
        if radius > 0 and p > 0 and coins[i]:
            img = img.masked_fill(core_disk(img.shape[-2], img.shape[-1], float(radius), "cpu"), 0)
        out.append(img)
    masked = coins if radius > 0 and p > 0 else torch.zeros_like(coins)
    return torch.stack(out), masked


@pytest.mark.parametrize("exp_id", ["A1", "B2", "B3", "B4"])
def test_training_batches_are_bit_identical_to_the_per_image_reference(exp_id):
    """Same seeds, same batches: gathered first or by index=, the CPU path moves exactly the reference's pixels."""
    masking = PLAN.experiment(exp_id).masking
    images = torch.randn(300, 3, 63, 63).half()
    order = torch.randperm(300, generator=torch.Generator().manual_seed(7))
    for epoch in (0, 10, 30):
        for b in range(3):
            idx = order[b * 100:(b + 1) * 100]
            before = images.clone()
            want, want_masked = _reference_batch(images, idx, seed=42, epoch=epoch, batch=b, aug=AUG,
                                                 masking=masking)
            for x, masked in (training_batch(images.index_select(0, idx), seed=42, epoch=epoch, batch=b, aug=AUG,
                                             masking=masking),
                              training_batch(images, index=idx, seed=42, epoch=epoch, batch=b, aug=AUG,
                                             masking=masking)):
                assert x.dtype == torch.float32 and x.is_contiguous() and torch.equal(x, want), (exp_id, epoch, b)
                assert torch.equal(masked, want_masked)
            assert torch.equal(images, before)   # the resident split is never written


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [1, 17, 128])
def test_every_stored_precision_and_batch_size_matches_the_reference(dtype, n):
    """The pixels move as raw bits whatever the stored float type, for any batch size."""
    images = (torch.randn(200, 3, 63, 63) * 3).to(dtype)
    idx = torch.randperm(200, generator=torch.Generator().manual_seed(n))[:n]
    masking = PLAN.experiment("B2").masking
    x, masked = training_batch(images, index=idx, seed=8, epoch=2, batch=n, aug=AUG, masking=masking)
    want, want_masked = _reference_batch(images, idx, seed=8, epoch=2, batch=n, aug=AUG, masking=masking)
    assert x.dtype == torch.float32 and torch.equal(x, want) and torch.equal(masked, want_masked)


def test_a_bad_index_is_refused_with_the_rows_it_asked_for():
    images = torch.zeros(10, 3, 63, 63).half()
    masking = PLAN.experiment("A1").masking
    with pytest.raises(IndexError, match=r"rows 0\.\.10, images has 10"):
        training_batch(images, index=torch.tensor([0, 10]), seed=0, epoch=0, batch=0, aug=AUG, masking=masking)
    with pytest.raises(IndexError, match=r"rows -1\.\.3"):
        training_batch(images, index=torch.tensor([3, -1]), seed=0, epoch=0, batch=0, aug=AUG, masking=masking)


@pytest.mark.parametrize("aug", [AugmentationConfig(hflip_p=0.5, vflip_p=0.5, rot90=False),
                                 AugmentationConfig(hflip_p=0.0, vflip_p=1.0, rot90=True),
                                 AugmentationConfig(hflip_p=0.3, vflip_p=0.8, rot90=True)])
def test_every_flip_and_rotation_setting_matches_the_reference(aug):
    images = torch.randn(200, 3, 63, 63)
    masking = PLAN.experiment("B2").masking
    idx = torch.arange(200)
    x, masked = training_batch(images, seed=3, epoch=1, batch=5, aug=aug, masking=masking)
    want, want_masked = _reference_batch(images, idx, seed=3, epoch=1, batch=5, aug=aug, masking=masking)
    assert torch.equal(x, want) and torch.equal(masked, want_masked)


def test_public_functions_leave_their_input_alone_and_match_the_where_form():
    """random_dihedral and random_core_mask return new tensors; the where form (CUDA's) gives the same pixels."""
    from engine.training.augment import _dihedral_where

    x = torch.randn(64, 3, 15, 15)
    before = x.clone()
    out = random_dihedral(x, seeded_generator("cpu", 9), hflip_p=0.5, vflip_p=0.5, rot90=True)
    gen = seeded_generator("cpu", 9)
    hflip, vflip = torch.rand(64, generator=gen) < 0.5, torch.rand(64, generator=gen) < 0.5
    k = torch.randint(0, 4, (64,), generator=gen)
    assert torch.equal(out, _dihedral_where(x, hflip, vflip, k, True))
    masked_out, masked = random_core_mask(x, 4.5, 0.5, seeded_generator("cpu", 10))
    assert masked.any() and torch.equal(masked_out, torch.where(masked.view(-1, 1, 1, 1), mask_core(x, 4.5), x))
    assert torch.equal(x, before)


@pytest.mark.parametrize("size,radius", [(64, 5.0), (21, 30.0), (8, 0.5), (63, 0.9)])
def test_the_stochastic_masks_match_the_full_disk_for_any_size_and_radius(size, radius):
    """The CPU's scatter to the disk's pixels and the accelerators' bounding-box form zero the same pixels."""
    from engine.training.augment import _core_mask_

    x = torch.randn(40, 3, size, size) + 10
    out, masked = random_core_mask(x, radius, 0.5, seeded_generator("cpu", size, radius))
    want = torch.where(masked.view(-1, 1, 1, 1), mask_core(x, radius), x)
    assert torch.equal(out, want)
    strided = x.half().transpose(-2, -1)   # float16, and not contiguous (nor is its clone)
    assert not strided.clone().is_contiguous()
    out, masked = random_core_mask(strided, radius, 0.5, seeded_generator("cpu", size, radius))
    assert torch.equal(out, torch.where(masked.view(-1, 1, 1, 1), mask_core(strided, radius), strided))
    boxed = x.clone()
    _core_mask_(boxed, radius, masked)
    assert torch.equal(boxed, want)
