"""Checkpoint files, and where training stands: what last.pt holds so that a stop is continued exactly.

Tensors and plain data only, so `torch.load(weights_only=True)` reads them. Every file is
written through engine/files.py (temp file + fsync + rename): a kill leaves the old file
whole. last.pt, every epoch (and on a stop mid-epoch), holds the model, optimiser, schedule,
scaler, every RNG's state, the run's settings and `Progress`; best.pt, on each new best val
AUROC, holds the model and its epoch. `Progress` is listed once: its fields are the
checkpoint's keys.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.files import replace_via_temp
from engine.protocol.rundir import RunState
from engine.protocol.schema import Metrics

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or unreadable; the message names the file."""


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    """torch.save `obj` to `path` atomically (temp file + fsync + rename): never half a file.

    A file-system failure (full disk, read-only, quota) is a CheckpointError naming the file
    and the reason; the previous file at `path` is left as it was.
    """
    path = Path(path)

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    try:
        replace_via_temp(path, fill)
    except BaseException as exc:
        # torch reports a full disk as "unexpected pos" with the OSError only in the chain.
        cause = _os_error_in(exc)
        if cause is not None:
            raise CheckpointError(f"cannot write {path}: {cause.strerror or cause}; "
                                  f"the previous {path.name} is kept") from exc
        raise


def _os_error_in(exc: BaseException | None) -> OSError | None:
    """The first OSError in `exc` or its chain of causes and contexts."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def remove_stale_temp_files(directory: Path, names: tuple[str, ...]) -> list[str]:
    """Delete `.NAME.*.tmp` left by a process killed while writing NAME; call holding the run lock."""
    removed = []
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; a missing or damaged file is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path}: not a lenstui checkpoint (no 'model' entry)")
    return obj


# ---------------------------------------------------------------------------
# The optimiser's state across devices


BUILD_FLAGS = ("fused", "capturable", "foreach", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A checkpoint's optimiser state into `optimizer`, keeping how `optimizer` was built.

    The saved param_groups carry the flags of the device the run was on when it saved
    (fused, capturable, lr as a float or, under a CUDA graph, a tensor); a run may resume
    elsewhere (CPU to GPU, with or without a CUDA graph), so the flags are put back as
    built, the learning rate comes back as a float, and each `step` counter moves to where
    the built optimiser keeps it (the parameter's device when fused or capturable, else the CPU).
    """
    built = [{k: g[k] for k in BUILD_FLAGS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, built):
        group.update(flags, lr=float(group["lr"]))
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param)
            if state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=param.device if on_device else "cpu", dtype=torch.float32)


# ---------------------------------------------------------------------------
# Randomness


def rng_states() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data (weights_only=True can load it)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what rng_states saved (CUDA states only where there is CUDA)."""
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((3, tuple(states["python"]), None))


# ---------------------------------------------------------------------------
# Where training stands


@dataclass
class Progress:
    """Where training stands: enough, with the model and optimiser, to continue exactly."""

    epoch: int = 0                 # the epoch in progress (or next to start), counted from 0
    batch: int = 0                 # batches of `epoch` already done
    loss_sum: float = 0.0          # sum over the epoch's finished batches of (batch loss × batch size)
    seen: int = 0
    elapsed: float = 0.0           # seconds spent on `epoch` before the last stop
    best_val_auroc: float = -math.inf
    best_epoch: int = -1           # the loop's counter (from 0); metrics.json's best_epoch is this + 1
    training_finished: bool = False
    status: RunState = RunState.RUNNING   # this start's state (rundir.RunState: forward moves only)
    metrics: Metrics = field(default_factory=dict)   # type: ignore[assignment]

    def state(self) -> dict[str, Any]:
        """The checkpoint's part: every field, the status as its word and the metrics as JSON text."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("status", "metrics")}
        out["status"] = self.status.value   # a plain str: weights_only loads it
        out["metrics_json"] = json.dumps(self.metrics, allow_nan=True)
        return out

    @classmethod
    def resumed(cls, ckpt: dict[str, Any], metrics: Metrics) -> "Progress":
        """Where last.pt stood, as a new start (its state is `running` again) with `metrics`."""
        return cls(**{f.name: ckpt[f.name] for f in fields(cls) if f.name not in ("status", "metrics")},
                   metrics=metrics)
