"""`lenstui trust`: fetch a host's key without logging in, compare it with known_hosts, and add it when asked."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from engine.config import Host
from lenstui.transport import SshOptions
from lenstui.transport.base import HostUnreachable
from lenstui.transport.ssh_config import Closable, Endpoint, ProxyCommandLink, resolve_endpoint
from lenstui.transport.ssh_connect import _open_chain_gateways, _tunnel, fingerprint


@dataclass(frozen=True)
class ScannedKey:
    """A server's host key, and how it compares with known_hosts."""

    entry: str                 # the known_hosts name: host, or [host]:port
    key: paramiko.PKey
    key_type: str
    fingerprint: str
    state: str                 # "unknown", "known" or "changed"
    known_in: str | None
    stored_fingerprint: str | None

def scan_host_key(host: Host, options: SshOptions) -> ScannedKey:
    """Fetch `host`'s key (through its gateways, which must already be trusted) without logging in."""
    ep = resolve_endpoint(host.ssh_host or host.name, options, host.user, host.port, host.identity_file)
    gateways: list[Closable] = []
    try:
        sock: Any
        if ep.proxy_command:
            link = ProxyCommandLink(host.name, ep.proxy_command)
            gateways.append(link)
            sock = link.sock
        elif ep.proxy_jump:
            hops = Endpoint(ep.alias, ep.hostname, ep.port, ep.user, (), False, ep.proxy_jump)
            first, jumps = _open_chain_gateways(host.name, hops, options)
            gateways += jumps
            sock = _tunnel(host.name, first, ep, options)
        else:
            try:
                sock = socket.create_connection((ep.hostname, ep.port), timeout=options.connect_timeout)
            except OSError as exc:
                raise HostUnreachable(f"{host.name}: cannot connect to {ep.hostname}:{ep.port}: {exc}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=options.connect_timeout)
            key = transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            failure = HostUnreachable(f"{host.name}: SSH handshake with {ep.hostname}:{ep.port} failed: {exc}")
            raise (link.failed(failure) if ep.proxy_command else failure) from None
        finally:
            transport.close()
    finally:
        for gw in gateways:
            gw.close()
    state, known_in, stored = "unknown", None, None
    for path in (options.known_hosts, options.system_known_hosts):
        if path is None or not path.is_file():
            continue
        keys = paramiko.HostKeys(str(path)).lookup(ep.known_hosts_entry)
        if keys is None or key.get_name() not in keys:
            continue
        stored_key = keys[key.get_name()]
        known_in = str(path)
        if stored_key == key:
            state, stored = "known", fingerprint(stored_key)
            break
        state, stored = "changed", fingerprint(stored_key)
    return ScannedKey(ep.known_hosts_entry, key, key.get_name(), fingerprint(key), state, known_in, stored)

def add_known_host(path: Path, scan: ScannedKey) -> None:
    """Append the scanned key to a known_hosts file (created 0600 in a 0700 folder if absent)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{scan.entry} {scan.key_type} {scan.key.get_base64()}\n"
    existing = path.read_bytes() if path.exists() else b""
    with open(path, "ab") as f:
        if existing and not existing.endswith(b"\n"):
            f.write(b"\n")
        f.write(line.encode())
    os.chmod(path, 0o600)
