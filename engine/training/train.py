"""Train one experiment of the plan, headless: `python -m engine.train --experiment B1`.

Reads top to bottom: options -> the run directory (lock, resume or start) -> data on the
device -> model and optimiser -> the gates before training -> epochs (augment, step,
validate, gate, checkpoint) -> the end of training with best.pt (sensitivity curve, final
gates, the test set once) -> status done. docs/TRAINING.md explains the choices.

Exit codes (engine/protocol/exitcodes.py): 0 done; 1 failed (traceback in stdout.log); 2 bad input
(nothing started); 3 another process is running this experiment; 128+signal (143 for SIGTERM, 130 for
SIGINT) aborted on request, after saving last.pt and writing `status: aborted`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from engine import ENGINE_VERSION

from engine import files
from engine.files import timestamp

from engine.protocol import rundir
from engine.training.augment import seeded_generator, training_batch
from engine.config import Config, ConfigError, Experiment, load_config
from engine.data.settings import DataSettings
from engine.training.device import DeviceError, describe, memory_format, pick_device, pick_precision
from engine.training.evaluate import (DeviceSplit, apply_evaluation, auroc, auroc_by_thetae, bce, effective_sample,
                                      evaluate_split, final_val_metrics, gate_record, load_device_split, predict,
                                      with_verdicts)
from engine.training.model import (CheckpointError, build_model, build_optimizer, load_checkpoint, load_optimizer_state,
                          remove_stale_temp_files, save_checkpoint)
from engine.data.manifest import ManifestError
from engine.files import CacheError
from engine.data.preprocess import PREPROCESS_VERSION
from engine.protocol.codeversion import code_version
from engine.numbers import fixed
from engine.protocol import exitcodes
from engine.protocol.rundir import RunState, advance
from engine.protocol.schema import Metrics, RunInfo
from engine.protocol.runlog import RunLog
from engine.data.shards import BadRowsError, BlobError, ShardError
from engine.training.step import CudaGraphStep, EagerStep
from engine.protocol.train_options import build_parser

# Errors of the data layer, whose messages name the shard, the row and what is wrong.
NA = "n/a"   # what a log line shows where a metric has no value
DATA_ERRORS = (ShardError, BlobError, BadRowsError, ManifestError, CacheError)
CHECKPOINT_FORMAT = 1


class UsageError(Exception):
    """Bad input: reported in one message with exit code 2, before anything starts."""


# ---------------------------------------------------------------------------
# Options


def _parser() -> argparse.ArgumentParser:
    return build_parser()   # engine/protocol/train_options.py: torch-free, so lenstui reads run commands with it


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
    args = _parser().parse_args(argv)
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
    return RunPlan(
        config=config, experiment=experiment, host=host.name, dataset=dataset,
        data_root=data_root.resolve(), run_dir=rundir.run_dir(runs_root, experiment.id),
        epochs=args.epochs or t.epochs, seed=t.seed if args.seed is None else args.seed, device=device,
        limit_train=args.limit_train, limit_val=args.limit_val, fresh=args.fresh, compile=args.compile,
        cuda_graph=args.cuda_graph,
        overrides=overrides,
        command=[sys.executable, "-m", "engine.train", *argv],
        data_settings=data_settings,
    )


# ---------------------------------------------------------------------------
# Signals: finish the current batch, save last.pt, say aborted


@dataclass
class StopRequest:
    """Set by SIGTERM/SIGINT; the training loop looks at it after every batch."""

    signum: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second ctrl-c: stop now, without waiting for the batch
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


class Aborted(Exception):
    """A stop was requested; raised at a point where the state on disk is consistent."""


# ---------------------------------------------------------------------------
# Provenance


def run_info(plan: RunPlan, *, status: str, started_at: str, device_name: str, precision: str,
             resumed_from: int | None, code: str) -> RunInfo:
    """run.json for this start (see rundir)."""
    me = rundir.process_identity(os.getpid())
    return {
        "experiment": plan.experiment.id, "host": plan.host, "hostname": socket.gethostname(),
        "pid": os.getpid(), "pgid": os.getpgid(0),
        "pid_start_ticks": me.start_ticks if me else None, "cmdline": me.cmdline if me else "",
        "command": plan.command, "engine_version": ENGINE_VERSION, "code_version": code,
        "dataset": plan.dataset, "data_root": str(plan.data_root), "config": str(plan.config.source),
        "config_sha256": plan.config.sha256, "overrides": plan.overrides, "device": device_name,
        "precision": precision, "torch_version": torch.__version__, "resumed_from_epoch": resumed_from,
        # How the step ran: the same training, but not the same rounding (docs/TRAINING.md).
        "training_step": "cuda_graph" if plan.cuda_graph else "compile" if plan.compile else "eager",
        "started_at": started_at, "ended_at": None, "exit_status": None, "status": status,
    }


# ---------------------------------------------------------------------------
# The run directory: lock, move aside, resume


def take_run_directory(plan: RunPlan) -> tuple[int, Path | None]:
    """Lock the run directory (the launcher's lock if it passed one); with --fresh, move the old one aside.

    Returns the lock's fd and where the old directory went (None if nothing moved).
    Raises rundir.AlreadyRunning when another process holds it.
    """
    fd = rundir.inherited_run_lock()
    if fd is None:
        fd = rundir.acquire_run_lock(plan.run_dir)
    previous = (rundir.METRICS_FILE, rundir.RUN_FILE, rundir.LAST_CKPT, rundir.BEST_CKPT)
    if not plan.fresh or not any((plan.run_dir / name).exists() for name in previous):
        return fd, None
    aside = rundir.aside_path(plan.run_dir)
    old_log = plan.run_dir / rundir.LOG_FILE
    # Launched by lenstui, stdout/stderr are the old stdout.log: they must follow to the new one.
    redirect = [std for std in (1, 2) if _fd_is_file(std, old_log)]
    os.rename(plan.run_dir, aside)  # holding the old lock: nobody can be writing in it
    old = fd
    fd = rundir.acquire_run_lock(plan.run_dir)
    os.close(old)
    launch = aside / rundir.LAUNCH_FILE
    if launch.exists() and (files.read_json(launch).data or {}).get("pid") == os.getpid():
        files.atomic_write_bytes(plan.run_dir / rundir.LAUNCH_FILE, launch.read_bytes())  # this start's
    if redirect:
        sys.stdout.flush()
        sys.stderr.flush()
        new_log = os.open(plan.run_dir / rundir.LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for std in redirect:
            os.dup2(new_log, std)
        os.close(new_log)
    return fd, aside


def _fd_is_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def resume_point(plan: RunPlan) -> dict[str, Any] | None:
    """last.pt when it exists and matches this plan; UsageError when it cannot be resumed."""
    path = plan.run_dir / rundir.LAST_CKPT
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path, "cpu")  # load_state_dict moves each part to the device it belongs on
    except CheckpointError as exc:
        raise UsageError(f"{exc}; pass --fresh to start over (the old run is kept)") from None
    before = ckpt.get("settings") or {}
    differences = [f"{k}: was {before.get(k)!r}, now {v!r}" for k, v in plan.settings().items() if before.get(k) != v]
    if differences:
        raise UsageError(f"{plan.run_dir} was started with other settings ({'; '.join(differences)}); "
                         "pass the same options to resume it, or --fresh to start over (the old run is kept)")
    if ckpt.get("status") == RunState.DONE:
        raise UsageError(f"{plan.experiment.id} in {plan.run_dir} is already done; "
                         "pass --fresh to train it again (the old run is kept)")
    return ckpt


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
# Training


@dataclass
class Progress:
    """Where training stands: enough, with the model and optimiser, to continue exactly."""

    epoch: int = 0                 # the epoch in progress (or next to start)
    batch: int = 0                 # batches of `epoch` already done
    loss_sum: float = 0.0          # sum over the epoch's finished batches of (batch loss × batch size)
    seen: int = 0
    elapsed: float = 0.0           # seconds spent on `epoch` before the last stop
    best_val_auroc: float = -math.inf
    best_epoch: int = -1
    training_finished: bool = False
    status: RunState = RunState.RUNNING   # this start's state (rundir.RunState: forward moves only)
    metrics: Metrics = field(default_factory=dict)   # type: ignore[assignment]


class Trainer:
    """One start of one run: holds the plan, the log, the data on the device, the model and its state."""

    def __init__(self, plan: RunPlan, log: RunLog, stop: StopRequest) -> None:
        self.plan, self.log, self.stop = plan, log, stop
        self.cfg = plan.config
        self.device = plan.device
        self.precision = pick_precision(self.device, self.cfg.training.mixed_precision)
        self.dir = plan.run_dir
        self.train_split: DeviceSplit | None = None
        self.val: DeviceSplit | None = None

    # -- checkpoints -------------------------------------------------------------

    def checkpoint(self, p: Progress) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "experiment": self.plan.experiment.id,
            "stem": self.cfg.training.stem, "in_channels": self.cfg.training.in_channels,
            "settings": self.plan.settings(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_states(),
            "epoch": p.epoch, "batch": p.batch, "loss_sum": p.loss_sum, "seen": p.seen, "elapsed": p.elapsed,
            "best_val_auroc": p.best_val_auroc, "best_epoch": p.best_epoch,
            "training_finished": p.training_finished, "status": p.status.value,   # plain str: weights_only loads it
            "metrics_json": json.dumps(p.metrics, allow_nan=True),
        }

    def save_last(self, p: Progress) -> None:
        save_checkpoint(self.dir / rundir.LAST_CKPT, self.checkpoint(p))

    def save_best(self, epoch: int, val_auroc: float) -> None:
        save_checkpoint(self.dir / rundir.BEST_CKPT, {
            "format": CHECKPOINT_FORMAT, "experiment": self.plan.experiment.id,
            "stem": self.cfg.training.stem, "in_channels": self.cfg.training.in_channels,
            "model": self.model.state_dict(), "epoch": epoch, "val_auroc": val_auroc,
        })

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        rundir.write_metrics(self.dir, with_verdicts(metrics, self.cfg))

    # -- the run -----------------------------------------------------------------

    def run(self, resume: dict[str, Any] | None) -> int:
        plan, cfg, t = self.plan, self.cfg, self.cfg.training
        started_at = timestamp()
        code = code_version()
        p = self.restore_progress(resume)
        info = run_info(plan, status=p.status, started_at=started_at, device_name=describe(self.device),
                        precision=self.precision.name, resumed_from=p.epoch if resume else None, code=code)
        rundir.write_run_info(self.dir, info)
        self.info, self.progress = info, p
        title = (f"resumed from epoch {p.epoch}" + (f" batch {p.batch}" if p.batch else "")) if resume else "start"
        self.log.header(f"{plan.experiment.id} {title}", {
            "command": shlex.join(plan.command), "host": f"{plan.host} ({socket.gethostname()})",
            "pid": os.getpid(), "code": code, "config": f"{plan.config.source} (sha256 {plan.config.sha256[:12]})",
            "data": f"{plan.dataset or '--data-root'} {plan.data_root}",
            "experiment": f"{plan.experiment.data_mode} / {plan.experiment.preprocessing} / {plan.experiment.sample}"
                          f" / mask {plan.experiment.masking.describe()}" + (f" (base {plan.experiment.base})"
                                                                             if plan.experiment.base else ""),
            "training": f"resnet18 stem={t.stem} epochs={plan.epochs} batch={t.batch_size} lr={t.learning_rate:g} "
                        f"wd={t.weight_decay:g} patience={t.early_stopping_patience} seed={plan.seed}",
            "device": f"{describe(self.device)} precision={self.precision.name} "
                      f"layout={'channels_last' if memory_format(self.device) == torch.channels_last else 'nchw'}"
                      + (" torch.compile" if plan.compile else "") + (" cuda-graph" if plan.cuda_graph else ""),
            "overrides": json.dumps(plan.overrides) if plan.overrides else "none (the plan's settings)",
        })
        if plan.overrides:
            self.log.line("NOTE: overrides in force; this is not the plan's run: "
                          + ", ".join(f"{k}={v}" for k, v in plan.overrides.items()))
        exit_code = exitcodes.FAILED
        try:
            self.write_metrics(p.metrics)
            self.load_data()
            self.build(resume)
            if not p.training_finished:
                self.train_epochs(p)
            self.finish(p)
            exit_code = exitcodes.OK
        except Aborted as exc:
            p.status = advance(p.status, RunState.ABORTED)
            exit_code = 128 + (self.stop.signum or signal.SIGTERM)
            self.log.line(f"aborted on {self.stop.name or 'request'} {exc}; resume with the same command")
        except KeyboardInterrupt:
            p.status = advance(p.status, RunState.ABORTED)
            exit_code = 130
            self.log.line("interrupted twice: stopped without saving this epoch's progress")
        except UsageError as exc:
            p.status = advance(p.status, RunState.FAILED)
            self.log.line(f"FAILED: {exc}")
        except DATA_ERRORS as exc:   # bad shards or rows: the message names them; a traceback would bury it
            p.status = advance(p.status, RunState.FAILED)
            self.log.line(f"FAILED: bad data: {exc}")
        except Exception as exc:
            p.status = advance(p.status, RunState.FAILED)
            # The reason on one line a person reads, then the traceback for whoever debugs it.
            self.log.line(f"FAILED at epoch {p.epoch}: {type(exc).__name__}: {exc}\n"
                          f"{traceback.format_exc().rstrip()}")
        finally:
            p.metrics["status"] = p.status
            self.write_metrics(p.metrics)
            info.update(status=p.metrics["status"], ended_at=timestamp(),
                        exit_status=exit_code)
            rundir.write_run_info(self.dir, info)
            self.log.line(f"{plan.experiment.id}: {p.metrics['status']} (exit {exit_code})")
        return exit_code

    def restore_progress(self, resume: dict[str, Any] | None) -> Progress:
        e = self.plan.experiment
        # What the run's inputs are: a verdict reads it (a radial gate on residual inputs cannot fail).
        inputs = {"data_mode": e.data_mode, "preprocessing": e.preprocessing, "sample": e.sample,
                  "masking": e.masking.describe()}
        if resume is None:
            metrics = rundir.new_metrics(e.id, self.plan.epochs, self.plan.overrides)
            metrics["inputs"] = inputs
            return Progress(metrics=metrics)
        metrics = rundir.upgrade_metrics(json.loads(resume["metrics_json"]))   # a run begun by an older engine
        metrics["status"] = RunState.RUNNING   # a new start: its state begins again
        metrics["overrides"] = dict(self.plan.overrides)
        metrics["inputs"] = inputs
        return Progress(epoch=resume["epoch"], batch=resume["batch"], loss_sum=resume["loss_sum"],
                        seen=resume["seen"], elapsed=resume["elapsed"], best_val_auroc=resume["best_val_auroc"],
                        best_epoch=resume["best_epoch"], training_finished=resume["training_finished"],
                        metrics=metrics)

    def load_data(self) -> None:
        """Train and val onto the device once; batches are index slices from here on."""
        started = time.perf_counter()
        plan = self.plan
        self.train_split = load_device_split(plan.config, plan.experiment, plan.data_root, "train", self.device,
                                             limit=plan.limit_train, limit_seed=plan.seed,
                                             settings=plan.data_settings)
        self.val = load_device_split(plan.config, plan.experiment, plan.data_root, "val", self.device,
                                     limit=plan.limit_val, limit_seed=plan.seed, settings=plan.data_settings)
        info = self.train_split.info
        self.log.line(f"data: unpaired view {info.get('unpaired_method')}; cache {info.get('cache_dir')} "
                      f"({info.get('cache_dir_reason')}); bad-row limit {info.get('bad_row_limit')}")
        for s in (self.train_split, self.val):
            self.record_data(s)
            if s.positives in (0, len(s)):
                raise UsageError(f"the {s.name} split has {s.positives} positives of {len(s)} rows: "
                                 "training needs both classes")
            self.log.line(f"data {s.name}: {len(s)} rows ({s.positives} positives), "
                          f"{len(s.bad_rows)} bad rows skipped, {s.info.get('failed_rows', 0)} failed cut-outs "
                          "left out")
        self.log.line(f"data on {self.device.type} in {time.perf_counter() - started:.1f}s")
        if self.stop.requested:
            raise Aborted("before training started: nothing to save")

    def record_data(self, split: DeviceSplit) -> None:
        """Bad rows and the effective sample size into metrics.json (`bad_rows`, `effective_sample`),
        the manifest and counts into run.json (`data`)."""
        self.progress.metrics.setdefault("bad_rows", {})[split.name] = split.bad_rows_summary
        self.progress.metrics.setdefault("effective_sample", {})[split.name] = effective_sample(
            split.host_images, split.labels, split.groups)
        keep = ("count", "positive", "negative", "manifest", "manifest_sha256", "unpaired_method", "cache",
                "cache_dir", "cache_hit", "bad_rows", "failed_rows", "bad_row_limit")
        self.info.setdefault("data", {})[split.name] = {k: split.info.get(k) for k in keep}
        rundir.write_run_info(self.dir, self.info)

    def build(self, resume: dict[str, Any] | None) -> None:
        """Model, AdamW, cosine schedule over the planned epochs, grad scaler; restored on resume."""
        t = self.cfg.training
        torch.manual_seed(self.plan.seed)
        np.random.seed(self.plan.seed)
        random.seed(self.plan.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.layout = memory_format(self.device)
        self.model = build_model(t.stem, t.in_channels).to(self.device, memory_format=self.layout)
        # The compiled module shares the parameters: checkpoints and evaluation use self.model.
        self.forward = torch.compile(self.model) if self.plan.compile else self.model
        self.optimizer = build_optimizer(self.model, t.learning_rate, t.weight_decay, self.device,
                                         cuda_graph=self.plan.cuda_graph)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.plan.epochs)
        self.scaler = self.precision.grad_scaler(self.device)
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            load_optimizer_state(self.optimizer, resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            self.scaler.load_state_dict(resume["scaler"])
            set_rng_states(resume["rng"])
            self.repair_best(resume)
        self.step = self.make_step()

    def make_step(self) -> EagerStep | CudaGraphStep:
        """The eager step, or with --cuda-graph the full-batch step captured (after any resume)."""
        eager = EagerStep(self.forward, self.optimizer, self.scaler, self.precision, self.device)
        batch_size, train = self.cfg.training.batch_size, self.train_split
        if not self.plan.cuda_graph:
            return eager
        if len(train) < batch_size:
            self.log.line(f"--cuda-graph: the training split has {len(train)} rows, fewer than a batch of "
                          f"{batch_size}: every step runs eagerly")
            return eager
        started = time.perf_counter()
        x, _ = training_batch(train.images[:batch_size], seed=self.plan.seed, epoch=0, batch=0,
                              aug=self.cfg.augmentation, masking=self.plan.experiment.masking)
        y = torch.from_numpy(train.labels[:batch_size]).to(self.device).float()
        step = CudaGraphStep(self.model, self.optimizer, self.precision, x.contiguous(memory_format=self.layout),
                             y, eager)
        self.log.line(f"--cuda-graph: training step captured in {time.perf_counter() - started:.1f}s "
                      f"(batches of {batch_size} replay it; a smaller last batch runs eagerly)")
        return step

    def repair_best(self, resume: dict[str, Any]) -> None:
        """After a kill between last.pt and best.pt, best.pt may lag: last.pt then holds the best model."""
        if resume["batch"] != 0 or resume["best_epoch"] != resume["epoch"] - 1:
            return
        best = self.dir / rundir.BEST_CKPT
        try:
            current = load_checkpoint(best).get("epoch")
        except CheckpointError:
            current = None
        if current != resume["best_epoch"]:
            self.save_best(resume["best_epoch"], resume["best_val_auroc"])

    def train_epochs(self, p: Progress) -> None:
        plan, t, m = self.plan, self.cfg.training, self.cfg.metrics
        if not any(g.get("after_epochs") == 0 for g in p.metrics["gates"]):
            self.gate(p, after_epochs=0, scores=predict(self.model, self.val.images, precision=self.precision))
            self.write_metrics(p.metrics)
        train, n = self.train_split, len(self.train_split)
        labels = torch.from_numpy(train.labels).to(self.device).float()
        # A last batch of one sample would break BatchNorm: drop it (a different one each epoch).
        n_batches = n // t.batch_size + (1 if n % t.batch_size > 1 else 0)
        while p.epoch < plan.epochs:
            epoch = p.epoch
            radius, mask_p = plan.experiment.masking.at_epoch(epoch)
            lr = float(self.optimizer.param_groups[0]["lr"])
            started = time.perf_counter() - p.elapsed
            order = torch.randperm(n, generator=seeded_generator(self.device, plan.seed, epoch, "order"),
                                   device=self.device)
            loss_sum = torch.tensor(p.loss_sum, dtype=torch.float64, device=self.device)
            self.model.train()
            for b in range(p.batch, n_batches):
                idx = order[b * t.batch_size:(b + 1) * t.batch_size]
                x, _ = training_batch(train.images, index=idx, seed=plan.seed, epoch=epoch, batch=b,
                                      aug=self.cfg.augmentation, masking=plan.experiment.masking)
                loss = self.step(x.contiguous(memory_format=self.layout), labels[idx])
                loss_sum += loss.double() * len(idx)
                p.batch, p.seen = b + 1, p.seen + len(idx)
                if self.log.is_tty:
                    self.log.progress(f"epoch {epoch + 1}/{plan.epochs} batch {b + 1}/{n_batches} "
                                      f"loss {loss_sum.item() / p.seen:.4f}")
                if self.stop.requested and p.batch < n_batches:
                    p.loss_sum, p.elapsed = loss_sum.item(), time.perf_counter() - started
                    self.save_last(p)
                    raise Aborted(f"in epoch {epoch + 1} after batch {p.batch} of {n_batches}: last.pt saved there")
            self.scheduler.step()
            self.step.after_schedule()
            train_loss = loss_sum.item() / max(p.seen, 1)   # waits for the GPU: the training part ends here
            train_time = time.perf_counter() - started

            scores = predict(self.model, self.val.images, precision=self.precision)
            val_auroc, val_loss = auroc(self.val.labels, scores), bce(self.val.labels, scores)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_auroc": val_auroc, "val_loss": val_loss,
                   "learning_rate": lr, "epoch_time_sec": round(time.perf_counter() - started, 3),
                   "train_time_sec": round(train_time, 3)}
            if radius > 0:
                row.update(mask_radius=radius, mask_p=mask_p)
            p.metrics["history"].append(row)
            improved = val_auroc is not None and val_auroc > p.best_val_auroc
            if improved:  # best so far, live: the matrix's "Best" column reads it every refresh
                p.best_val_auroc, p.best_epoch = val_auroc, epoch
                p.metrics["best_val_auroc"], p.metrics["best_epoch"] = val_auroc, epoch + 1  # counted from 1
            p.epoch, p.batch, p.loss_sum, p.seen, p.elapsed = epoch + 1, 0, 0.0, 0, 0.0
            if (epoch + 1) % m.gate_every_epochs == 0:
                self.gate(p, after_epochs=epoch + 1, scores=scores)
            stale = epoch - p.best_epoch
            if p.epoch >= plan.epochs or stale >= t.early_stopping_patience:
                p.training_finished = True
            self.save_last(p)   # before best.pt: a kill in between is repaired on resume (repair_best)
            if improved:
                self.save_best(epoch, val_auroc)
            self.write_metrics(p.metrics)
            self.log.line(f"epoch {epoch + 1:>3}/{plan.epochs}  train_loss {train_loss:.4f}  "
                          f"val_loss {val_loss:.4f}  val_auroc {fixed(val_auroc, 4, NA)}  lr {lr:.3g}  "
                          f"{row['epoch_time_sec']:.1f}s" + (f"  mask R={radius} p={mask_p:g}" if radius else "")
                          + ("  *best*" if improved else ""))
            if stale >= t.early_stopping_patience:
                self.log.line(f"early stop: no better val_auroc for {stale} epochs "
                              f"(best {fixed(p.best_val_auroc, 4, NA)} at epoch {p.best_epoch + 1})")
            if p.training_finished:
                return
            if self.stop.requested:
                raise Aborted(f"after epoch {epoch + 1}: last.pt saved")

    def gate(self, p: Progress, *, after_epochs: int, scores: np.ndarray) -> None:
        """§5.2/§5.3: the shortcut gates on val and the per-θ_E-bin val AUROC of the current model."""
        m = self.cfg.metrics
        # The mask the model has trained under so far (for after_epochs 0: the one it is about to).
        radius, _ = self.plan.experiment.masking.at_epoch(max(after_epochs - 1, 0))
        record = {"after_epochs": after_epochs}
        record.update(gate_record(self.val, m, n_samples=m.gate_n_samples, mask_radius=radius))
        record["val_auroc_by_thetae"] = auroc_by_thetae(self.val.labels, scores, self.val.theta_e,
                                                        m.thetae_bin_pairs, m.thetae_min_positives)
        p.metrics["gates"].append(record)
        masked = (f"  at R={radius}: core {fixed(record.get('masked_core_lr_auc'), 4, NA)} "
                  f"radial {fixed(record.get('masked_radial_lr_auc'), 4, NA)}" if radius else "")
        masked += f"  (ungrouped, the published method: core {fixed(record.get('core_lr_auc_ungrouped'), 4, NA)})"
        bins = " ".join(f"{b['bin'][0]:g}-{b['bin'][1]:g}:{fixed(b['auroc'], 3, NA)}({b['count']})"
                        for b in record["val_auroc_by_thetae"])
        self.log.line(f"gate after {after_epochs} epoch{'' if after_epochs == 1 else 's'}: "
                      f"core_lr_auc {fixed(record['core_lr_auc'], 4, NA)}  radial_lr_auc {fixed(record['radial_lr_auc'], 4, NA)}  "
                      f"n={record['gate_n_samples']}{masked}  θ_E bins {bins}"
                      + (f"  ({record['note']})" if record.get("note") else ""))

    def finish(self, p: Progress) -> None:
        """End of training with best.pt: §5.3-§5.5 on val (what the verdicts read), then the test set
        once (§5.6: held out, reported, never used for selection)."""
        m, metrics, experiment = self.cfg.metrics, p.metrics, self.plan.experiment
        if self.stop.requested:
            raise Aborted("after training, before the final evaluation: it runs again on resume")
        self.train_split = None  # free the device: from here on only val and test are read
        best = load_checkpoint(self.dir / rundir.BEST_CKPT, self.device)
        self.model.load_state_dict(best["model"])
        history = [r for r in metrics["history"] if r.get("val_auroc") is not None]
        top = max(history, key=lambda r: r["val_auroc"])  # max keeps the first of equal values
        metrics["best_val_auroc"], metrics["best_epoch"] = top["val_auroc"], top["epoch"]

        raw_val, raw_note = self.raw_robust_val()
        metrics.update(final_val_metrics(self.model, self.val, experiment, m, best_epoch=top["epoch"],
                                         precision=self.precision, raw_val=raw_val, raw_note=raw_note))
        self.write_metrics(metrics)
        radius = metrics.get("final_mask_radius")
        masked = (f" masked at R={radius} (best.pt's epoch): core {fixed(metrics['final_masked_core_lr_auc'], 4, NA)} "
                  f"radial {fixed(metrics['final_masked_radial_lr_auc'], 4, NA)};" if radius else "")
        self.log.line(f"best epoch {top['epoch']}: val_auroc {fixed(top['val_auroc'], 4, NA)}; "
                      f"final gates on {metrics['final_gate_n_samples']} val rows: core_lr_auc "
                      f"{fixed(metrics['final_core_lr_auc'], 4, NA)} radial_lr_auc {fixed(metrics['final_radial_lr_auc'], 4, NA)} "
                      f"(ungrouped, the published method: {fixed(metrics['final_core_lr_auc_ungrouped'], 4, NA)} / "
                      f"{fixed(metrics['final_radial_lr_auc_ungrouped'], 4, NA)});{masked} raw_robust inputs: core "
                      f"{fixed(metrics['final_raw_robust_core_lr_auc'], 4, NA)} radial "
                      f"{fixed(metrics['final_raw_robust_radial_lr_auc'], 4, NA)}; core_reliance "
                      f"{fixed(metrics['core_reliance'], 4, NA)}  sensitivity "
                      + " ".join(f"R={c['radius']}:{fixed(c['auroc'], 4, NA)}" for c in metrics["core_sensitivity"]))
        if self.stop.requested:
            raise Aborted("after the val evaluation, before the test set: the end runs again on resume")

        # The test set, once, with best.pt (the public work used the last epoch's weights by mistake).
        test = load_device_split(self.cfg, self.plan.experiment, self.plan.data_root, "test", self.device,
                                 limit=self.plan.limit_val, limit_seed=self.plan.seed,
                                 settings=self.plan.data_settings)
        self.record_data(test)
        apply_evaluation(metrics, "test", evaluate_split(self.model, test, m, precision=self.precision))
        p.status = advance(p.status, RunState.DONE)
        self.save_last(p)  # a later start sees "done" and asks for --fresh instead of retraining
        self.log.line(f"test (held out, {len(test)} rows, best.pt of epoch {top['epoch']}): test_auroc "
                      f"{fixed(metrics['test_auroc'], 4, NA)}  sensitivity "
                      + " ".join(f"R={c['radius']}:{fixed(c['auroc'], 4, NA)}" for c in metrics["test_core_sensitivity"]))


    def raw_robust_val(self) -> tuple[DeviceSplit | None, str | None]:
        """The val rows with raw_robust preprocessing (host only), for the data-level gate context.

        (None, why) when the run's own inputs are raw_robust, or the rows cannot be read: the
        context is then missing and says why; the run goes on.
        """
        plan = self.plan
        if plan.experiment.preprocessing == "raw_robust":
            return None, "the run's own inputs are raw_robust: its gates are the raw_robust values"
        try:
            return load_device_split(plan.config, plan.experiment, plan.data_root, "val", None,
                                     limit=plan.limit_val, limit_seed=plan.seed, settings=plan.data_settings,
                                     preprocessing="raw_robust"), None
        except DATA_ERRORS as exc:
            self.log.line(f"raw_robust gate context not computed: {exc}")
            return None, f"raw_robust val rows could not be read: {exc}"



# ---------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None, *, stop: StopRequest | None = None) -> int:
    """`python -m engine.train ...`; returns the exit code (see the module docstring).

    `stop`: a StopRequest to use instead of installing SIGTERM/SIGINT handlers (for callers
    that embed the trainer and own the process's signals).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = make_plan(argv)
    except (ConfigError, UsageError) as exc:
        print(f"engine.train: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    if stop is None:
        stop = StopRequest()
        stop.install()
    try:
        lock, moved_to = take_run_directory(plan)
    except rundir.AlreadyRunning:
        print(f"engine.train: {plan.experiment.id} is already running in {plan.run_dir} "
              "(another process holds its lock); abort it first or wait", file=sys.stderr)
        return exitcodes.REFUSED
    except OSError as exc:
        print(f"engine.train: cannot use the run directory {plan.run_dir}: {exc.strerror or exc}; "
              "check the runs root (--runs-root, or the host's runs_root)", file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        try:
            resume = resume_point(plan)
            log = RunLog(plan.run_dir / rundir.LOG_FILE)
        except UsageError as exc:
            print(f"engine.train: {exc}", file=sys.stderr)
            return exitcodes.BAD_INPUT
        except OSError as exc:
            print(f"engine.train: cannot use the run directory {plan.run_dir}: {exc.strerror or exc}",
                  file=sys.stderr)
            return exitcodes.BAD_INPUT
        try:
            if moved_to is not None:
                log.line(f"--fresh: the previous run directory was moved to {moved_to}")
            stale = remove_stale_temp_files(plan.run_dir, (rundir.LAST_CKPT, rundir.BEST_CKPT,
                                                           rundir.METRICS_FILE, rundir.RUN_FILE))
            if stale:
                log.line(f"removed {len(stale)} partial file(s) left by a process killed while writing: "
                         + ", ".join(stale))
            return Trainer(plan, log, stop).run(resume)
        finally:
            log.close()
    finally:
        os.close(lock)


if __name__ == "__main__":
    raise SystemExit(main())
