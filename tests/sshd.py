"""Real OpenSSH servers on loopback for the remote-control tests, and a stand-in training run.

`SshLab` starts one `sshd` per "host" (own port, own host key, own work and
runs folders under tmp), writes the client's ssh config and known_hosts, and
can stop, restart (same port, same key), freeze and thaw a server. Tests skip
only when sshd is not installed (Debian package: openssh-server).

The stand-in is a fake `engine/train.py` (what `python -m engine.train` runs) for a host's work_dir: it behaves like
a training run towards the protocol (run.json, metrics.json, a grandchild in
its process group, SIGTERM -> `aborted`) without torch, so process-group tests
take seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def sshd_missing() -> str | None:
    """Why the SSH tests cannot run here, or None when they can."""
    if not os.access(SSHD, os.X_OK):
        return "OpenSSH sshd is not installed (apt-get install openssh-server)"
    if not os.access(SSH_KEYGEN, os.X_OK):
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    """An ed25519 key pair at `path` (no passphrase); returns the public key line."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path.with_suffix(".pub").read_text().strip()


def _children(pid: int) -> list[int]:
    """All descendants of `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class SshServer:
    """One sshd on 127.0.0.1 standing for one host."""

    name: str
    root: Path
    authorized_keys: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    frozen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.work_dir = self.root / "work"
        self.runs_root = self.root / "runs"
        self.work_dir.mkdir(exist_ok=True)
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.host_pub = keygen(self.host_key)
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        lines = [f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
                 f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized_keys}",
                 "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "PubkeyAuthentication yes", "Subsystem sftp internal-sftp", "AllowTcpForwarding yes",
                 "MaxSessions 100", "MaxStartups 100", "LogLevel VERBOSE"]
        if os.geteuid() == 0:
            lines.append("PermitRootLogin yes")
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def known_hosts_line(self) -> str:
        kind, b64 = self.host_pub.split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}"

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on port {self.port} did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill the server and every session it serves, as a host that goes down."""
        if self.proc is None:
            return
        self.thaw()
        for pid in reversed(_children(self.proc.pid)):
            if _is_sshd(pid):
                _signal(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server and its sessions: the TCP link stays up but nothing answers."""
        assert self.proc is not None
        self.frozen = [self.proc.pid] + [p for p in _children(self.proc.pid) if _is_sshd(p)]
        for pid in self.frozen:
            _signal(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.frozen:
            _signal(pid, signal.SIGCONT)
        self.frozen = []


def _is_sshd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd")
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class SshLab:
    """Several sshd "hosts", a client key, an ssh config and a known_hosts that trusts them."""

    def __init__(self, root: Path, names: tuple[str, ...] = ("h1", "h2", "h3")) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.client_key = root / "client_key"
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text(keygen(self.client_key) + "\n")
        self.servers = {n: SshServer(n, root / n, self.authorized_keys) for n in names}
        self.ssh_config = root / "ssh_config"
        self.known_hosts = root / "known_hosts"
        self.user = _user()
        entries = []
        for s in self.servers.values():
            entries += [f"Host {s.name}", "  HostName 127.0.0.1", f"  Port {s.port}", f"  User {self.user}",
                        f"  IdentityFile {self.client_key}", "  IdentitiesOnly yes", ""]
        self.ssh_config.write_text("\n".join(entries))
        self.trust_all()

    def trust_all(self) -> None:
        self.known_hosts.write_text("".join(s.known_hosts_line + "\n" for s in self.servers.values()))

    def start(self) -> "SshLab":
        for s in self.servers.values():
            s.start()
        return self

    def close(self) -> None:
        for s in self.servers.values():
            s.stop()

    def options(self, **overrides: object):
        from lenstui.transport import SshOptions

        return SshOptions(ssh_config=self.ssh_config, known_hosts=self.known_hosts, system_known_hosts=None,
                          **overrides)

    def env(self) -> dict[str, str]:
        """Environment for a `lenstui` subprocess that uses this lab's ssh config and known_hosts."""
        env = dict(os.environ)
        env.update(LENSTUI_SSH_CONFIG=str(self.ssh_config), LENSTUI_KNOWN_HOSTS=str(self.known_hosts))
        env.pop("SSH_AUTH_SOCK", None)  # only the lab's key, never the developer's agent
        return env

    def write_config(self, path: Path, local_runs: Path, local_work: Path | None = None,
                     dataset_root: str = "data/none") -> Path:
        """An experiments.toml: the real plan with hosts `local` and one ssh host per server."""
        hosts = [local_host_toml(local_runs, local_work)]
        for s in self.servers.values():
            hosts.append(f'[hosts.{s.name}]\ntransport = "ssh"\nssh_host = "{s.name}"\n'
                         f'work_dir = "{s.work_dir}"\npython = "{sys.executable}"\n'
                         f'runs_root = "{s.runs_root}"\ndataset = "lab"\n')
        return write_config(path, hosts, dataset_root)


def local_host_toml(runs_root: Path, work_dir: Path | None = None) -> str:
    """A [hosts.local] table running this Python in `work_dir` (default: the project)."""
    return (f'[hosts.local]\ntransport = "local"\nwork_dir = "{work_dir or PROJECT_ROOT}"\n'
            f'python = "{sys.executable}"\nruns_root = "{runs_root}"\ndataset = "lab"\n')


def write_config(path: Path, host_tables: list[str], dataset_root: str = "data/none") -> Path:
    """The real plan (experiments.toml) with its datasets and hosts replaced by `host_tables`."""
    kept, skipping = [], False
    for line in (PROJECT_ROOT / "experiments.toml").read_text().splitlines():
        if line.startswith("["):
            skipping = line.startswith(("[datasets.", "[hosts."))
        if not skipping:
            kept.append(line)
    plan = "\n".join(kept) + "\n"
    dataset = f'[datasets.lab]\nkind = "synthetic"\nroot = "{dataset_root}"\nscale = 0.01\nseed = 1\n'
    path.write_text(plan + "\n".join([dataset, *host_tables]))
    return path


def _user() -> str:
    import getpass

    return getpass.getuser()


@pytest.fixture
def ssh_lab(tmp_path_factory: pytest.TempPathFactory):
    """Three running sshd hosts (h1, h2, h3); skipped only when sshd is not installed."""
    reason = sshd_missing()
    if reason:
        pytest.skip(reason)
    lab = SshLab(tmp_path_factory.mktemp("lab")).start()
    try:
        yield lab
    finally:
        lab.close()


# ---------------------------------------------------------------------------
# The stand-in training run

STANDIN_TRAIN = r'''"""Stand-in for engine.train in tests: the run-directory protocol without torch."""
import argparse, os, signal, subprocess, sys, time
from pathlib import Path
from engine.protocol import rundir
from engine.config import load_config

p = argparse.ArgumentParser()
p.add_argument("--experiment", required=True)
p.add_argument("--host", required=True)
p.add_argument("--config", required=True)
p.add_argument("--base")
p.add_argument("--epochs", type=int, default=1000)
p.add_argument("--epoch-seconds", type=float, default=0.2)
p.add_argument("--ignore-term", action="store_true")
a = p.parse_args()
cfg = load_config(a.config)
host = cfg.host(a.host)
root = Path(os.path.expanduser(host.runs_root_path))
d = rundir.run_dir(root, a.experiment)
lock = rundir.inherited_run_lock()
if lock is None:
    lock = rundir.acquire_run_lock(d)
me = rundir.process_identity(os.getpid())
rundir.write_run_info(d, {**rundir.identity_record(me), "experiment": a.experiment, "host": a.host,
                          "pgid": os.getpgid(0), "status": "running", "lock_inherited": bool(os.environ.get(rundir.LOCK_FD_ENV)),
                          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
m = rundir.new_metrics(a.experiment, a.epochs, {"epochs": a.epochs})
rundir.write_metrics(d, m)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
(d / "grandchild.pid").write_text(str(grandchild.pid))

def stop(signum, frame):
    if a.ignore_term:
        print("stand-in: ignoring SIGTERM", flush=True)
        return
    m["status"] = "aborted"
    rundir.write_metrics(d, m)
    print("stand-in: aborted", flush=True)
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
print(f"stand-in {a.experiment} on {a.host}: pid {os.getpid()} pgid {os.getpgid(0)}", flush=True)
for epoch in range(a.epochs):
    time.sleep(a.epoch_seconds)
    m["history"].append({"epoch": epoch + 1, "train_loss": 1.0 / (epoch + 1), "val_auroc": 0.5 + 0.01 * epoch,
                         "val_loss": 0.7, "learning_rate": 1e-4, "epoch_time_sec": a.epoch_seconds})
    rundir.write_metrics(d, m)
    print(f"epoch {epoch} done", flush=True)
m["status"] = "done"
rundir.write_metrics(d, m)
grandchild.kill()
'''


def install_engine(work_dir: Path, standin: bool = True) -> None:
    """Copy the real engine into `work_dir` and, unless told not to, replace train.py by the stand-in."""
    dest = work_dir / "engine"
    shutil.copytree(PROJECT_ROOT / "engine", dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if standin:
        (dest / "train.py").write_text(STANDIN_TRAIN)


def group_alive(pgid: int) -> list[int]:
    """Live, non-zombie processes of a process group (what abort must leave empty)."""
    from engine.protocol.launch import _group_members

    return _group_members(pgid)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextmanager
def running_lab(root: Path, names: tuple[str, ...] = ("h1", "h2")) -> Iterator[SshLab]:
    """Started OpenSSH servers under `root`, closed afterwards; skips only when sshd is not installed."""
    reason = sshd_missing()
    if reason:
        pytest.skip(reason)
    lab = SshLab(root, names=names).start()
    try:
        yield lab
    finally:
        lab.close()
