"""engine.train's command line, without torch: the parser itself, and what a relaunch must repeat.

`python -m engine.train` parses its options here, and lenstui reads a run's recorded command
with the same parser, so the launch dialog can pre-fill a relaunch with the arguments the run
was started with and say, before anything starts, when new ones would make the engine refuse
to resume it ("started with other settings"). Torch-free and NumPy-free.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

# Options the launcher adds itself (the dialog has fields for --base); never "extra" arguments.
FLEET_OPTIONS = ("--experiment", "--host", "--config", "--base")
# Options whose values a resume must repeat (engine.train's RunPlan.settings compares them).
RESUME_OPTIONS = ("epochs", "seed", "limit_train", "limit_val", "data_root")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.train", description="Train one experiment of the plan.")
    p.add_argument("--experiment", required=True, help="experiment id in the config, e.g. A1, B3, FULL")
    p.add_argument("--config", type=Path, default=Path("experiments.toml"))
    where = p.add_mutually_exclusive_group()
    where.add_argument("--host", default=None, help="the host whose dataset and runs_root to use (default: local)")
    where.add_argument("--data-root", type=Path, default=None, help="a shard root to read instead of the host's dataset")
    p.add_argument("--runs-root", type=Path, default=None, help="default: the host's runs_root")
    p.add_argument("--epochs", type=int, default=None, help="override the plan's epochs (recorded)")
    p.add_argument("--fresh", action="store_true", help="move an existing run directory aside and start over")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--seed", type=int, default=None, help="override the plan's seed (recorded)")
    p.add_argument("--base", default=None, help="for a Phase-4 run: the experiment whose config it takes")
    p.add_argument("--limit-train", type=int, default=None, help="use N training rows (smoke runs; recorded)")
    p.add_argument("--limit-val", type=int, default=None, help="use N val rows, and N test rows (recorded)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture the training step once as a CUDA graph and replay it (GPU only; "
                        "5x faster steps at batch 128 on an H100: docs/PERFORMANCE.md)")
    p.add_argument("--provenance", default=None, metavar="JSON",
                   help="who asked for this run, as a JSON object written to run.json's `provenance` (lenstui's "
                        "plan writes its step, the host and GPU it chose and the decision that led to it)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's model (a speed option, not recorded as an override; "
                        "its first steps compile for up to a minute: docs/PERFORMANCE.md)")
    return p


class _Quiet(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # type: ignore[override]
        raise ValueError(message)


def _quiet_parser() -> argparse.ArgumentParser:
    quiet = _Quiet(add_help=False)
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            kwargs: dict[str, Any] = {"dest": action.dest, "default": action.default}
            if isinstance(action, argparse._StoreTrueAction):
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = action.type
            quiet.add_argument(*action.option_strings, **kwargs)
    return quiet


def extra_args(command: Sequence[str] | None) -> list[str]:
    """The arguments a run was started with beyond what the launcher adds (experiment, host,
    config, base): `python -m engine.train --experiment B2 --host h --config c --epochs 30` ->
    ['--epochs', '30']. [] when the command is not an engine.train command line."""
    if not command:
        return []
    args = [str(a) for a in command]
    if "engine.train" in args:
        args = args[args.index("engine.train") + 1:]
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in FLEET_OPTIONS:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def resume_settings(args: Sequence[str]) -> dict[str, Any]:
    """What a resume compares, from extra arguments: {'epochs': 30, ...} (unset ones left out);
    ValueError for arguments engine.train would refuse."""
    parsed = _quiet_parser().parse_args(list(args))
    out = {k: getattr(parsed, k) for k in RESUME_OPTIONS if getattr(parsed, k) is not None}
    if "data_root" in out:
        out["data_root"] = str(out["data_root"])
    return out


def seed_in(args: Sequence[str]) -> int | None:
    """The `--seed N` among extra arguments (the last one, as argparse takes it), else None; other
    arguments are not judged here (engine.train judges them). ValueError for a seed that is not a
    non-negative integer."""
    seed = None
    for i, a in enumerate(args):
        value = None
        if a == "--seed" and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith("--seed="):
            value = a.split("=", 1)[1]
        if value is not None:
            if not value.isdigit():
                raise ValueError(f"--seed {value!r}: expected a non-negative integer")
            seed = int(value)
    return seed


def is_fresh(args: Sequence[str]) -> bool:
    """Whether the arguments ask for a fresh start (the old run moved aside, nothing resumed)."""
    return "--fresh" in args


def settings_difference(recorded: Sequence[str], new: Sequence[str]) -> list[str]:
    """'epochs: was 30, now 50' for each resume setting that differs between two argument lists."""
    before, after = resume_settings(recorded), resume_settings(new)
    plan = "the plan's value"
    return [f"--{k.replace('_', '-')}: was {before.get(k, plan)}, now {after.get(k, plan)}"
            for k in RESUME_OPTIONS if before.get(k) != after.get(k)]
