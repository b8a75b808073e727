"""The command line: `lenstui` opens the control center; its subcommands do the same things headless.

Exit codes: 0 ok, 2 bad input or config, 3 refused (e.g. already running),
4 host unreachable. Textual is imported only to open the app.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.config import ConfigError, Host, load_config
from engine.numbers import fixed
from engine.results.reading import epochs_text
from lenstui.runs import representatives
from engine.protocol import exitcodes, rundir
from engine.results.report import DEFAULT_OUT
from lenstui.fleet import (POLL_TIMEOUT, Fleet, FleetError,
                           HostSnapshot)
from lenstui.transport import KNOWN_HOSTS_ENV, SSH_CONFIG_ENV, SshOptions
from lenstui.transport.base import TransportError

STATUS_DEADLINE = POLL_TIMEOUT + 15.0   # connect + probe; a host slower than this is reported unreachable
FOLLOW_INTERVAL = 1.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lenstui", description="Control center for the lens-detection "
                                     "experiment plan. With no command, opens the terminal app.")
    parser.add_argument("--config", type=Path, default=Path("experiments.toml"),
                        help="the plan file (default: experiments.toml)")
    parser.add_argument("--host", dest="app_host", metavar="NAME", help="open the app with NAME preselected")
    parser.add_argument("--ssh-config", type=Path, help=f"SSH client config (default ~/.ssh/config; ${SSH_CONFIG_ENV})")
    parser.add_argument("--known-hosts", type=Path,
                        help=f"known_hosts file (default ~/.ssh/known_hosts; ${KNOWN_HOSTS_ENV})")
    parser.add_argument("--no-utf8-check", action="store_true",
                        help="open the app even when the locale is not UTF-8 (lines and symbols may draw as _ q x)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("hosts", help="list the configured hosts")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="every host's GPUs and runs (hosts polled in parallel)")
    p.add_argument("--host", help="only this host")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("launch", help="start an experiment on a host (extra training args after --)")
    p.add_argument("experiment")
    p.add_argument("--host", required=True)
    p.add_argument("--gpu", default="auto", help="GPU index, 'auto' (a free one; default) or 'cpu'")
    p.add_argument("--base", help="for a Phase-4 run: the experiment whose configuration it takes")
    p.add_argument("--seeds", help="seed replicates, each a run of its own: '42,43,44', or 'plan' for the "
                                   "config's `replicates` (the plan's seed, then the next ones up)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("abort", help="stop a run: SIGTERM its process group, SIGKILL after the grace period")
    p.add_argument("experiment")
    p.add_argument("--host", required=True)
    p.add_argument("--grace", type=float, default=30.0, help="seconds before SIGKILL (default 30)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", help="a run's stdout.log")
    p.add_argument("experiment")
    p.add_argument("--host", required=True)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output (ctrl+c stops)")
    p.add_argument("--bytes", type=int, default=20000, help="how much of the end to show (default 20000)")

    p = sub.add_parser("sync", help="push engine/ and the config to hosts' work_dir")
    p.add_argument("--host", help="only this host (default: every enabled host)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("preflight", help="check a host's Python can train and sees its GPUs")
    p.add_argument("--host", help="only this host (default: every enabled host)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("synth", help="make a host's synthetic dataset on that host (when it has none yet)")
    p.add_argument("--host", required=True)

    p = sub.add_parser("fetch", help="copy a run's metrics, run info and log here")
    p.add_argument("experiment")
    p.add_argument("--host", required=True)
    p.add_argument("--dest", type=Path, help="destination runs folder (default fetched/HOST)")
    p.add_argument("--checkpoints", action="store_true", help="also best.pt and last.pt")

    p = sub.add_parser("trust", help="show a host's SSH key fingerprint and add it to known_hosts")
    p.add_argument("host_name", metavar="HOST", help="a host of the config, or an ssh alias")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("plan", help="the plan's §7 steps, each with its status derived from the hosts now; "
                       "`plan run` performs the steps that are ready (extra training args after --)")
    p.add_argument("what", nargs="?", choices=["run"], help="run: perform the ready steps (asks first)")
    p.add_argument("--json", action="store_true", help="the table as JSON (docs/PLAN.md describes the schema)")
    p.add_argument("--yes", action="store_true", help="plan run: do not ask before starting")
    p.add_argument("--auto", action="store_true",
                   help="plan run: keep advancing, unattended, until the plan is done or a decision halts it "
                        "(ctrl+c stops it; running it again continues where the plan stands)")
    p.add_argument("--interval", type=float, default=30.0, help="plan run --auto: seconds between looks (default 30)")
    p.add_argument("--gone", action="append", default=[], metavar="HOST",
                   help="declare a host that does not answer gone: its GPUs are no longer held for it")

    p = sub.add_parser("report", help="write the plan's report from runs folders (python -m engine.report)")
    p.add_argument("--runs-root", action="append", type=Path,
                   help="a runs folder (repeatable; default: the local host's runs and fetched/*)")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT}/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lenstui` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # `lenstui launch A1 --host h -- --epochs 2`: the rest goes to engine.train
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.command not in ("launch", "plan"):
        parser.error("arguments after -- are only for `launch` and `plan run` (extra training arguments)")
    args.extra = extra
    try:
        if args.command is None:
            return _open_app(args)
        config = load_config(args.config)
        fleet = Fleet(config, args.config, ssh_options=_ssh_options(args))
        try:
            return COMMANDS[args.command](fleet, args)
        finally:
            fleet.close()
    except ConfigError as exc:
        print(f"lenstui: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except FleetError as exc:
        print(f"lenstui: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _open_app(args: argparse.Namespace) -> int:
    load_config(args.config)  # a bad config is reported here, before Textual takes the screen
    problem = locale_problem(os.environ)
    if problem and not args.no_utf8_check:
        print(f"lenstui: {problem}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    _export_ssh_options(args)
    from lenstui.app import run_app  # Textual only when the app is wanted

    run_app(args.config, args.app_host)
    return 0


def locale_problem(environ: Mapping[str, str]) -> str | None:
    """Why the terminal would draw garbage, or None: a locale that is not UTF-8.

    The app draws borders, θ, dashes and charts in Unicode. Started from a shell (or a tmux)
    whose locale is C/POSIX, as an SSH session without LANG is, a terminal or tmux turns them
    into _, q and x. Python itself runs in UTF-8 there (PEP 538 sets LC_CTYPE=C.UTF-8 in its own
    environment), so the locale the shell had is what is checked."""
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = environ.get(name, "")
        if not value:
            continue
        if name == "LC_CTYPE" and value in ("C.UTF-8", "C.utf8") and not environ.get("LANG", "") \
                and not environ.get("LC_ALL", ""):
            value = "C"   # Python's own coercion of a C locale (PEP 538), not the shell's choice
        if "utf-8" in value.lower() or "utf8" in value.lower():
            return None
        shown = f"{name}={value}"
        break
    else:
        shown = "LANG, LC_ALL and LC_CTYPE unset"
    return (f"the locale is not UTF-8 ({shown}): lenstui draws with Unicode box lines, θ and dashes, which "
            "a terminal or tmux started in this locale shows as _, q and x. Run `export LANG=C.UTF-8` "
            "(and start tmux with `tmux -u`), then lenstui again; or pass --no-utf8-check to open it anyway.")


def _ssh_options(args: argparse.Namespace) -> SshOptions:
    defaults = SshOptions.from_env()
    return SshOptions(ssh_config=args.ssh_config or defaults.ssh_config,
                      known_hosts=args.known_hosts or defaults.known_hosts)


def _export_ssh_options(args: argparse.Namespace) -> None:
    # The app builds its own Fleet; the environment carries the choice to it.
    if args.ssh_config:
        os.environ[SSH_CONFIG_ENV] = str(args.ssh_config)
    if args.known_hosts:
        os.environ[KNOWN_HOSTS_ENV] = str(args.known_hosts)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, default=str))


def _chosen_hosts(fleet: Fleet, name: str | None) -> list[str]:
    if name:
        fleet.host(name)
        return [name]
    return [h for h in fleet.hosts() if fleet.config.hosts[h].enabled]


# ---------------------------------------------------------------------------
# Commands


def cmd_hosts(fleet: Fleet, args: argparse.Namespace) -> int:
    rows = []
    for name in fleet.hosts():
        h = fleet.config.hosts[name]
        rows.append({"host": name, "transport": h.transport, "enabled": h.enabled, "address": _address(h),
                     "work_dir": h.work_dir, "python": h.python, "runs_root": h.runs_root,
                     "dataset": h.dataset, "data_root": fleet.config.dataset_for(h).root})
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        state = "" if r["enabled"] else "  (not configured: enabled = false)"
        print(f"{r['host']:<10} {r['transport']:<6} {r['address']:<28} {r['work_dir']}  runs {r['runs_root']}  "
              f"data {r['dataset']} ({r['data_root']}){state}")
    return 0


def _address(h: Host) -> str:
    if h.transport == "local":
        return "this machine"
    return f"{h.user + '@' if h.user else ''}{h.ssh_host}{':' + str(h.port) if h.port else ''}"


def poll_all(fleet: Fleet, names: Sequence[str], deadline: float = STATUS_DEADLINE) -> dict[str, HostSnapshot]:
    """Poll hosts concurrently; a host that does not answer by `deadline` seconds is reported unreachable."""
    results: dict[str, HostSnapshot] = {}
    started = time.time()

    def one(name: str) -> None:
        results[name] = fleet.poll(name)

    threads = {n: threading.Thread(target=one, args=(n,), daemon=True, name=f"poll {n}") for n in names}
    for t in threads.values():
        t.start()
    end = time.monotonic() + deadline
    for t in threads.values():
        t.join(max(0.0, end - time.monotonic()))
    for name in names:
        if name not in results:
            results[name] = HostSnapshot.down(name, started, f"no answer within {deadline:g} s")
    return {n: results[n] for n in names}


def cmd_status(fleet: Fleet, args: argparse.Namespace) -> int:
    """Every host, then the run that stands for each experiment (engine/results/representative.py).

    Exit 0 when every enabled host answered; 3 when one refused us (host key, credentials) or
    is not set up (no work_dir or engine: `lenstui sync`); 4 when one is unreachable."""
    names = _chosen_hosts(fleet, args.host) if args.host else fleet.hosts()
    snaps = poll_all(fleet, names)
    choices = representatives(snaps, names, plan_epochs=fleet.config.training.epochs)
    if args.json:
        # Hosts by name, as before; "experiments": the run that stands for each (no host id is that word).
        _print_json({**{n: asdict(s) for n, s in snaps.items()},
                     "experiments": {e: {"host": c.chosen.host, "state": c.chosen.state, "reason": c.reason(),
                                         "others": [{"host": o.host, "state": o.state} for o in c.others]}
                                     for e, c in choices.items()}})
    else:
        for snap in snaps.values():
            print(format_snapshot(snap))
        print(format_experiments(choices, list(fleet.config.experiments),
                                 None if not args.host else names))
    codes = [s.exit_code or (exitcodes.UNREACHABLE if s.configured and not s.connected else 0) for s in snaps.values()]
    return max(codes, default=0)


def format_experiments(choices: Mapping[str, Any], plan_ids: Sequence[str],
                       only: Sequence[str] | None = None) -> str:
    """'experiments (the run that stands for each):' then one line per experiment; `only`: the
    hosts polled, when not every host was (the runs elsewhere are not counted then)."""
    from engine.results.representative import describe

    where = f" among the runs on {', '.join(only)} only" if only else ""
    lines = [f"experiments (the run that stands for each{where}; other runs after 'also'):"]
    for exp in list(plan_ids) + sorted(e for e in choices if e not in plan_ids):
        choice = choices.get(exp)
        if choice is None:
            lines.append(f"  {exp:<6} not run")
            continue
        text = f"  {exp:<6} {describe(choice.chosen)}, epoch {epochs_text(choice.chosen.metrics, missing='?')}"
        for other in choice.others:
            text += f"; also {describe(other)}"
        lines.append(text)
    return "\n".join(lines)


def format_snapshot(snap: HostSnapshot) -> str:
    """A host's poll as a few lines of plain text."""
    if not snap.configured:
        return f"{snap.host}: not configured (enabled = false)"
    if not snap.connected:
        since = time.strftime("%H:%M:%S", time.localtime(snap.since)) if snap.since else "?"
        what = "REFUSED" if snap.exit_code == exitcodes.REFUSED else "DISCONNECTED"
        return f"{snap.host}: {what} since {since}: {snap.error}"
    if snap.status is None:
        return f"{snap.host}: connected, but not ready: {snap.error}"
    s = snap.status
    lines = [f"{snap.host}: connected ({s.get('host')}, engine {s.get('engine_version')})"]
    if snap.error:
        lines.append(f"  ! {snap.error}")
    if not s.get("gpus"):
        lines.append(f"  GPUs: none ({s.get('gpu_note')})")
    for g in s.get("gpus") or []:
        users = ", ".join(str(p.get("experiment") or p.get("pid")) for p in g.get("processes") or []) or "idle"
        lines.append(f"  GPU {g.get('index')} {g.get('name')}: {g.get('utilization')}% util, "
                     f"{g.get('memory_used_mib')}/{g.get('memory_total_mib')} MiB, {g.get('temperature_c')} C; {users}")
    runs = s.get("runs") or {}
    if not runs:
        lines.append(f"  runs: none in {s.get('runs_root')}")
    width = max([6, *map(len, runs)])   # a replicate's name (B1@seed43) is longer than an experiment id
    for exp, r in runs.items():
        auroc = r.get("val_auroc")
        best = r.get("best_val_auroc")
        text = (f"  {exp:<{width}} {r.get('state'):<8} epoch {epochs_text(r, missing='-')}  "
                f"val_auroc {fixed(auroc, 4, '-')}  best {fixed(best, 4, '-')}  gpu {r.get('gpu') or '-'}")
        if r.get("reason"):
            text += f"  ({r['reason']})"
        if r.get("launch_failure"):
            text += f"\n         ! the newest launch failed: {r['launch_failure']}"
        for err in r.get("errors") or []:
            text += f"\n         ! {err}"
        lines.append(text)
    return "\n".join(lines)


