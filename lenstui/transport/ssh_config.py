"""Where and as whom to connect, from ~/.ssh/config: HostName, User, Port, IdentityFile, IdentitiesOnly,
ProxyJump and ProxyCommand (the command's stdin/stdout as a socket, run without a shell).

Explicit experiments.toml values win over ~/.ssh/config, as command-line options do for ssh; a
refused login says which user was used and where it came from.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from lenstui.transport import SshOptions
from lenstui.transport.base import HostUnreachable, TransportError, stderr_tail


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after ~/.ssh/config."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: tuple[str, ...]
    proxy_command: str | None = None   # tokens (%h %p %r) already expanded by paramiko
    user_from: str = ""                # where `user` came from, for the message when it is refused

    @property
    def known_hosts_entry(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

def _ssh_config(path: Path) -> paramiko.SSHConfig:
    if path.is_file():
        try:
            return paramiko.SSHConfig.from_path(str(path))
        except Exception as exc:  # paramiko raises assorted errors on bad files
            raise TransportError(f"{path}: cannot read the SSH config: {exc}") from None
    return paramiko.SSHConfig()

def resolve_endpoint(alias: str, options: SshOptions, user: str | None = None, port: int | None = None,
                     identity_file: str | None = None, config_dir: Path | None = None) -> Endpoint:
    """Apply ~/.ssh/config to `alias`; explicit experiments.toml values win, as command-line options do."""
    found = _ssh_config(options.ssh_config).lookup(alias)
    files = list(found.get("identityfile", []))
    if identity_file:
        p = Path(os.path.expanduser(identity_file))
        files.insert(0, str(p if p.is_absolute() or config_dir is None else config_dir / p))
    jump = found.get("proxyjump", "")
    hops = tuple(h.strip() for h in jump.split(",") if h.strip()) if jump and jump.lower() != "none" else ()
    command = (found.get("proxycommand") or "").strip() or None
    if hops and command:
        # OpenSSH takes whichever line comes first; paramiko's lookup no longer knows which did.
        raise TransportError(f"{options.ssh_config}: both ProxyJump ({jump}) and ProxyCommand ({command}) apply "
                             f"to {alias}: keep one of them for that host")
    config_user = found.get("user")
    if user:
        user_from = "the `user` key of this host in experiments.toml, which wins over ~/.ssh/config" + (
            f" (that says User {config_user}: remove the `user` line to use it)" if config_user and config_user != user
            else "")
    elif config_user:
        user_from = f"User in {options.ssh_config}"
    else:
        user_from = f"your local user name (neither experiments.toml nor {options.ssh_config} sets one)"
    return Endpoint(alias=alias, hostname=found.get("hostname", alias),
                    port=int(port or found.get("port", 22)),
                    user=user or config_user or getpass.getuser(),
                    identity_files=tuple(os.path.expanduser(f) for f in files),
                    identities_only=str(found.get("identitiesonly", "no")).lower() == "yes",
                    proxy_jump=hops, proxy_command=command, user_from=user_from)

def _parse_hop(hop: str) -> tuple[str, str | None, int | None]:
    """`[user@]host[:port]` of a ProxyJump list."""
    user = None
    if "@" in hop:
        user, hop = hop.rsplit("@", 1)
    port = None
    if hop.count(":") == 1:
        hop, port_text = hop.split(":")
        port = int(port_text)
    return hop, user, port

class Closable(Protocol):
    def close(self) -> None: ...

class ProxyCommandLink:
    """A host reached through ~/.ssh/config's ProxyCommand: the command's stdin and stdout are one
    end of a socket pair, and paramiko gets the other end, a real socket.

    A real socket gives paramiko what it expects of one: timeouts, and an end of file when the
    command exits (paramiko's own ProxyCommand wrapper spins on a dead command's pipe and never
    reaps it). The command runs without a shell, split like a command line, as every process
    lenstui starts; what it writes to stderr is kept for the error message when the link fails.
    """

    EXIT_WAIT = 0.5    # most relays (ssh -W, nc) exit at the end of their input
    STOP_WAIT = 2.0

    def __init__(self, name: str, command: str) -> None:
        self.command = command
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise TransportError(f"{name}: cannot split ProxyCommand {command!r}: {exc}") from None
        if not argv:
            raise TransportError(f"{name}: ProxyCommand is empty")
        ours, theirs = socket.socketpair()
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=self._stderr)
        except OSError as exc:
            ours.close()
            self._stderr.close()
            raise HostUnreachable(f"{name}: cannot start ProxyCommand {command!r}: "
                                  f"{exc.strerror or exc}") from None
        finally:
            theirs.close()
        self.sock = ours
        self.said = ""

    def close(self) -> None:
        """Close our end (the command sees end of file), then stop and reap the command."""
        if self._stderr.closed:
            return
        self.sock.close()
        try:
            self.process.wait(timeout=self.EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.process.terminate()   # as OpenSSH's ssh ends its ProxyCommand
            try:
                self.process.wait(timeout=self.STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.said = stderr_tail(self._stderr).strip()
        self._stderr.close()

    def failed(self, exc: TransportError) -> TransportError:
        """`exc` with what the command said, after closing the link (the reason is usually there)."""
        self.close()
        if not self.said or not isinstance(exc, HostUnreachable):
            return exc
        return HostUnreachable(f"{exc}; ProxyCommand {self.command!r} exited {self.process.returncode} "
                               f"saying: {self.said}")
