"""Train one experiment of the plan, headless: `python -m engine.train --experiment B1`.

The command: options and config into a RunPlan (run_plan.py), the run directory taken (its
lock, --fresh moving the old one aside, last.pt checked for a resume), then one start of the
run (trainer.py: data, model, epochs, the end of training with best.pt). docs/TRAINING.md
explains the choices.

Exit codes (engine/protocol/exitcodes.py): 0 done; 1 failed (traceback in stdout.log); 2 bad input
(nothing started); 3 another process is running this experiment; 128+signal (143 for SIGTERM, 130 for
SIGINT) aborted on request, after saving last.pt and writing `status: aborted`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from engine import files
from engine.config import ConfigError
from engine.protocol import exitcodes, rundir
from engine.protocol.rundir import RunState
from engine.protocol.runlog import RunLog
from engine.training.checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files
from engine.training.run_plan import RunPlan, UsageError, make_plan
from engine.training.stop import StopRequest
from engine.training.trainer import Trainer

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
            return Trainer(plan, log, stop, resume).run()
        finally:
            log.close()
    finally:
        os.close(lock)


if __name__ == "__main__":
    raise SystemExit(main())
