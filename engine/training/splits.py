"""A split on the training device: the images resident there, labels and metadata on the host.

`load_device_split` reads one split through the data layer (engine/data/load.py: manifests and
the stamp cache, built once) and moves its images to the device; `effective_sample` counts the
distinct images behind its rows. Training, evaluation and the end-of-training gates all read
their splits so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import Config, Experiment
from engine.data.settings import DataSettings


@dataclass
class DeviceSplit:
    """One split's arrays: images resident on the device, labels and metadata on the host."""

    name: str
    images: torch.Tensor | None   # (N, 3, 63, 63) float16 on the training device; None: host only
    labels: np.ndarray        # (N,) uint8
    theta_e: np.ndarray       # (N,) float32
    groups: np.ndarray        # (N,) int64 LRG ids (the gates' CV groups)
    host_images: np.ndarray   # the same images on the host, for the gates (NumPy)
    info: dict[str, Any]
    bad_rows: tuple
    bad_rows_summary: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a random `n`-row subset with the classes as balanced as the split allows."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_pos = min(len(pos), max(n // 2, n - len(neg)))
    n_neg = min(len(neg), n - n_pos)
    return np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]))

def load_device_split(config: Config, experiment: Experiment, data_root: str | Path, split: str,
                      device: torch.device | None, *, limit: int | None = None, limit_seed: int = 0,
                      settings: DataSettings | None = None, preprocessing: str | None = None) -> DeviceSplit:
    """Read one split through the data layer (cached preprocessing) and move its images to `device`.

    `settings`: the data settings (DataSettings.from_config with the run's host); default: the
    config's without a host (its sample, strata, unpaired method and bad-row limit).
    `device` None keeps the images on the host only (a data probe needs no model).
    `preprocessing` reads the same rows with another preprocessing (default: the experiment's).
    """
    from engine.data.load import load_split  # the data layer reads Parquet; imported only when needed

    arrays = load_split(data_root, mode=experiment.data_mode, sample=experiment.sample, split=split,
                        preprocessing=preprocessing or experiment.preprocessing,
                        settings=settings or DataSettings.from_config(config))
    images, labels = np.asarray(arrays.images), np.asarray(arrays.labels)
    theta_e, groups = np.asarray(arrays.theta_e), np.asarray(arrays.lrg_id)
    bad_summary = arrays.bad_rows_summary()
    if limit is not None and limit < len(labels):
        keep = balanced_subset(labels, limit, limit_seed)
        images, labels, theta_e, groups = images[keep], labels[keep], theta_e[keep], groups[keep]
    # A copy: the data layer may hand out a read-only memmap, and the device wants its own memory.
    tensor = (torch.from_numpy(np.array(images, dtype=np.float16, copy=True)).to(device)
              if device is not None else None)
    return DeviceSplit(split, tensor, labels.astype(np.uint8), theta_e.astype(np.float32),
                       groups.astype(np.int64), images, dict(arrays.info), tuple(arrays.bad_rows), bad_summary)

def effective_sample(images: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, int]:
    """Rows and distinct images per label of one split: its effective sample size.

    Distinct = distinct image bytes (the preprocessed stamps as cached: preprocessing is
    deterministic, so byte-identical blobs give byte-identical stamps). In the unpaired view an
    LRG's rows share one control, so a split's negatives hold far fewer distinct images than
    rows; `*_lrgs` counts the LRGs behind each label.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    digests = np.array([hashlib.blake2b(np.ascontiguousarray(images[i]).tobytes(), digest_size=16).digest()
                        for i in range(len(labels))], dtype=object)
    out: dict[str, int] = {"rows": int(len(labels))}
    for label, name in ((1, "positive"), (0, "negative")):
        rows = labels == label
        out[name] = int(rows.sum())
        out[f"distinct_{name}"] = len(set(digests[rows]))
        out[f"{name}_lrgs"] = int(len(np.unique(groups[rows])))
    return out
