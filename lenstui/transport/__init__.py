"""Transports: how lenstui reaches a host. One interface (base.Transport), two implementations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import Host
from lenstui.transport.base import (AuthError, CommandTimeout, Completed, HostKeyError, HostUnreachable,
                                    PutStats, RemoteFileNotFound, Transport, TransportError)

__all__ = ["AuthError", "CommandTimeout", "Completed", "HostKeyError", "HostUnreachable", "PutStats",
           "RemoteFileNotFound", "SshOptions", "Transport", "TransportError", "make_transport"]

SSH_CONFIG_ENV = "LENSTUI_SSH_CONFIG"     # like `ssh -F FILE`
KNOWN_HOSTS_ENV = "LENSTUI_KNOWN_HOSTS"   # like `-o UserKnownHostsFile=FILE`


@dataclass(frozen=True)
class SshOptions:
    """Where the SSH client configuration lives (tests and `--ssh-config` point elsewhere)."""

    ssh_config: Path
    known_hosts: Path
    system_known_hosts: Path | None = Path("/etc/ssh/ssh_known_hosts")
    connect_timeout: float = 5.0
    reply_timeout: float = 3.0     # a keepalive answered later than this counts as missed
    max_missed: int = 2            # missed replies in a row before the link is declared dead
    keepalive_interval: int = 5

    @classmethod
    def from_env(cls) -> "SshOptions":
        """~/.ssh/config and ~/.ssh/known_hosts, unless LENSTUI_SSH_CONFIG / LENSTUI_KNOWN_HOSTS say otherwise."""
        home = Path(os.path.expanduser("~/.ssh"))
        return cls(ssh_config=Path(os.environ.get(SSH_CONFIG_ENV) or home / "config"),
                   known_hosts=Path(os.environ.get(KNOWN_HOSTS_ENV) or home / "known_hosts"))


def make_transport(host: Host, config_dir: Path, ssh_options: SshOptions | None = None) -> Transport:
    """The transport for `host`; SSH transports connect lazily, on first use."""
    if host.transport == "local":
        from lenstui.transport.local import LocalTransport

        return LocalTransport(host.name)
    from lenstui.transport.ssh import SshTransport  # paramiko is imported only when a host needs it

    return SshTransport(host, ssh_options or SshOptions.from_env(), config_dir)