def cmd_launch(fleet: Fleet, args: argparse.Namespace) -> int:
    """One run; with --seeds, one run per seed (each its own directory, on a free GPU of the host).
    A seed that cannot start is said and the others still start; exit 0 only when every one did."""
    if not args.seeds:
        requests = [(args.experiment, list(args.extra))]
    else:
        try:
            seeds = None if args.seeds == "plan" else rundir.parse_seeds(args.seeds)
        except ValueError as exc:
            raise FleetError(str(exc), exitcodes.BAD_INPUT) from None
        requests = fleet.replicate_runs(args.experiment, seeds, args.extra)
    results, code = [], 0
    for name, extra in requests:
        try:
            result = fleet.launch(args.experiment, args.host, gpu=args.gpu, base=args.base, extra_args=extra)
        except FleetError as exc:
            if len(requests) == 1:
                raise
            print(f"{name} not launched on {args.host}: {exc}", file=sys.stderr)
            code = max(code, exc.code)
            continue
        results.append(result)
        if not args.json:
            print(f"{result.name or result.exp_id} launched on {result.host}: {result.message}; "
                  f"log {result.run_dir}/stdout.log")
    if args.json:
        _print_json(asdict(results[0]) if not args.seeds and results else [asdict(r) for r in results])
    return code


