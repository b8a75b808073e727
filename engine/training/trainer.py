"""One start of one training run, top to bottom: `Trainer(plan, log, stop, resume).run()`.

    start         run.json and the log header: what runs, where, with which code and settings
    load_data     train and val onto the device, once; batches are index slices from then on
    build         model, AdamW, cosine schedule, grad scaler and the step (restored on resume)
    train_epochs  per epoch: train_one_epoch (augment, step) then end_epoch (validate, gate,
                  checkpoint, early stop on patience)
    finish        best.pt on val (final gates, θ_E table, sensitivity curve), then the test set once
    end           the final status in metrics.json and run.json, and its line in the log

What one part makes and a later one uses is returned (`Data`, `Parts`) or is the run's record
(`progress`: metrics.json and where training stands; `info`: run.json), set in the constructor;
nothing is created on the side. A stop request (SIGTERM, SIGINT) is looked at after every
batch: last.pt is saved where training stands and the run says `aborted`. docs/TRAINING.md
explains the choices.

About 470 lines: the six parts above and the checkpoint and gate helpers they share, each a screen
or less, read top to bottom in the order a run goes through them.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.data.manifest import ManifestError
from engine.data.shards import BadRowsError, BlobError, ShardError
from engine.files import CacheError, timestamp
from engine.numbers import fixed
from engine.protocol import exitcodes, rundir
from engine.protocol.codeversion import code_version
from engine.protocol.rundir import RunState, advance
from engine.protocol.runlog import RunLog
from engine.training.augment import seeded_generator, training_batch
from engine.training.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, Progress, load_checkpoint,
                                        load_optimizer_state, rng_states, save_checkpoint, set_rng_states)
from engine.training.device import describe, memory_format, pick_precision
from engine.training.evaluate import (apply_evaluation, auroc, auroc_by_thetae, bce, evaluate_split, final_val_metrics,
                                      gate_record, predict, shown, with_verdicts)
from engine.training.model import build_model, build_optimizer
from engine.training.run_plan import RunPlan, UsageError, run_info
from engine.training.splits import DeviceSplit, effective_sample, load_device_split
from engine.training.step import CudaGraphStep, EagerStep
from engine.training.stop import Aborted, StopRequest

NA = "n/a"   # what a log line shows where a metric has no value
# Errors of the data layer, whose messages name the shard, the row and what is wrong.
DATA_ERRORS = (ShardError, BlobError, BadRowsError, ManifestError, CacheError)


@dataclass
class Data:
    """The splits on the device: train until the end of training frees it, val throughout."""

    train: DeviceSplit | None
    val: DeviceSplit


@dataclass
class Parts:
    """The model and everything that updates it."""

    model: nn.Module          # checkpoints and evaluation use it
    forward: nn.Module        # the model, or torch.compile of it (sharing its parameters)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    layout: torch.memory_format
    step: EagerStep | CudaGraphStep


class Trainer:
    """One start of one run: the plan, the log, the stop request, and the run's record."""

    def __init__(self, plan: RunPlan, log: RunLog, stop: StopRequest, resume: dict[str, Any] | None) -> None:
        self.plan, self.log, self.stop, self.resume = plan, log, stop, resume
        self.cfg = plan.config
        self.device = plan.device
        self.precision = pick_precision(self.device, self.cfg.training.mixed_precision)
        self.dir = plan.run_dir
        self.progress = self._progress(resume)
        self.code = code_version()
        self.info = run_info(plan, status=self.progress.status, started_at=timestamp(),
                             device_name=describe(self.device), precision=self.precision.name,
                             resumed_from=self.progress.epoch if resume else None, code=self.code)

    def _progress(self, resume: dict[str, Any] | None) -> Progress:
        """Where training stands: at the start, or where last.pt stood (its metrics with this start's settings)."""
        e = self.plan.experiment
        # What the run's inputs are: a verdict reads it (a radial gate on residual inputs cannot fail).
        inputs = {"data_mode": e.data_mode, "preprocessing": e.preprocessing, "sample": e.sample,
                  "masking": e.masking.describe()}
        # Which run of the experiment this is: its directory's name and its seed (replicates differ by it).
        replicate = {"run_name": self.plan.run_dir.name, "seed": self.plan.seed}
        if resume is None:
            metrics = rundir.new_metrics(e.id, self.plan.epochs, self.plan.overrides)
            metrics.update(inputs=inputs, **replicate)
            return Progress(metrics=metrics)
        metrics = rundir.upgrade_metrics(json.loads(resume["metrics_json"]))   # a run begun by an older engine
        metrics["status"] = RunState.RUNNING   # a new start: its state begins again
        metrics["overrides"] = dict(self.plan.overrides)
        metrics.update(inputs=inputs, **replicate)
        return Progress.resumed(resume, metrics)

    # -- the run -----------------------------------------------------------------

    def run(self) -> int:
        """Train and evaluate; returns the exit code (engine/protocol/exitcodes.py, or 128 + signal)."""
        p = self.progress
        self.start()
        exit_code = exitcodes.FAILED
        try:
            self.write_metrics()
            data = self.load_data()
            parts = self.build(data)
            if not p.training_finished:
                self.train_epochs(parts, data)
            self.finish(parts, data)
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
            self.end(exit_code)
        return exit_code

    def start(self) -> None:
        """run.json, and the log's header for this start."""
        plan, t, p = self.plan, self.cfg.training, self.progress
        rundir.write_run_info(self.dir, self.info)
        title = (f"resumed from epoch {p.epoch}" + (f" batch {p.batch}" if p.batch else "")) if self.resume else "start"
        e = plan.experiment
        self.log.header(f"{e.id} {title}", {
            "command": shlex.join(plan.command), "host": f"{plan.host} ({socket.gethostname()})",
            "pid": os.getpid(), "code": self.code, "config": f"{plan.config.source} (sha256 {plan.config.sha256[:12]})",
            "data": f"{plan.dataset or '--data-root'} {plan.data_root}",
            "experiment": f"{e.data_mode} / {e.preprocessing} / {e.sample} / mask {e.masking.describe()}"
                          + (f" (base {e.base})" if e.base else ""),
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

    def end(self, exit_code: int) -> None:
        """The final status into metrics.json and run.json, and the log's last line for this start."""
        p = self.progress
        p.metrics["status"] = p.status
        self.write_metrics()
        self.write_info(status=p.status, ended_at=timestamp(), exit_status=exit_code)
        self.log.line(f"{self.plan.experiment.id}: {p.status} (exit {exit_code})")

    # -- data -------------------------------------------------------------------

    def load_data(self) -> Data:
        """Train and val onto the device once; batches are index slices from here on."""
        started = time.perf_counter()
        data = Data(self.load_split("train", self.plan.limit_train), self.load_split("val", self.plan.limit_val))
        info = data.train.info
        self.log.line(f"data: unpaired view {info.get('unpaired_method')}; cache {info.get('cache_dir')} "
                      f"({info.get('cache_dir_reason')}); bad-row limit {info.get('bad_row_limit')}")
        for s in (data.train, data.val):
            if s.positives in (0, len(s)):
                raise UsageError(f"the {s.name} split has {s.positives} positives of {len(s)} rows: "
                                 "training needs both classes")
            self.log.line(f"data {s.name}: {len(s)} rows ({s.positives} positives), "
                          f"{len(s.bad_rows)} bad rows skipped, {s.info.get('failed_rows', 0)} failed cut-outs "
                          "left out")
        self.log.line(f"data on {self.device.type} in {time.perf_counter() - started:.1f}s")
        if self.stop.requested:
            raise Aborted("before training started: nothing to save")
        return data

    def load_split(self, split: str, limit: int | None) -> DeviceSplit:
        """One split on the device, recorded: its bad rows and effective size in metrics.json, its
        manifest and counts in run.json (`data`)."""
        plan = self.plan
        s = load_device_split(plan.config, plan.experiment, plan.data_root, split, self.device, limit=limit,
                              limit_seed=plan.seed, settings=plan.data_settings)
        self.progress.metrics.setdefault("bad_rows", {})[s.name] = s.bad_rows_summary
        self.progress.metrics.setdefault("effective_sample", {})[s.name] = effective_sample(
            s.host_images, s.labels, s.groups)
        keep = ("count", "positive", "negative", "manifest", "manifest_sha256", "unpaired_method", "cache",
                "cache_dir", "cache_hit", "bad_rows", "failed_rows", "bad_row_limit")
        self.info.setdefault("data", {})[s.name] = {k: s.info.get(k) for k in keep}
        rundir.write_run_info(self.dir, self.info)
        return s

    # -- the model and what updates it ---------------------------------------------

    def build(self, data: Data) -> Parts:
        """Model, AdamW, cosine schedule over the planned epochs, grad scaler; restored on resume; the step."""
        t, plan, resume = self.cfg.training, self.plan, self.resume
        torch.manual_seed(plan.seed)
        np.random.seed(plan.seed)
        random.seed(plan.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        layout = memory_format(self.device)
        model = build_model(t.stem, t.in_channels).to(self.device, memory_format=layout)
        forward = torch.compile(model) if plan.compile else model   # shares the parameters
        optimizer = build_optimizer(model, t.learning_rate, t.weight_decay, self.device, cuda_graph=plan.cuda_graph)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=plan.epochs)
        scaler = self.precision.grad_scaler(self.device)
        if resume is not None:
            model.load_state_dict(resume["model"])
            load_optimizer_state(optimizer, resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            scaler.load_state_dict(resume["scaler"])
            set_rng_states(resume["rng"])
        eager = EagerStep(forward, optimizer, scaler, self.precision, self.device)
        parts = Parts(model, forward, optimizer, scheduler, scaler, layout, eager)
        if resume is not None:
            self.repair_best(parts, resume)
        if plan.cuda_graph:   # captured after any resume, from the state it resumed to
            parts.step = self.graph_step(parts, eager, data.train)
        return parts

    def graph_step(self, parts: Parts, eager: EagerStep, train: DeviceSplit) -> EagerStep | CudaGraphStep:
        """--cuda-graph: the full-batch step captured once and replayed (a smaller last batch runs eagerly)."""
        batch_size = self.cfg.training.batch_size
        if len(train) < batch_size:
            self.log.line(f"--cuda-graph: the training split has {len(train)} rows, fewer than a batch of "
                          f"{batch_size}: every step runs eagerly")
            return eager
        started = time.perf_counter()
        x, _ = training_batch(train.images[:batch_size], seed=self.plan.seed, epoch=0, batch=0,
                              aug=self.cfg.augmentation, masking=self.plan.experiment.masking)
        y = torch.from_numpy(train.labels[:batch_size]).to(self.device).float()
        step = CudaGraphStep(parts.model, parts.optimizer, self.precision, x.contiguous(memory_format=parts.layout),
                             y, eager)
        self.log.line(f"--cuda-graph: training step captured in {time.perf_counter() - started:.1f}s "
                      f"(batches of {batch_size} replay it; a smaller last batch runs eagerly)")
        return step

    def repair_best(self, parts: Parts, resume: dict[str, Any]) -> None:
        """After a kill between last.pt and best.pt, best.pt may lag: last.pt then holds the best model."""
        if resume["batch"] != 0 or resume["best_epoch"] != resume["epoch"] - 1:
            return
        try:
            current = load_checkpoint(self.dir / rundir.BEST_CKPT).get("epoch")
        except CheckpointError:
            current = None
        if current != resume["best_epoch"]:
            self.save_best(parts, resume["best_epoch"], resume["best_val_auroc"])

    # -- training ------------------------------------------------------------------

    def train_epochs(self, parts: Parts, data: Data) -> None:
        """Epochs until the plan's number or early stopping: each ends validated, gated, checkpointed."""
        p, plan = self.progress, self.plan
        if not any(g.get("after_epochs") == 0 for g in p.metrics["gates"]):
            self.gate(data.val, after_epochs=0, scores=predict(parts.model, data.val.images, precision=self.precision))
            self.write_metrics()
        labels = torch.from_numpy(data.train.labels).to(self.device).float()
        while p.epoch < plan.epochs:
            epoch, lr = p.epoch, float(parts.optimizer.param_groups[0]["lr"])
            started = time.perf_counter() - p.elapsed
            train_loss = self.train_one_epoch(parts, data.train, labels, epoch, started)
            train_time = time.perf_counter() - started
            self.end_epoch(parts, data, epoch, lr=lr, train_loss=train_loss, started=started,
                           train_time=train_time)
            if p.training_finished:
                return
            if self.stop.requested:
                raise Aborted(f"after epoch {epoch + 1}: last.pt saved")

    def train_one_epoch(self, parts: Parts, train: DeviceSplit, labels: torch.Tensor, epoch: int,
                        started: float) -> float:
        """The batches of one epoch (from where a resumed start stands); returns the mean train loss.

        A stop asked for between batches saves last.pt at that batch and raises Aborted.
        """
        p, plan, t = self.progress, self.plan, self.cfg.training
        n = len(train)
        # A last batch of one sample would break BatchNorm: drop it (a different one each epoch).
        n_batches = n // t.batch_size + (1 if n % t.batch_size > 1 else 0)
        order = torch.randperm(n, generator=seeded_generator(self.device, plan.seed, epoch, "order"),
                               device=self.device)
        loss_sum = torch.tensor(p.loss_sum, dtype=torch.float64, device=self.device)
        parts.model.train()
        for b in range(p.batch, n_batches):
            idx = order[b * t.batch_size:(b + 1) * t.batch_size]
            x, _ = training_batch(train.images, index=idx, seed=plan.seed, epoch=epoch, batch=b,
                                  aug=self.cfg.augmentation, masking=plan.experiment.masking)
            loss = parts.step(x.contiguous(memory_format=parts.layout), labels[idx])
            loss_sum += loss.double() * len(idx)
            p.batch, p.seen = b + 1, p.seen + len(idx)
            if self.log.is_tty:
                self.log.progress(f"epoch {epoch + 1}/{plan.epochs} batch {b + 1}/{n_batches} "
                                  f"loss {loss_sum.item() / p.seen:.4f}")
            if self.stop.requested and p.batch < n_batches:
                p.loss_sum, p.elapsed = loss_sum.item(), time.perf_counter() - started
                self.save_last(parts)
                raise Aborted(f"in epoch {epoch + 1} after batch {p.batch} of {n_batches}: last.pt saved there")
        parts.scheduler.step()
        parts.step.after_schedule()
        return loss_sum.item() / max(p.seen, 1)   # waits for the GPU: the training part ends here

    def end_epoch(self, parts: Parts, data: Data, epoch: int, *, lr: float, train_loss: float, started: float,
                  train_time: float) -> None:
        """Validate, record the §5.1 row, gate when due, decide early stopping, checkpoint, log."""
        p, plan, t, m = self.progress, self.plan, self.cfg.training, self.cfg.metrics
        radius, mask_p = plan.experiment.masking.at_epoch(epoch)
        scores = predict(parts.model, data.val.images, precision=self.precision)
        val_auroc, val_loss = auroc(data.val.labels, scores), bce(data.val.labels, scores)
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
            self.gate(data.val, after_epochs=epoch + 1, scores=scores)
        stale = epoch - p.best_epoch
        if p.epoch >= plan.epochs or stale >= t.early_stopping_patience:
            p.training_finished = True
        self.save_last(parts)   # before best.pt: a kill in between is repaired on resume (repair_best)
        if improved:
            self.save_best(parts, epoch, val_auroc)
        self.write_metrics()
        self.log.line(f"epoch {epoch + 1:>3}/{plan.epochs}  train_loss {train_loss:.4f}  "
                      f"val_loss {val_loss:.4f}  val_auroc {fixed(val_auroc, 4, NA)}  lr {lr:.3g}  "
                      f"{row['epoch_time_sec']:.1f}s" + (f"  mask R={radius} p={mask_p:g}" if radius else "")
                      + ("  *best*" if improved else ""))
        if stale >= t.early_stopping_patience:
            self.log.line(f"early stop: no better val_auroc for {stale} epochs "
                          f"(best {fixed(p.best_val_auroc, 4, NA)} at epoch {p.best_epoch + 1})")

    def gate(self, val: DeviceSplit, *, after_epochs: int, scores: np.ndarray) -> None:
        """§5.2/§5.3: the shortcut gates on val and the per-θ_E-bin val AUROC of the current model."""
        m = self.cfg.metrics
        # The mask the model has trained under so far (for after_epochs 0: the one it is about to).
        radius, _ = self.plan.experiment.masking.at_epoch(max(after_epochs - 1, 0))
        record = {"after_epochs": after_epochs}
        record.update(gate_record(val, m, n_samples=m.gate_n_samples, mask_radius=radius))
        record["val_auroc_by_thetae"] = auroc_by_thetae(val.labels, scores, val.theta_e, m.thetae_bin_pairs,
                                                        m.thetae_min_positives)
        self.progress.metrics["gates"].append(record)
        masked = (f"  at R={radius}: core {fixed(record.get('masked_core_lr_auc'), 4, NA)} "
                  f"radial {fixed(record.get('masked_radial_lr_auc'), 4, NA)}" if radius else "")
        masked += f"  (ungrouped, the published method: core {fixed(record.get('core_lr_auc_ungrouped'), 4, NA)})"
        bins = " ".join(f"{b['bin'][0]:g}-{b['bin'][1]:g}:{fixed(b['auroc'], 3, NA)}({b['count']})"
                        for b in record["val_auroc_by_thetae"])
        self.log.line(f"gate after {after_epochs} epoch{'' if after_epochs == 1 else 's'}: "
                      f"core_lr_auc {fixed(record['core_lr_auc'], 4, NA)}  "
                      f"radial_lr_auc {fixed(record['radial_lr_auc'], 4, NA)}  "
                      f"n={record['gate_n_samples']}{masked}  θ_E bins {bins}"
                      + (f"  ({record['note']})" if record.get("note") else ""))

    # -- the end of training ---------------------------------------------------------

    def finish(self, parts: Parts, data: Data) -> None:
        """End of training with best.pt: §5.3-§5.5 on val (what the verdicts read), then the test set
        once (§5.6: held out, reported, never used for selection)."""
        p, m, plan = self.progress, self.cfg.metrics, self.plan
        metrics = p.metrics
        if self.stop.requested:
            raise Aborted("after training, before the final evaluation: it runs again on resume")
        data.train = None  # free the device: from here on only val and test are read
        best = load_checkpoint(self.dir / rundir.BEST_CKPT, self.device)
        parts.model.load_state_dict(best["model"])
        history = [r for r in metrics["history"] if r.get("val_auroc") is not None]
        top = max(history, key=lambda r: r["val_auroc"])  # max keeps the first of equal values
        metrics["best_val_auroc"], metrics["best_epoch"] = top["val_auroc"], top["epoch"]

        raw_val, raw_note = self.raw_robust_val()
        metrics.update(final_val_metrics(parts.model, data.val, plan.experiment, m, best_epoch=top["epoch"],
                                         precision=self.precision, raw_val=raw_val, raw_note=raw_note))
        self.write_metrics()
        radius = metrics.get("final_mask_radius")
        masked = (f" masked at R={radius} (best.pt's epoch): core "
                  f"{shown(metrics, 'final_masked_core_lr_auc')} "
                  f"radial {fixed(metrics['final_masked_radial_lr_auc'], 4, NA)};" if radius else "")
        self.log.line(f"best epoch {top['epoch']}: val_auroc {fixed(top['val_auroc'], 4, NA)}; "
                      f"final gates on {metrics['final_gate_n_samples']} val rows: core_lr_auc "
                      f"{shown(metrics, 'final_core_lr_auc')} "
                      f"radial_lr_auc {shown(metrics, 'final_radial_lr_auc')} "
                      f"(ungrouped, the published method: {fixed(metrics['final_core_lr_auc_ungrouped'], 4, NA)} / "
                      f"{fixed(metrics['final_radial_lr_auc_ungrouped'], 4, NA)});{masked} raw_robust inputs: core "
                      f"{fixed(metrics['final_raw_robust_core_lr_auc'], 4, NA)} radial "
                      f"{fixed(metrics['final_raw_robust_radial_lr_auc'], 4, NA)}; core_reliance "
                      f"{shown(metrics, 'core_reliance')}  sensitivity "
                      + " ".join(f"R={c['radius']}:{fixed(c['auroc'], 4, NA)}" for c in metrics["core_sensitivity"]))
        if self.stop.requested:
            raise Aborted("after the val evaluation, before the test set: the end runs again on resume")

        # The test set, once, with best.pt (the public work used the last epoch's weights by mistake).
        test = self.load_split("test", plan.limit_val)
        apply_evaluation(metrics, "test", evaluate_split(parts.model, test, m, precision=self.precision))
        p.status = advance(p.status, RunState.DONE)
        self.save_last(parts)  # a later start sees "done" and asks for --fresh instead of retraining
        self.log.line(f"test (held out, {len(test)} rows, best.pt of epoch {top['epoch']}): test_auroc "
                      f"{shown(metrics, 'test_auroc')}  sensitivity "
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

    # -- the run's record ----------------------------------------------------------

    def write_metrics(self) -> None:
        """metrics.json now, with its §6 verdicts recomputed."""
        rundir.write_metrics(self.dir, with_verdicts(self.progress.metrics, self.cfg))

    def write_info(self, **changes: Any) -> None:
        self.info.update(changes)   # type: ignore[typeddict-item]
        rundir.write_run_info(self.dir, self.info)

    def checkpoint(self, parts: Parts, **content: Any) -> dict[str, Any]:
        """A checkpoint of this run's model, with `content` (last.pt's state, or best.pt's epoch)."""
        return {"format": CHECKPOINT_FORMAT, "experiment": self.plan.experiment.id,
                "stem": self.cfg.training.stem, "in_channels": self.cfg.training.in_channels,
                "model": parts.model.state_dict(), **content}

    def save_last(self, parts: Parts) -> None:
        """last.pt: everything a later start needs to continue exactly where training stands."""
        save_checkpoint(self.dir / rundir.LAST_CKPT, self.checkpoint(
            parts, settings=self.plan.settings(), optimizer=parts.optimizer.state_dict(),
            scheduler=parts.scheduler.state_dict(), scaler=parts.scaler.state_dict(), rng=rng_states(),
            **self.progress.state()))

    def save_best(self, parts: Parts, epoch: int, val_auroc: float) -> None:
        """best.pt: the model of the best val AUROC so far, and its epoch (the loop's counter)."""
        save_checkpoint(self.dir / rundir.BEST_CKPT, self.checkpoint(parts, epoch=epoch, val_auroc=val_auroc))
