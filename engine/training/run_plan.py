"""What one start of a run will do, resolved and checked before anything is written: the RunPlan.

`make_plan(argv)` reads engine.train's options (engine/protocol/train_options.py), the config,
the host's dataset and runs root, the device, and records every deviation from
experiments.toml as an override, so a short run is never taken for the real one. `run_info`
is the run.json a start writes (engine/protocol/schema.py's RunInfo).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from engine import ENGINE_VERSION
from engine.config import Config, Experiment, load_config
from engine.data.preprocess import PREPROCESS_VERSION
from engine.data.settings import DataSettings
from engine.protocol import rundir
from engine.protocol.schema import RunInfo
from engine.protocol.train_options import build_parser
from engine.training.device import DeviceError, pick_device


class UsageError(Exception):
    """Bad input: reported in one message with exit code 2, before anything starts."""


@dataclass(frozen=True)
class RunPlan:
    """Everything one start of a run needs, resolved and checked before anything is written."""

    config: Config
    experiment: Experiment
    host: str
    dataset: str | None
    data_root: Path
    run_dir: Path
    epochs: int
    seed: int
    device: torch.device
    limit_train: int | None
    limit_val: int | None
    fresh: bool
    compile: bool
    cuda_graph: bool
    overrides: dict[str, Any]
    command: list[str]
    data_settings: DataSettings = DataSettings()
    provenance: dict[str, Any] | None = None   # --provenance: who asked for the run (lenstui's plan step, ...)

    def settings(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (device may)."""
        t, e = self.config.training, self.experiment
        return {
            "experiment": e.id, "data_mode": e.data_mode, "preprocessing": e.preprocessing,
            "sample": e.sample, "masking": [[s.from_epoch, s.radius, s.p] for s in e.masking.steps],
            "base": e.base, "stem": t.stem, "epochs": self.epochs, "batch_size": t.batch_size,
            "learning_rate": t.learning_rate, "weight_decay": t.weight_decay,
            "early_stopping_patience": t.early_stopping_patience, "seed": self.seed,
            "augmentation": [self.config.augmentation.hflip_p, self.config.augmentation.vflip_p,
                             self.config.augmentation.rot90],
            "sampling": [self.config.sampling.sample_fraction, self.config.sampling.seed],
            "limit_train": self.limit_train, "limit_val": self.limit_val, "data_root": str(self.data_root),
            # What picks and shapes the examples: a resume must not switch them under a run.
            "data": {"strata": list(self.data_settings.strata), "preprocess_version": PREPROCESS_VERSION,
                     "unpaired": self.data_settings.unpaired_manifest or self.data_settings.unpaired_method},
        }