def cmd_synth(fleet: Fleet, args: argparse.Namespace) -> int:
    print(f"making the synthetic dataset on {args.host} (minutes; nothing is redone if it is complete) …",
          file=sys.stderr)
    print(fleet.synth(args.host))
    return 0


def cmd_abort(fleet: Fleet, args: argparse.Namespace) -> int:
    result = fleet.abort(args.experiment, args.host, grace=args.grace)
    if args.json:
        _print_json(asdict(result))
    else:
        print(result.message)
    return 0 if not result.remaining else exitcodes.REFUSED


def cmd_logs(fleet: Fleet, args: argparse.Namespace) -> int:
    data, offset = fleet.log_chunk(args.experiment, args.host, -max(args.bytes, 1))
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    out = sys.stdout
    out.write(decoder.decode(data))
    out.flush()
    while args.follow:
        time.sleep(FOLLOW_INTERVAL)
        try:
            data, offset = fleet.log_chunk(args.experiment, args.host, offset)
        except FleetError as exc:
            if exc.code != exitcodes.UNREACHABLE:
                raise
            print(f"\n[lenstui: {exc.message}; retrying]", file=sys.stderr)
            continue
        if data:
            out.write(decoder.decode(data))
            out.flush()
    return 0


def cmd_sync(fleet: Fleet, args: argparse.Namespace) -> int:
    code, results = 0, []
    for name in _chosen_hosts(fleet, args.host):
        try:
            r = fleet.sync(name)
            results.append(asdict(r))
            if not args.json:
                print(f"{name}: {r.message}")
        except FleetError as exc:
            code = max(code, exc.code)
            results.append({"host": name, "error": exc.message})
            print(f"lenstui: {exc.message}", file=sys.stderr)
    if args.json:
        _print_json(results)
    return code


