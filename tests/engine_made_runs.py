"""Masking-variant results made the way the engine makes them, for the §10 sub-tree tests.

B1-B4 share data mode, preprocessing, sample and seed, so they share their val images: every
variant's unmasked core probe is B1's. What differs is the mask radius the probe is judged at
(B2: 5, B4: 3, B3: the radius in force at its best.pt epoch) and the model. Here the val split
is built once per data set (raw stamps → engine.data.preprocess.residual, as the stamp cache does),
the models are fixed linear scorers (a torch module, so engine.evaluate runs them like a
ResNet), and every end-of-training number comes from engine.training.evaluate.final_val_metrics, the
function engine.train calls with best.pt. No core value is written by hand.

The data: per LRG a round host plus its own noise (an LRG's rows share it; its control is one
image, repeated for every row, as in the real unpaired view); each lens adds a quarter arc at
r = 10 px, brighter at larger θ_E, and a point-like counter-image somewhere in the core
(r < `shortcut_radius`): the shortcut that survives residual preprocessing.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.config import Config
from engine.training.evaluate import auroc, final_val_metrics, predict
from engine.training.splits import DeviceSplit
from engine.data.preprocess import radius_map, residual

SIZE = 63
R = radius_map(SIZE)
_Y, _X = np.meshgrid(np.arange(SIZE) - SIZE // 2, np.arange(SIZE) - SIZE // 2, indexing="ij")
ANGLE = np.arctan2(_Y, _X)
THETAE_MIDS = (0.625, 0.875, 1.25, 1.75, 2.25, 2.75)        # the plan's six bins
ARC_AMPLITUDE = (1.6, 1.8, 2.0, 2.3, 2.6, 3.0)              # per bin: small θ_E arcs are fainter
ARC_RADIUS = 10
COUNTER_IMAGE = 18.0


@lru_cache(maxsize=None)
def val_split(shortcut_radius: float, seed: int = 0, lrgs_per_label: int = 150, rows_per_lrg: int = 3) -> DeviceSplit:
    """The shared val split (unpaired: lens and non-lens LRGs disjoint), residual inputs, on the CPU."""
    rng = np.random.default_rng(seed)
    n_lrg = 2 * lrgs_per_label
    labels = np.repeat(np.r_[np.ones(lrgs_per_label), np.zeros(lrgs_per_label)].astype(np.uint8), rows_per_lrg)
    groups = np.repeat(np.arange(n_lrg, dtype=np.int64), rows_per_lrg)
    host = 30 * np.exp(-R / 3)[None] * rng.uniform(0.5, 1.5, (n_lrg, 1, 1))
    images = np.repeat((host[:, None] + rng.normal(0, 1, (n_lrg, 3, SIZE, SIZE))), rows_per_lrg, axis=0)
    images = images.astype(np.float32)
    bins = rng.integers(0, len(THETAE_MIDS), len(labels))
    theta_e = (np.asarray(THETAE_MIDS)[bins] + rng.uniform(-0.1, 0.1, len(labels))).astype(np.float32)
    core = np.argwhere(R < shortcut_radius)
    for i in np.flatnonzero(labels == 1):
        images[i] += rng.normal(0, 0.3, (3, SIZE, SIZE))            # each injection is its own image
        offset = np.angle(np.exp(1j * (ANGLE - rng.uniform(-np.pi, np.pi))))
        images[i] += ARC_AMPLITUDE[bins[i]] * ((np.abs(R - ARC_RADIUS) < 0.8) & (np.abs(offset) < np.pi / 4))
        y, x = core[rng.integers(len(core))]
        images[i, :, y, x] += COUNTER_IMAGE
    cached = residual(images).astype(np.float16)
    return DeviceSplit("val", torch.from_numpy(cached.copy()), labels, theta_e, groups, cached, {}, (), {})


class LinearScorer(nn.Module):
    """logit = Σ weights · image: a model whose reliance on each pixel is known."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.as_tensor(weights, dtype=torch.float32)[None], requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.weights).sum((1, 2, 3)).unsqueeze(1)


def _annulus(lo: float, hi: float) -> np.ndarray:
    return ((R >= lo) & (R < hi)).astype(np.float32)


# The models, by what they look at.
MODELS = {
    "arcs": lambda rs: _annulus(ARC_RADIUS - 0.7, ARC_RADIUS + 0.7),    # the arc ring: every criterion PASSes
    "broad": lambda rs: _annulus(8, 13),                                # more noise: a wider θ_E spread
    "core": lambda rs: _annulus(7, 18) + 0.6 * (R < rs),                # leans on the counter-image: reliance FAILs
    "weak": lambda rs: _annulus(7, 30),                                 # mostly noise: val AUROC FAILs
}


_RUNS: dict[tuple, dict[str, Any]] = {}


def engine_run(config: Config, exp_id: str, shortcut_radius: float, model: str, best_epoch: int = 4,
               epochs: int = 50) -> dict[str, Any]:
    """metrics.json of a finished run of `exp_id` whose best.pt is `model`, as engine.train writes it.

    Runs that share config, data, experiment, model and best epoch are the same run: made once,
    and each caller gets its own copy.
    """
    key = (config.sha256, config.metrics, exp_id, shortcut_radius, model, best_epoch, epochs)
    if key not in _RUNS:
        _RUNS[key] = _make_run(config, exp_id, shortcut_radius, model, best_epoch, epochs)
    return copy.deepcopy(_RUNS[key])


def _make_run(config: Config, exp_id: str, shortcut_radius: float, model: str, best_epoch: int,
              epochs: int) -> dict[str, Any]:
    experiment = config.experiments[exp_id]
    val = val_split(shortcut_radius)
    scorer = LinearScorer(np.repeat(MODELS[model](shortcut_radius)[None], 3, axis=0))
    best = auroc(val.labels, predict(scorer, val.images))
    history = [{"epoch": e, "train_loss": 0.3, "val_auroc": best - 0.001 * abs(e - best_epoch) - (0.001 if e > best_epoch else 0),
                "val_loss": 0.3, "learning_rate": 1e-4, "epoch_time_sec": 1.0} for e in range(1, epochs + 1)]
    metrics: dict[str, Any] = {
        "schema_version": 2, "experiment": exp_id, "status": "done", "epochs_planned": epochs, "overrides": {},
        "inputs": {"data_mode": experiment.data_mode, "preprocessing": experiment.preprocessing,
                   "sample": experiment.sample, "masking": experiment.masking.describe()},
        "history": history, "gates": [], "best_val_auroc": best, "best_epoch": best_epoch,
    }
    metrics.update(final_val_metrics(scorer, val, experiment, config.metrics, best_epoch=best_epoch,
                                     raw_note="not computed in this fixture"))
    return metrics