def make_plan(argv: Sequence[str]) -> RunPlan:
    """Parse and check the options against the config; raises ConfigError or UsageError."""
    args = build_parser().parse_args(argv)   # torch-free: lenstui reads run commands with it
    config = load_config(args.config)
    experiment = config.experiment(args.experiment, base=args.base)
    host = config.host(args.host or "local")
    t = config.training
    # A limit of one row would leave one class; a batch of one breaks BatchNorm.
    for option, value, minimum in (("--epochs", args.epochs, 1), ("--limit-train", args.limit_train, 2),
                                   ("--limit-val", args.limit_val, 2), ("--seed", args.seed, 0)):
        if value is not None and value < minimum:
            raise UsageError(f"{option} {value}: expected an integer of at least {minimum}")

    # The host's cache folder and imported manifest go with the host's dataset, not with --data-root.
    data_settings = DataSettings.from_config(config, None if args.data_root is not None else host)
    if args.data_root is not None:
        data_root, dataset = args.data_root, None
        what, hint = f"--data-root {data_root}", f"python -m engine.synth --out {data_root} --scale 0.01 --seed 42"
    else:
        ds = config.dataset_for(host)
        data_root, dataset = Path(os.path.expanduser(host.resolve(ds.root))), ds.name
        what = f"dataset {ds.name!r} of host {host.name!r} ({data_root})"
        hint = (f"python -m engine.synth --out {data_root} --scale {ds.scale if ds.scale is not None else 0.01}"
                f" --seed {ds.seed if ds.seed is not None else 42}" if ds.kind == "synthetic" else "")
    missing = [s for s in ("train", "val", "test") if not (data_root / s).is_dir()]
    if missing:
        problem = "not found" if not data_root.is_dir() else f"has no {', '.join(missing)} folder"
        where = f"hosts.{host.name}.data_root" if host.data_root else f"datasets.{dataset}.root"
        fix = (f"make the synthetic set with `{hint}`" if hint
               else f"copy the shards there, or check {where} in {config.source}" if dataset else "check the path")
        raise UsageError(f"{what}: {problem}; {fix}")

    runs_root = args.runs_root or Path(os.path.expanduser(host.runs_root_path))
    try:
        device = pick_device(args.device)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None
    if args.cuda_graph and device.type != "cuda":
        raise UsageError(f"--cuda-graph: the training device is {device.type}; CUDA graphs need a GPU "
                         "(drop --cuda-graph, or run where torch sees CUDA)")
    if args.cuda_graph and args.compile:
        raise UsageError("--cuda-graph and --compile: choose one (the graph replays the eager model's kernels)")

    # A deviation from experiments.toml is recorded, so a short run is never taken for the real one.
    overrides: dict[str, Any] = {}
    if args.epochs is not None and args.epochs != t.epochs:
        overrides["epochs"] = args.epochs
    if args.seed is not None and args.seed != t.seed:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    if args.limit_train is not None:
        overrides["limit_train"] = args.limit_train
    if args.limit_val is not None:
        overrides["limit_val"] = args.limit_val
    if args.base is not None and args.base != config.experiments[experiment.id].base:
        overrides["base"] = args.base
    if args.data_root is not None:
        overrides["data_root"] = str(args.data_root)
    provenance = None
    if args.provenance is not None:
        try:
            provenance = json.loads(args.provenance)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--provenance: not JSON ({exc}): {args.provenance[:200]!r}") from None
        if not isinstance(provenance, dict):
            raise UsageError(f"--provenance: expected a JSON object, got {type(provenance).__name__}")
    return RunPlan(
        provenance=provenance,
        config=config, experiment=experiment, host=host.name, dataset=dataset,
        data_root=data_root.resolve(),
        # A seed other than the plan's is a replicate, with a directory of its own (rundir.run_name).
        run_dir=rundir.run_dir(runs_root, rundir.run_name(experiment.id, overrides.get("seed"), t.seed)),
        epochs=args.epochs or t.epochs, seed=t.seed if args.seed is None else args.seed, device=device,
        limit_train=args.limit_train, limit_val=args.limit_val, fresh=args.fresh, compile=args.compile,
        cuda_graph=args.cuda_graph,
        overrides=overrides,
        command=[sys.executable, "-m", "engine.train", *argv],
        data_settings=data_settings,
    )


def run_info(plan: RunPlan, *, status: str, started_at: str, device_name: str, precision: str,
             resumed_from: int | None, code: str) -> RunInfo:
    """run.json for this start (see rundir)."""
    me = rundir.process_identity(os.getpid())
    return {
        "experiment": plan.experiment.id, "run_name": plan.run_dir.name, "seed": plan.seed,
        "host": plan.host, "hostname": socket.gethostname(),
        "pid": os.getpid(), "pgid": os.getpgid(0),
        "pid_start_ticks": me.start_ticks if me else None, "cmdline": me.cmdline if me else "",
        "command": plan.command, "engine_version": ENGINE_VERSION, "code_version": code,
        "dataset": plan.dataset, "data_root": str(plan.data_root), "config": str(plan.config.source),
        "config_sha256": plan.config.sha256, "overrides": plan.overrides, "device": device_name,
        "precision": precision, "torch_version": torch.__version__, "resumed_from_epoch": resumed_from,
        # How the step ran: the same training, but not the same rounding (docs/TRAINING.md).
        "training_step": "cuda_graph" if plan.cuda_graph else "compile" if plan.compile else "eager",
        "started_at": started_at, "ended_at": None, "exit_status": None, "status": status,
        "provenance": plan.provenance,
    }