def cmd_preflight(fleet: Fleet, args: argparse.Namespace) -> int:
    code, results = 0, []
    for name in _chosen_hosts(fleet, args.host):
        try:
            r = fleet.preflight(name)
        except FleetError as exc:
            code = max(code, exc.code)
            results.append({"host": name, "error": exc.message})
            print(f"lenstui: {exc.message}", file=sys.stderr)
            continue
        results.append(asdict(r))
        if not r.ok:
            code = max(code, exitcodes.REFUSED)
        if not args.json:
            print(r.message if r.ok else f"{name}: not ready:")
            for problem in [] if r.ok else r.problems:
                print(f"  - {problem}")
            for mod, version in r.modules.items():
                print(f"  {mod:<14} {version or 'MISSING'}")
    if args.json:
        _print_json(results)
    return code


def cmd_fetch(fleet: Fleet, args: argparse.Namespace) -> int:
    dest = args.dest or Path("fetched") / args.host
    path = fleet.fetch(args.experiment, args.host, dest, checkpoints=args.checkpoints)
    print(f"{args.experiment} from {args.host} -> {path}")
    return 0


def cmd_trust(fleet: Fleet, args: argparse.Namespace) -> int:
    from lenstui.transport import trust  # paramiko only for SSH commands

    name = args.host_name
    if name in fleet.config.hosts:
        host = fleet.config.hosts[name]
        if host.transport == "local":
            print(f"{name} is the local host: there is no host key to trust")
            return 0
    else:  # an ssh alias or address that is not (yet) in the config
        host = Host(name=name, transport="ssh", enabled=True, work_dir=".", python="python3", runs_root="runs",
                    dataset="", ssh_host=name)
    options = fleet.ssh_options or SshOptions.from_env()
    try:
        scan = trust.scan_host_key(host, options)
    except TransportError as exc:
        print(f"lenstui: {exc}", file=sys.stderr)
        return exitcodes.UNREACHABLE
    print(f"{scan.entry} presents a {scan.key_type} key, fingerprint {scan.fingerprint}")
    if scan.state == "known":
        print(f"already trusted in {scan.known_in}")
        return 0
    if scan.state == "changed":
        print(f"WARNING: this differs from the key stored in {scan.known_in} ({scan.stored_fingerprint}).\n"
              f"If the host was really reinstalled, remove the old key with\n"
              f"  ssh-keygen -R '{scan.entry}' -f {scan.known_in}\nand run `lenstui trust {name}` again.",
              file=sys.stderr)
        return exitcodes.REFUSED
    if not args.yes:
        if not sys.stdin.isatty():
            print("lenstui: not a terminal: pass --yes to trust this key", file=sys.stderr)
            return exitcodes.BAD_INPUT
        answer = input(f"Trust this key and add it to {options.known_hosts}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not trusted")
            return exitcodes.REFUSED
    trust.add_known_host(options.known_hosts, scan)
    print(f"added {scan.entry} to {options.known_hosts}")
    return 0


