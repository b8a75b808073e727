"""The fleet: every host of experiments.toml behind one blocking API for the app's thread workers and the CLI.

Each host has its own transport (its own connection), so a dead host only ever
blocks the worker that asked about it. What runs on a host is the engine's
torch-free CLI (`engine.status`, `engine.launch`), run with the host's Python
in its work_dir. A refresh asks the host's long-lived status server
(`engine.status --serve`, lenstui/status_channel.py) over the open connection;
for the local host the probe runs in-process, the same code without a process.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from engine import ENGINE_VERSION

from engine.protocol import rundir
from engine.config import Config, ConfigError, Host
from engine.protocol import exitcodes
from engine.protocol.codeversion import ENGINE_DIR, RECORD, checkout_version, engine_files, record, synced_version
from engine.protocol.status import TRAIN_MODULES
from engine.protocol.train_options import seed_in
from lenstui.status_channel import StatusChannel
from lenstui.transport import SshOptions, make_transport
from lenstui.transport.base import (AuthError, HostKeyError, HostUnreachable, PutStats,
                                    RemoteFileNotFound, StreamClosed, Transport, TransportError, check_arg,
                                    last_line)

POLL_TIMEOUT = 15.0        # a status probe (nvidia-smi included) slower than this is reported, not waited for
SERVE_RETRY_S = 60.0       # a host whose engine lacks --serve is polled the old way this long, then asked again
LAUNCH_TIMEOUT = 60.0
LAUNCH_WAIT = 20.0         # a run that ends within this long after its launch is a failed launch (engine.launch --wait)
SYNTH_TIMEOUT = 1800.0     # making a synthetic dataset on a host
PREFLIGHT_TIMEOUT = 180.0  # importing torch on a cold disk is slow
CUTOUTS_TIMEOUT = 300.0    # the first look at a dataset builds its manifests there
REMOTE_CONFIG_NAME = "experiments.toml"          # sync puts the config here in the work_dir
PROJECT_ROOT = ENGINE_DIR.parent   # the tree lenstui runs from, whose engine/ sync pushes


class FleetError(Exception):
    """An action that could not be done, worded for the user; `code` is the CLI exit code."""

    def __init__(self, message: str, code: int = exitcodes.BAD_INPUT) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@contextmanager
def _as_fleet_error(what: str) -> Iterator[None]:
    """Transport trouble as a FleetError: host unreachable (exit 4), anything else (exit 2)."""
    try:
        yield
    except (HostKeyError, AuthError) as exc:   # the host answered and refused us (or we refused its key)
        raise FleetError(f"{what}: {exc}", exitcodes.REFUSED) from None
    except HostUnreachable as exc:
        raise FleetError(f"{what}: {exc}", exitcodes.UNREACHABLE) from None
    except TransportError as exc:
        raise FleetError(f"{what}: {exc}", exitcodes.BAD_INPUT) from None


@dataclass(frozen=True)
class HostSnapshot:
    """One host as seen by one poll."""

    host: str
    connected: bool
    configured: bool              # False for `enabled = false` hosts: shown as "not configured", not as an error
    since: float | None           # time.time() when it became disconnected (None if connected)
    error: str | None             # human message (auth refused, host key unknown + how to trust, timeout…)
    status: dict | None           # the engine.status JSON object from that host
    exit_code: int = 0            # the CLI's code for this host: 3 refused or not set up, 4 unreachable

    @classmethod
    def answered(cls, host: str, status: dict, note: str | None = None) -> "HostSnapshot":
        """The host answered with its status (and `note`, e.g. 'its engine is older: sync it')."""
        return cls(host, True, True, None, note, status)

    @classmethod
    def not_ready(cls, host: str, error: str, code: int = exitcodes.REFUSED) -> "HostSnapshot":
        """Connected, but no status: no engine or work_dir there (exit 3), or its probe failed."""
        return cls(host, True, True, None, error, None, code)

    @classmethod
    def down(cls, host: str, since: float, error: str, code: int = exitcodes.UNREACHABLE) -> "HostSnapshot":
        """Not connected since `since`: unreachable (exit 4), or it refused us (key, credentials: exit 3)."""
        return cls(host, False, True, since, error, None, code)

    @classmethod
    def not_configured(cls, host: str) -> "HostSnapshot":
        """`enabled = false` in experiments.toml: shown as such, never as an error."""
        return cls(host, False, False, None, None, None)


@dataclass(frozen=True)
class LaunchResult:
    """A started run: where it runs and which process group is it."""

    exp_id: str
    host: str
    pid: int
    pgid: int
    gpu: str
    run_dir: str
    message: str
    started: bool = False         # the engine took the run over (wrote run.json) before launch returned
    name: str = ""                # the run directory's name: exp_id, or <exp_id>@seed<N> for a replicate


@dataclass(frozen=True)
class AbortResult:
    """What abort did: signalled or not, SIGKILL needed or not, anything left."""

    exp_id: str
    host: str
    signalled: bool
    killed: bool
    remaining: list[int]
    message: str


@dataclass(frozen=True)
class SyncResult:
    """Files pushed to a host and the code version recorded there."""

    host: str
    sent: list[str]
    skipped: int
    code_version: str
    message: str
    removed: list[str] = field(default_factory=list)   # files under the host's engine/ that this engine no longer has


@dataclass(frozen=True)
class PreflightResult:
    """Whether a host's Python can train, and what is missing if not."""

    host: str
    ok: bool
    python: str
    python_version: str
    modules: dict[str, str | None]
    missing: list[str]
    gpus: list[str]
    problems: list[str]
    message: str


