"""Opening one authenticated paramiko connection, directly or through ProxyJump gateways or a ProxyCommand.

Host keys: the system and user known_hosts are loaded; an unknown key is refused with its SHA256
fingerprint and the command that trusts it (`lenstui trust HOST`), a changed one with how to
remove the old; nothing is ever accepted silently. Every failure becomes a TransportError in words.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import paramiko

from lenstui.transport import SshOptions
from lenstui.transport.base import AuthError, HostKeyError, HostUnreachable, TransportError
from lenstui.transport.ssh_config import Closable, Endpoint, ProxyCommandLink, _parse_hop, resolve_endpoint


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: SHA256:base64, unpadded."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says which key was refused and how to trust it."""

    def __init__(self, name: str, known_hosts: Path) -> None:
        self.name, self.known_hosts = name, known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"{self.name}: the host key of {hostname} is unknown ({key.get_name()} {fingerprint(key)}); "
            f"refused. If that fingerprint is the server's, trust it with `lenstui trust {self.name}` "
            f"(it is then added to {self.known_hosts})")

def _client(name: str, options: SshOptions) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if options.system_known_hosts and options.system_known_hosts.is_file():
        client.load_system_host_keys(str(options.system_known_hosts))
    if options.known_hosts.is_file():
        try:
            client.get_host_keys().load(str(options.known_hosts))
        except Exception as exc:
            raise HostKeyError(f"{options.known_hosts}: cannot read known_hosts: {exc}") from None
    client.set_missing_host_key_policy(_RefuseUnknownKey(name, options.known_hosts))
    return client

def _connect_client(name: str, ep: Endpoint, options: SshOptions, sock: Any = None) -> paramiko.SSHClient:
    """Open one authenticated connection; every failure becomes a TransportError in words."""
    client = _client(name, options)
    where = f"{ep.user}@{ep.hostname}:{ep.port}"
    try:
        client.connect(ep.hostname, port=ep.port, username=ep.user,
                       key_filename=[f for f in ep.identity_files if os.path.exists(f)] or None,
                       timeout=options.connect_timeout, banner_timeout=options.connect_timeout,
                       auth_timeout=options.connect_timeout, channel_timeout=options.connect_timeout,
                       allow_agent=True, look_for_keys=not ep.identities_only, sock=sock)
    except TransportError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"{name}: the host key of {ep.known_hosts_entry} CHANGED: it presents {exc.key.get_name()} "
            f"{fingerprint(exc.key)} but {options.known_hosts} has {fingerprint(exc.expected_key)}; refused. "
            f"If the host was reinstalled, remove the old key with `ssh-keygen -R '{ep.known_hosts_entry}' "
            f"-f {options.known_hosts}` and run `lenstui trust {name}`") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        tried = ", ".join(ep.identity_files) or "default keys"
        raise AuthError(f"{name}: {where} refused our credentials ({exc}); tried the ssh-agent and {tried}. "
                        f"The user {ep.user} comes from {ep.user_from or 'the gateway line'}; check it and "
                        f"IdentityFile for {ep.alias} in {options.ssh_config}") from None
    except socket.gaierror:
        client.close()
        raise HostUnreachable(f"{name}: cannot resolve host name {ep.hostname!r}") from None
    except paramiko.ssh_exception.NoValidConnectionsError:
        client.close()
        raise HostUnreachable(f"{name}: connection to {where} refused (is sshd running there?)") from None
    except (socket.timeout, TimeoutError):
        client.close()
        raise HostUnreachable(f"{name}: no answer from {where} within {options.connect_timeout:g} s") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        client.close()
        raise HostUnreachable(f"{name}: cannot connect to {where}: {str(exc) or type(exc).__name__}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(options.keepalive_interval)
    if isinstance(transport.sock, socket.socket):  # through a gateway it is a channel: the gateway's has it
        # Small messages (a status request after paramiko's window adjusts) would otherwise wait for the
        # server's delayed ACK: +40 ms on one poll in five, measured on loopback. OpenSSH's ssh does the same.
        try:
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    return client

def _open_chain(name: str, ep: Endpoint, options: SshOptions) -> tuple[paramiko.SSHClient, list[Closable]]:
    """Connect to `ep`, through its ProxyJump gateways or ProxyCommand if any; returns (client, what to
    close after it: gateway clients or the ProxyCommand link)."""
    if ep.proxy_command:
        link = ProxyCommandLink(name, ep.proxy_command)
        try:
            return _connect_client(name, ep, options, link.sock), [link]
        except TransportError as exc:
            raise link.failed(exc) from None
        except BaseException:
            link.close()
            raise
    if not ep.proxy_jump:
        return _connect_client(name, ep, options), []
    last, gateways = _open_chain_gateways(name, ep, options)
    try:
        return _connect_client(name, ep, options, _tunnel(name, last, ep, options)), gateways
    except BaseException:
        for gw in gateways:
            gw.close()
        raise

def _tunnel(name: str, gateway: paramiko.SSHClient, ep: Endpoint, options: SshOptions) -> paramiko.Channel:
    transport = gateway.get_transport()
    assert transport is not None
    try:
        return transport.open_channel("direct-tcpip", (ep.hostname, ep.port), ("127.0.0.1", 0),
                                      timeout=options.connect_timeout)
    except (paramiko.SSHException, OSError) as exc:
        raise HostUnreachable(f"{name}: the gateway could not reach {ep.hostname}:{ep.port} ({exc})") from None

def _open_chain_gateways(name: str, ep: Endpoint,
                         options: SshOptions) -> tuple[paramiko.SSHClient, list[paramiko.SSHClient]]:
    """Connect through every ProxyJump hop of `ep`; returns (last gateway, all gateways)."""
    gateways: list[paramiko.SSHClient] = []
    try:
        for hop in ep.proxy_jump:
            hop_name, hop_user, hop_port = _parse_hop(hop)
            hop_ep = resolve_endpoint(hop_name, options, user=hop_user, port=hop_port)
            sock = _tunnel(name, gateways[-1], hop_ep, options) if gateways else None
            gateways.append(_connect_client(f"{name} (via gateway {hop_name})", hop_ep, options, sock))
        return gateways[-1], gateways
    except BaseException:
        for gw in gateways:
            gw.close()
        raise