def cmd_report(fleet: Fleet, args: argparse.Namespace) -> int:
    roots = args.runs_root
    if not roots:
        roots = [Path(fleet.paths(h).runs_root) for h in fleet.hosts()
                 if fleet.config.hosts[h].transport == "local" and fleet.config.hosts[h].enabled]
        fetched = Path("fetched")
        roots += sorted(p for p in fetched.iterdir() if p.is_dir()) if fetched.is_dir() else []
    roots = [r for r in roots if Path(r).is_dir()]
    if not roots:
        print("lenstui: no runs folder found: run something, or `lenstui fetch EXP --host H` first",
              file=sys.stderr)
        return exitcodes.BAD_INPUT
    argv = [sys.executable, "-m", "engine.report"]
    for r in roots:
        argv += ["--runs-root", str(r)]
    argv += ["--config", str(args.config), "--out", str(args.out)]
    return subprocess.run(argv, stdin=subprocess.DEVNULL).returncode


def _enabled(fleet: Fleet) -> list[str]:
    return [h for h in fleet.hosts() if fleet.config.hosts[h].enabled]


def format_plan(state: Any) -> str:
    """The plan's table as plain text: one line per step, then the decision."""
    lines = [f"{state.name}: the plan as the hosts show it now"]
    phase = None
    for s in state.steps:
        if s.phase != phase:
            phase = s.phase
            lines.append(f"Phase {phase}")
        by = f"  [blocked by: {s.blocked_by}]" if s.blocked_by and s.status in ("blocked", "failed", "stopped") else (
            f"  [waits on: {s.blocked_by}]" if s.blocked_by else "")
        lines.append(f"  {s.key:<4} {s.status.upper():<10} {s.title}: {s.detail}{by}")
    lines.append(f"decision: {state.decision.title}: {state.decision.reason}")
    if state.report:
        lines.append(f"report: {state.report}")
    return "\n".join(lines)