@dataclass(frozen=True)
class HostPaths:
    """A host's paths as its commands see them (absolute for the local host)."""

    work_dir: str
    python: str
    runs_root: str
    config_file: str
    data_root: str


def host_paths(config: Config, host: Host, config_path: Path) -> HostPaths:
    """Resolve work_dir, python, runs_root, config and data paths for `host`.

    For the local host "." is the config file's folder and relative paths are
    made absolute, so a fresh clone with its venv at .venv works from anywhere.
    """
    dataset_root = config.dataset_for(host).root
    if host.transport != "local":
        # The config as its commands name it: relative, since they run in work_dir (which may be ~/...).
        return HostPaths(host.work_dir, host.python, host.runs_root_path,
                         REMOTE_CONFIG_NAME, host.resolve(dataset_root))
    base = Path(config_path).resolve().parent

    def absolute(path: str, root: Path) -> str:
        # normpath, not resolve(): a venv's bin/python is a symlink to the base
        # interpreter, and following it would lose the venv's packages.
        p = Path(os.path.expanduser(path))
        return os.path.normpath(p if p.is_absolute() else root / p)

    work = Path(absolute(host.work_dir, base))
    python = host.python if "/" not in host.python else absolute(host.python, work)
    return HostPaths(str(work), python, absolute(host.runs_root, work),
                     str(Path(config_path).resolve()), absolute(dataset_root, work))


class Fleet:
    """Every host of the config, each on its own connection; all methods block (call from workers)."""

    def __init__(self, config: Config, config_path: Path, ssh_options: SshOptions | None = None,
                 local_status_in_process: bool = True) -> None:
        self.config = config
        self.config_path = Path(config_path)
        self.ssh_options = ssh_options
        self.local_status_in_process = local_status_in_process
        self._transports: dict[str, Transport] = {}
        self._status: dict[str, StatusChannel] = {}
        self._one_shot_until: dict[str, float] = {}   # hosts whose engine has no --serve (monotonic time)
        self._lock = threading.Lock()

    # -- hosts and links --------------------------------------------------------

    def hosts(self) -> list[str]:
        """Every host in the config's order, enabled or not."""
        return list(self.config.hosts)

    def host(self, name: str) -> Host:
        """The host `name`; FleetError for an unknown one."""
        try:
            return self.config.host(name)
        except ConfigError as exc:
            raise FleetError(str(exc), exitcodes.BAD_INPUT) from None

    def paths(self, name: str) -> HostPaths:
        return host_paths(self.config, self.host(name), self.config_path)

    def transport(self, name: str) -> Transport:
        """The host's one transport (created on first use); FleetError for a disabled host."""
        host = self.host(name)
        if not host.enabled:
            raise FleetError(f"host {name} is not configured (enabled = false in {self.config.source}); "
                             f"set enabled = true under [hosts.{name}] once `ssh {host.ssh_host or name}` "
                             "works", exitcodes.BAD_INPUT)
        with self._lock:
            if name not in self._transports:
                self._transports[name] = make_transport(host, self.config_path.resolve().parent,
                                                        self.ssh_options)
            return self._transports[name]

    def close(self) -> None:
        """Stop the status servers and close every connection (runs keep going on their hosts)."""
        with self._lock:
            channels, self._status = list(self._status.values()), {}
            transports, self._transports = list(self._transports.values()), {}
        for c in channels:
            c.close(final=True)
        for t in transports:
            t.close()

    def status_channel(self, name: str) -> StatusChannel:
        """The host's status server channel (created on first use, started on first ask)."""
        with self._lock:   # every refresh asks: the existing channel, without resolving paths again
            channel = self._status.get(name)
        if channel is not None:
            return channel
        t, paths = self.transport(name), self.paths(name)
        argv = [paths.python, "-m", "engine.status", "--serve", "--runs-root", paths.runs_root]
        with self._lock:
            return self._status.setdefault(name, StatusChannel(t, argv, paths.work_dir))

    def _restart_status(self, name: str) -> None:
        """Stop the host's status server, so the next poll starts the code now on the host."""
        with self._lock:
            channel = self._status.get(name)
            self._one_shot_until.pop(name, None)
        if channel is not None:
            channel.close()

    # -- status -------------------------------------------------------------------

    def poll(self, host: str) -> HostSnapshot:
        """One round trip to `host`: its engine.status answer, or why there is none. Never raises for network trouble."""
        h = self.host(host)
        if not h.enabled:
            return HostSnapshot.not_configured(host)
        t = self.transport(host)
        paths = self.paths(host)
        if h.transport == "local" and self.local_status_in_process:
            from engine.protocol.status import probe

            try:
                status = probe(paths.runs_root)
                # The probe ran in this process: the code version is the one synced into the host's work_dir.
                status["synced_code_version"] = synced_version(Path(paths.work_dir) / "engine")
                return HostSnapshot.answered(host, status)
            except Exception as exc:  # a bug in the probe must show on screen, with the host named
                return HostSnapshot.not_ready(host, f"status probe failed: {type(exc).__name__}: {exc}", exitcodes.OK)
        try:
            if time.monotonic() < self._one_shot_until.get(host, 0.0):
                return self._poll_once(host, t, paths)
            status = self.status_channel(host).ask(POLL_TIMEOUT)
        except (HostKeyError, AuthError) as exc:
            return HostSnapshot.down(host, t.down_since or time.time(), str(exc), exitcodes.REFUSED)
        except HostUnreachable as exc:
            return HostSnapshot.down(host, t.down_since or time.time(), str(exc))
        except StreamClosed as exc:  # the server could not start: the engine's own words say why
            if _lacks_serve(exc.stderr):  # an engine from before --serve: the old way, until it is synced
                self._one_shot_until[host] = time.monotonic() + SERVE_RETRY_S
                return self._poll_once(host, t, paths)
            message = self._engine_failure(host, paths, exc.stderr) if exc.stderr.strip() else str(exc)
            return HostSnapshot.not_ready(host, message)
        except TransportError as exc:  # alive but the probe hung, or the work_dir/python is wrong
            return HostSnapshot.not_ready(host, str(exc))
        return HostSnapshot.answered(host, status, _old_engine(host, status))

    def _poll_once(self, host: str, t: Transport, paths: HostPaths) -> HostSnapshot:
        """One exec of `engine.status` per refresh: for a host whose engine has no --serve yet."""
        argv = [paths.python, "-m", "engine.status", "--runs-root", paths.runs_root]
        try:
            done = t.run(argv, cwd=paths.work_dir, timeout=POLL_TIMEOUT)
        except (HostKeyError, AuthError) as exc:
            return HostSnapshot.down(host, t.down_since or time.time(), str(exc), exitcodes.REFUSED)
        except HostUnreachable as exc:
            return HostSnapshot.down(host, t.down_since or time.time(), str(exc))
        except TransportError as exc:
            return HostSnapshot.not_ready(host, str(exc))
        if done.rc != 0:
            return HostSnapshot.not_ready(host, self._engine_failure(host, paths, done.stderr))
        try:
            status = json.loads(done.stdout)
        except json.JSONDecodeError:
            return HostSnapshot.not_ready(host, f"{host}: engine.status printed no JSON: {done.stdout[-300:]!r}")
        return HostSnapshot.answered(host, status, _old_engine(host, status))

    def _engine_failure(self, host: str, paths: HostPaths, stderr: str) -> str:
        tail = last_line(stderr)
        if any(m in stderr for m in ("No module named engine", "No module named 'engine", "from 'engine'")):
            return (f"{host}: the engine is not installed in {paths.work_dir}; "
                    f"run `lenstui sync --host {host}`")
        if "cd:" in stderr or "can't cd" in stderr:   # the shell could not enter work_dir: never synced
            return (f"{host}: its work_dir {paths.work_dir} does not exist yet ({tail}); run "
                    f"`lenstui sync --host {host}`, which creates it and puts the engine there")
        if "No such file" in stderr or "not found" in stderr:
            return f"{host}: {tail} (check work_dir and python under [hosts.{host}])"
        return f"{host}: {tail}"

    # -- launch and abort ------------------------------------------------------------

    def train_argv(self, exp_id: str, host: str, base: str | None = None,
                   extra_args: Sequence[str] = ()) -> list[str]:
        """The training command a launch runs on `host`."""
        paths = self.paths(host)
        argv = [paths.python, "-m", "engine.train", "--experiment", exp_id, "--host", host,
                "--config", paths.config_file]
        if base:
            argv += ["--base", base]
        return argv + [check_arg(a, "extra training argument") for a in extra_args]

    def run_name(self, exp_id: str, extra_args: Sequence[str] = ()) -> str:
        """The directory a launch of `exp_id` with `extra_args` writes to: `exp_id`, or `<exp_id>@seed<N>`
        when the arguments ask for a seed other than the plan's (engine.train names it the same way)."""
        try:
            seed = seed_in(extra_args)
        except ValueError as exc:
            raise FleetError(f"extra training arguments: {exc}") from None
        return rundir.run_name(exp_id, seed, self.config.training.seed)

    def replicate_runs(self, exp_id: str, seeds: Sequence[int] | None = None,
                       extra_args: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
        """(run name, extra training arguments) for each seed replicate of `exp_id`: `seeds`, or the
        config's (`replicates`: the plan's seed, then the next ones up). The generic run requests a
        scheduler queues; launch() starts one. FleetError when `extra_args` already hold a --seed."""
        try:
            given = seed_in(extra_args)
        except ValueError as exc:
            raise FleetError(f"extra training arguments: {exc}") from None
        if given is not None:
            raise FleetError(f"--seed {given} among the extra arguments and a list of seeds: give the seeds once "
                             "(--seeds 42,43,44)", exitcodes.BAD_INPUT)
        plan_seed = self.config.training.seed
        if seeds is None:
            replicates = self.config.experiments[exp_id].replicates if exp_id in self.config.experiments else 1
            seeds = [plan_seed + k for k in range(replicates)]
        return [(rundir.run_name(exp_id, s, plan_seed), [*extra_args, *rundir.seed_args(s, plan_seed)])
                for s in seeds]

    def launch(self, exp_id: str, host: str, gpu: str = "auto", base: str | None = None,
               extra_args: Sequence[str] = (), provenance: dict[str, Any] | None = None) -> LaunchResult:
        """Start `exp_id` on `host` detached; FleetError (code 3) if it already runs there. A `--seed`
        among `extra_args` other than the plan's starts a replicate, in a directory of its own.
        `provenance` (who asked: the plan's step, the host and GPU chosen, the decision) goes into
        the run's run.json."""
        if provenance is not None:
            extra_args = [*extra_args, "--provenance", json.dumps(provenance, sort_keys=True)]
        try:
            self.config.experiment(exp_id, base)
        except ConfigError as exc:
            raise FleetError(str(exc), exitcodes.BAD_INPUT) from None
        name = self.run_name(exp_id, extra_args)
        gpu = str(gpu).strip().lower()
        if not (gpu in ("auto", "cpu") or gpu.isdigit()):
            raise FleetError(f"--gpu {gpu!r}: expected a GPU index (0, 1, ...), 'auto' or 'cpu'")
        paths = self.paths(host)
        try:
            train = self.train_argv(exp_id, host, base, extra_args)
        except ValueError as exc:
            raise FleetError(str(exc)) from None
        argv = [paths.python, "-m", "engine.launch", "start", "--experiment", name,
                "--runs-root", paths.runs_root, "--gpu", gpu, "--require", ",".join(TRAIN_MODULES),
                "--wait", f"{LAUNCH_WAIT:g}", "--", *train]
        answer = self._engine_call(host, argv, LAUNCH_TIMEOUT + LAUNCH_WAIT, "launch")
        started = bool(answer.get("started"))
        how = ("the engine is running it" if started else
               f"the engine had not taken it over after {LAUNCH_WAIT:g} s (still starting; "
               "a failure shows as 'Launch failed')")
        return LaunchResult(exp_id, host, answer["pid"], answer["pgid"], str(answer["gpu"]), answer["run_dir"],
                            f"{name + ': ' if name != exp_id else ''}pid {answer['pid']} on {host}, "
                            f"gpu {answer['gpu']} ({answer.get('gpu_note', '')}); {how}",
                            started, name)

    def abort(self, exp_id: str, host: str, grace: float = 30) -> AbortResult:
        """SIGTERM the run's process group, SIGKILL after `grace` seconds."""
        self._check_id(exp_id)
        paths = self.paths(host)
        argv = [paths.python, "-m", "engine.launch", "abort", "--experiment", exp_id,
                "--runs-root", paths.runs_root, "--grace", f"{float(grace):g}"]
        answer = self._engine_call(host, argv, float(grace) + 30.0, "abort")
        return AbortResult(exp_id, host, bool(answer["signalled"]), bool(answer["killed"]),
                           list(answer.get("remaining") or []), answer["message"])

    def _engine_call(self, host: str, argv: list[str], timeout: float, what: str) -> dict[str, Any]:
        """Run an engine CLI on `host` and return its JSON answer; FleetError with its words otherwise."""
        t, paths = self.transport(host), self.paths(host)
        with _as_fleet_error(f"{what} on {host}"):
            done = t.run(argv, cwd=paths.work_dir, timeout=timeout)
        answer = _last_json(done.stdout)
        if done.rc == 0 and answer is not None and "error" not in answer:
            return answer
        if answer is not None and "error" in answer:
            raise FleetError(f"{what} on {host}: {answer['error']}", int(answer.get("code", exitcodes.BAD_INPUT)))
        raise FleetError(f"{what} on {host} failed: {self._engine_failure(host, paths, done.stderr)}",
                         exitcodes.BAD_INPUT)

    @staticmethod
    def _check_id(name: str) -> None:
        """A run's name (an experiment id, or a replicate's <id>@seed<N>) or FleetError."""
        problem = rundir.run_name_problem(name)
        if problem:
            raise FleetError(problem)

    # -- logs ---------------------------------------------------------------------------

    def log_path(self, exp_id: str, host: str) -> str:
        self._check_id(exp_id)
        return f"{self.paths(host).runs_root.rstrip('/')}/{exp_id}/{rundir.LOG_FILE}"

    def logs(self, exp_id: str, host: str, tail_bytes: int = 20000) -> str:
        """The last `tail_bytes` of the run's stdout.log."""
        data, _ = self.log_chunk(exp_id, host, -max(int(tail_bytes), 1))
        return data.decode("utf-8", "replace")

    def log_chunk(self, exp_id: str, host: str, offset: int) -> tuple[bytes, int]:
        """New log bytes from `offset` (negative: the last -offset bytes) and the next offset (for `logs -f`)."""
        path = self.log_path(exp_id, host)
        with _as_fleet_error(f"logs from {host}"):
            try:
                return self.transport(host).tail_file(path, offset)
            except RemoteFileNotFound:
                raise FleetError(f"{exp_id} has no log on {host} yet ({path})", exitcodes.BAD_INPUT) from None

    # -- sync, preflight, fetch -------------------------------------------------------

    def sync(self, host: str) -> SyncResult:
        """Push engine/ and the config to the host's work_dir (changed files only); record the code version."""
        t, paths = self.transport(host), self.paths(host)
        work = paths.work_dir.rstrip("/") or "/"
        files = engine_files(ENGINE_DIR)
        pairs = [(f, f"{work}/engine/{f.relative_to(ENGINE_DIR).as_posix()}") for f in files]
        pairs.append((self.config_path.resolve(), f"{work}/{REMOTE_CONFIG_NAME}"))
        same_tree = self.host(host).transport == "local" and Path(work).resolve() == PROJECT_ROOT
        version = checkout_version(ENGINE_DIR, files)
        removed: list[str] = []
        with _as_fleet_error(f"sync to {host}"):
            # Never write into, or delete from, the tree lenstui itself runs from: the local host there
            # runs this folder's engine and reads the config where it is (a --config elsewhere must not
            # be copied over this folder's experiments.toml).
            stats = t.put_files(pairs) if not same_tree else PutStats(skipped=len(pairs))
            if not same_tree:
                with tempfile.TemporaryDirectory() as tmp:
                    recorded = Path(tmp) / RECORD
                    recorded.write_text(json.dumps(record(version), indent=1) + "\n")
                    stats.sent += t.put_files([(recorded, f"{work}/engine/{RECORD}")]).sent
                removed = self._remove_stale_engine_files(t, f"{work}/engine", files)
        sent = list(stats.sent)
        self._restart_status(host)  # its server runs the code just replaced (it would notice, too)
        message = (f"{len(sent)} file(s) sent, {stats.skipped} unchanged, {len(removed)} removed (no longer "
                   f"part of the engine); code {version}" if not same_tree
                   else f"{host} runs this folder's code ({version}); nothing to push")
        return SyncResult(host, sent, stats.skipped, version, message, removed)

    @staticmethod
    def _remove_stale_engine_files(t: Transport, engine_dir: str, files: Sequence[Path]) -> list[str]:
        """Delete the files under the host's `engine_dir` that this engine does not have (a module an
        older engine had, such as engine/verdicts.py before engine/results/): the host then imports
        only the code just pushed. Nothing outside engine_dir is touched; the version record stays."""
        keep = {f.relative_to(ENGINE_DIR).as_posix() for f in files} | {RECORD}
        stale = [rel for rel in t.list_files(engine_dir) if rel not in keep]
        for rel in stale:   # list_files gives paths inside engine_dir; refuse anything that is not
            if rel.startswith("/") or ".." in rel.split("/") or "\x00" in rel:
                raise TransportError(f"refusing to remove {rel!r}: not a path inside {engine_dir}")
        t.remove_files([f"{engine_dir}/{rel}" for rel in stale])
        return [f"{engine_dir}/{rel}" for rel in stale]

    def same_tree(self, host: str) -> bool:
        """Whether `host` is the local host running this folder's engine (nothing to sync there)."""
        h = self.host(host)
        return h.transport == "local" and Path(self.paths(host).work_dir).resolve() == PROJECT_ROOT

    def manifests(self, host: str, check: bool = False) -> dict[str, Any]:
        """Build the host's manifests for its dataset there (`python -m engine.manifest`), or with `check`
        only say whether they are built: {"present", "path", "why"}."""
        paths = self.paths(host)
        argv = [paths.python, "-m", "engine.manifest", "--data-root", paths.data_root,
                "--config", paths.config_file, "--host", host] + (["--check"] if check else [])
        with _as_fleet_error(f"manifests on {host}"):
            done = self.transport(host).run(argv, cwd=paths.work_dir,
                                            timeout=POLL_TIMEOUT * 4 if check else SYNTH_TIMEOUT)
        if done.rc != 0:
            raise FleetError(f"manifests on {host} failed: {self._engine_failure(host, paths, done.stderr)}")
        if check:
            answer = _last_json(done.stdout)
            if answer is None:
                raise FleetError(f"manifests --check on {host} printed no JSON: {done.stdout[-300:]!r}")
            return answer
        return {"present": True, "path": None, "why": last_line(done.stdout) or "built"}

    def data_check(self, host: str) -> str:
        """The data check on `host`: the gate matrix of its dataset (`engine.gates --matrix --record`),
        recorded beside its manifests; the ordering verdict's line."""
        paths = self.paths(host)
        argv = [paths.python, "-m", "engine.gates", "--matrix", "--record", "--data-root", paths.data_root,
                "--config", paths.config_file, "--host", host]
        with _as_fleet_error(f"data check on {host}"):
            done = self.transport(host).run(argv, cwd=paths.work_dir, timeout=SYNTH_TIMEOUT)
        if done.rc != 0:
            raise FleetError(f"data check on {host} failed: {self._engine_failure(host, paths, done.stderr)}")
        lines = [line for line in done.stdout.splitlines() if line.startswith("ordering:")]
        return lines[-1] if lines else last_line(done.stdout)

    def preflight(self, host: str) -> PreflightResult:
        """Whether the host's Python imports what training needs (engine.status.TRAIN_MODULES) and sees GPUs."""
        paths = self.paths(host)
        argv = [paths.python, "-m", "engine.status", "--preflight", "--data-root", paths.data_root]
        t = self.transport(host)
        with _as_fleet_error(f"preflight on {host}"):
            done = t.run(argv, cwd=paths.work_dir, timeout=PREFLIGHT_TIMEOUT)
        answer = _last_json(done.stdout)
        if answer is None:
            raise FleetError(f"preflight on {host} failed: {self._engine_failure(host, paths, done.stderr)}")
        gpus = answer.get("cuda_devices") or answer.get("gpus") or []
        ok = bool(answer.get("ok"))
        problems = list(answer.get("problems") or [])
        if answer.get("missing") and "/" not in self.host(host).python:   # a bare python3 from PATH
            problems.append(f"or set python = \"~/venv/bin/python\" (a Python that has them) under [hosts.{host}] "
                            f"in {self.config.source}, then sync")
        data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
        if data.get("exists") is False:
            problems.append(self.data_route(host))
        message = (f"{host}: Python {answer.get('python_version')} has everything; "
                   f"GPUs: {', '.join(gpus) or 'none (' + str(answer.get('gpu_note')) + ')'}" if ok
                   else f"{host}: " + "; ".join(problems or ["not ready"]))
        return PreflightResult(host, ok, str(answer.get("python")), str(answer.get("python_version")),
                               dict(answer.get("modules") or {}), list(answer.get("missing") or []),
                               list(gpus), problems, message)

    def data_route(self, host: str) -> str:
        """How to give `host` its dataset: make a synthetic one there, or what to copy where."""
        h, paths = self.host(host), self.paths(host)
        dataset = self.config.dataset_for(h)
        if dataset.kind == "synthetic":
            return (f"make it there with `lenstui synth --host {host}` (renders the synthetic dataset "
                    f"{dataset.name!r} into {paths.data_root} on {host}; sync first)")
        sources = [self.paths(o).data_root for o, other in self.config.hosts.items()
                   if other.transport == "local" and other.enabled and self.config.dataset_for(other).name == dataset.name]
        source = sources[0] if sources else "<the folder holding its train/ val/ test/ shards>"
        target = f"{h.ssh_host or host}:{paths.data_root}" if h.transport != "local" else paths.data_root
        route = (f"copy the shards of dataset {dataset.name!r} there, e.g. `rsync -a {source}/ {target}/` "
                 f"(the folders train/, val/ and test/); or, if {host} keeps them elsewhere, set "
                 f"data_root = \"/that/folder\" under [hosts.{host}] in {self.config.source}")
        synthetic = [name for name, d in self.config.datasets.items() if d.kind == "synthetic"]
        if synthetic:   # a new user with only the demo data has no shards to copy: say the other way
            route += (f"; or, to try the plan without real shards, set dataset = \"{synthetic[0]}\" under "
                      f"[hosts.{host}] and run `lenstui synth --host {host}`")
        return route

    def synth(self, host: str) -> str:
        """Make the host's synthetic dataset on the host (unless a complete one is there); its last words."""
        h, paths = self.host(host), self.paths(host)
        dataset = self.config.dataset_for(h)
        if dataset.kind != "synthetic":
            raise FleetError(f"{host} uses dataset {dataset.name!r}, real shards: nothing to make. "
                             + self.data_route(host), exitcodes.BAD_INPUT)
        argv = [paths.python, "-m", "engine.synth", "--config", paths.config_file, "--host", host, "--if-missing"]
        with _as_fleet_error(f"synth on {host}"):
            done = self.transport(host).run(argv, cwd=paths.work_dir, timeout=SYNTH_TIMEOUT)
        if done.rc != 0:
            raise FleetError(f"synth on {host} failed: {self._engine_failure(host, paths, done.stderr)}",
                             exitcodes.BAD_INPUT if done.rc == 2 else exitcodes.REFUSED)
        return f"{host}: {last_line(done.stdout) or 'done'}"

    def cutouts(self, exp_id: str, host: str, factor: int = 1) -> dict[str, Any]:
        """A few val examples of `exp_id`'s data view on `host`, raw and preprocessed, as RGB rows
        (`python -m engine.data.cutouts` run there: the data stays where it is)."""
        try:
            exp = self.config.experiment(exp_id)
            if exp.base is not None:
                exp = self.config.experiment(exp_id, exp.base)
        except ConfigError as exc:
            raise FleetError(str(exc), exitcodes.BAD_INPUT) from None
        paths = self.paths(host)
        argv = [paths.python, "-m", "engine.data.cutouts", "--data-root", paths.data_root, "--mode", exp.data_mode,
                "--preprocessing", exp.preprocessing, "--factor", str(max(1, int(factor))),
                "--config", paths.config_file, "--host", host]
        return self._engine_call(host, argv, CUTOUTS_TIMEOUT, "cutouts")

    def fetch(self, exp_id: str, host: str, dest: Path, checkpoints: bool = False) -> Path:
        """Copy the run directory's metrics, run info and log (and checkpoints if asked) to dest/<exp_id>/."""
        self._check_id(exp_id)
        t, paths = self.transport(host), self.paths(host)
        remote_dir = f"{paths.runs_root.rstrip('/')}/{exp_id}"
        wanted = set(rundir.RUN_FILES) | ({rundir.BEST_CKPT, rundir.LAST_CKPT} if checkpoints else set())
        local_dir = Path(dest) / exp_id
        with _as_fleet_error(f"fetch from {host}"):
            try:
                names = t.list_dir(remote_dir)
            except RemoteFileNotFound:
                raise FleetError(f"{exp_id} has no run directory on {host} ({remote_dir})") from None
            for name in sorted(n for n in names if n in wanted):
                t.get_file(f"{remote_dir}/{name}", local_dir / name)
        return local_dir


def _last_json(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object (engine CLIs print one)."""
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _lacks_serve(stderr: str) -> bool:
    """Whether engine.status refused --serve as an unknown option (argparse's words): an engine before it."""
    return "unrecognized arguments" in stderr and "--serve" in stderr


def _version(text: object) -> tuple[int, ...]:
    """(major, minor) of a version string; (0,) when it is not one."""
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (0,)


def _old_engine(host: str, status: dict[str, Any]) -> str | None:
    """The message for a host whose engine is older (major.minor) than this lenstui's, else None."""
    theirs = status.get("engine_version")
    if _version(theirs) >= _version(ENGINE_VERSION):
        return None
    need = ".".join(str(p) for p in _version(ENGINE_VERSION))
    return f"host {host} runs engine {theirs}, this lenstui needs ≥ {need}; run `lenstui sync --host {host}`"