def cmd_plan(fleet: Fleet, args: argparse.Namespace) -> int:
    """`lenstui plan`: the table; `lenstui plan run [--yes] [--auto]`: Advance."""
    from lenstui import plan_run
    from lenstui.plan import DONE

    names = _enabled(fleet)
    if args.what != "run":
        state = plan_run.gather(fleet, poll_all(fleet, names), extra_args=args.extra)
        if args.json:
            print(json.dumps(state.as_dict(), indent=1, default=str))
        else:
            print(format_plan(state))
        return 0
    while True:
        snaps = poll_all(fleet, names)
        state = plan_run.gather(fleet, snaps, extra_args=args.extra)
        todo = plan_run.preview(state, snaps, fleet, gone=args.gone)
        if todo.halted:
            print(format_plan(state))
            print(f"lenstui: the plan stops here: {todo.halted}", file=sys.stderr)
            return exitcodes.REFUSED
        if todo.empty:
            if state.step("4.3").status == DONE:
                print(f"the plan is done: {state.report}")
                return 0
            if not args.auto:
                print(format_plan(state))
                print("nothing is ready now: every step is done, running, or waiting on another (above)")
                return 0
        else:
            print("Advance will:\n  " + "\n  ".join(todo.lines()))
            if not (args.yes or args.auto):
                if not sys.stdin.isatty():
                    print("lenstui: not asked on a terminal: add --yes to start these", file=sys.stderr)
                    return exitcodes.REFUSED
                if input("Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
                    print("nothing started")
                    return 0
            done = plan_run.perform(fleet, todo)
            for line in done.lines:
                print(line)
            for line in done.failed:
                print(f"lenstui: {line}", file=sys.stderr)
            if not args.auto:
                return exitcodes.REFUSED if done.failed and not done.started else 0
        time.sleep(max(1.0, args.interval))


COMMANDS = {"plan": cmd_plan, "hosts": cmd_hosts, "status": cmd_status, "launch": cmd_launch, "abort": cmd_abort,
            "logs": cmd_logs, "sync": cmd_sync, "preflight": cmd_preflight, "synth": cmd_synth, "fetch": cmd_fetch,
            "trust": cmd_trust, "report": cmd_report}


if __name__ == "__main__":
    sys.exit(main())
