"""The SSH transport: one persistent paramiko connection per host, honouring ~/.ssh/config and known_hosts.

- Every argv element is validated (no NUL/newline) and `shlex.quote`d into the
  exec string, so no value from the config or the user is ever shell syntax.
- Host keys: system and user known_hosts are loaded; an unknown or changed key
  is refused with its SHA256 fingerprint and the command to trust it
  (`lenstui trust HOST`), never accepted silently.
- ~/.ssh/config: HostName, User, Port, IdentityFile, IdentitiesOnly,
  ProxyJump (through each gateway by a direct-tcpip channel) and ProxyCommand
  (the command's stdin/stdout as a socket; run without a shell); the ssh-agent.
- A dead link is noticed without waiting for TCP: keepalives are sent, and
  while a command is silent the link is probed by opening a channel (the server
  must answer); `max_missed` unanswered probes in a row close the link.
  Reconnection backs off exponentially up to RECONNECT_CAP seconds.
- A long-lived program (`start`, e.g. the status server) is one exec kept open:
  a request it leaves unanswered for reply_timeout counts as a missed reply, so a
  frozen host is noticed as fast as by a command.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shlex
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import paramiko

from engine.config import Host
from engine.files import replace_via_temp
from lenstui.transport import SshOptions
from lenstui.transport.base import (CACHE_DIRS, STDERR_KEPT, TAIL_CHUNK, AuthError, CommandTimeout, Completed, HostKeyError,
                                    HostUnreachable, LineStream, PutStats, RemoteFileNotFound, StreamClosed,
                                    Transport, TransportError, check_arg, check_argv, stderr_tail, tail_window)

RECONNECT_FIRST = 0.5     # seconds before the first retry after a failure
RECONNECT_CAP = 4.0       # backoff cap: with the app's 2 s refresh a returning host is back within ~7 s
SFTP_TIMEOUT = 10.0       # an SFTP request unanswered this long is checked against a probe


# ---------------------------------------------------------------------------
# Building the remote command


def quote_path(path: str) -> str:
    """Quote a path for the remote shell, keeping a leading ~ meaning the remote home."""
    check_arg(path, "path")
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def build_command(argv: Sequence[str], cwd: str | None = None) -> str:
    """The exec string for `argv` in `cwd`: every element quoted, nothing interpreted."""
    argv = check_argv(argv)
    command = "exec " + " ".join([quote_path(argv[0])] + [shlex.quote(a) for a in argv[1:]])
    return f"cd {quote_path(cwd)} && {command}" if cwd else command


def sftp_path(path: str) -> str:
    """A host path for SFTP, whose relative paths start in the remote home (so ~/x is x)."""
    check_arg(path, "path")
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: SHA256:base64, unpadded."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# ---------------------------------------------------------------------------
# Resolving a host through ~/.ssh/config


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


# ---------------------------------------------------------------------------
# Host keys


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


# ---------------------------------------------------------------------------
# The transport


class SshTransport(Transport):
    """One host over one persistent SSH connection (plus its gateways), reconnecting with backoff."""

    def __init__(self, host: Host, options: SshOptions, config_dir: Path | None = None) -> None:
        self.name = host.name
        self.host = host
        self.options = options
        self.config_dir = config_dir
        self.down_since: float | None = None
        self.last_error: str | None = None
        self._client: paramiko.SSHClient | None = None
        self._gateways: list[Closable] = []   # ProxyJump gateway clients, or the ProxyCommand link
        self._sftp: paramiko.SFTPClient | None = None
        self._conn_lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_kind: type = HostUnreachable   # the class of the last failed attempt

    # -- the link --------------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        return resolve_endpoint(self.host.ssh_host or self.name, self.options, self.host.user, self.host.port,
                                self.host.identity_file, self.config_dir)

    @property
    def is_connected(self) -> bool:
        client = self._client
        transport = client.get_transport() if client else None
        return bool(transport and transport.is_active())

    def connect(self) -> None:
        self._connected_client()

    def _connected_client(self) -> paramiko.SSHClient:
        with self._conn_lock:
            if self._client is not None and self.is_connected:
                return self._client
            if self._client is not None:  # it died since the last call: try again at once
                self._drop(f"{self.name}: the connection was closed by the host or the network")
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                # The same kind of error as the attempt that failed: a refused key stays refused (exit 3).
                kind = self._last_kind if self._last_kind in (HostKeyError, AuthError) else HostUnreachable
                raise kind(f"{self.last_error} (next try in {wait:.1f} s)")
            try:
                self._client, self._gateways = _open_chain(self.name, self.endpoint(), self.options)
            except TransportError as exc:
                self._failed(str(exc))
                self._last_kind = type(exc)
                raise
            self.down_since, self.last_error, self._backoff = None, None, 0.0
            return self._client

    def _mark_down(self, message: str) -> None:
        """Record why the host is unreachable, and since when (the first failure)."""
        self.last_error = message
        if self.down_since is None:
            self.down_since = time.time()

    def _failed(self, message: str) -> None:
        """A connection attempt failed: back off before the next one (0.5 s, doubling, capped)."""
        self._mark_down(message)
        self._backoff = min(RECONNECT_CAP, max(RECONNECT_FIRST, self._backoff * 2))
        self._next_attempt = time.monotonic() + self._backoff

    def _drop(self, message: str, client: paramiko.SSHClient | None = None) -> None:
        """Close the link (only if it is still `client`, when given) and record why."""
        with self._conn_lock:
            if client is not None and client is not self._client:
                return  # another thread already reconnected
            old, gateways = self._client, self._gateways
            self._client, self._gateways, self._sftp = None, [], None
            self._mark_down(message)
        for c in [old, *gateways]:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass

    def _probe(self, client: paramiko.SSHClient, attempts: int | None = None) -> bool:
        """Whether the server still answers: up to `attempts` (max_missed) channel opens, each within reply_timeout."""
        chan = self._open_channel(client, attempts)
        if chan is None:
            return False
        chan.close()
        return True

    def _open_channel(self, client: paramiko.SSHClient, attempts: int | None = None) -> paramiko.Channel | None:
        """A new session channel, or None after `attempts` (max_missed) opens unanswered within reply_timeout."""
        transport = client.get_transport()
        for _ in range(self.options.max_missed if attempts is None else attempts):
            if transport is None or not transport.is_active():
                return None
            try:
                return transport.open_session(timeout=self.options.reply_timeout)
            except (paramiko.SSHException, EOFError, OSError):
                continue  # a missed reply
        return None

    def _dead(self, client: paramiko.SSHClient, what: str) -> HostUnreachable:
        message = (f"{self.name}: the link died ({what}; no reply to {self.options.max_missed} probes of "
                   f"{self.options.reply_timeout:g} s)")
        self._drop(message, client)
        return HostUnreachable(message)

    def close(self) -> None:
        with self._conn_lock:
            old, gateways = self._client, self._gateways
            self._client, self._gateways, self._sftp = None, [], None
            self._next_attempt, self._backoff = 0.0, 0.0
        for c in [old, *gateways]:
            if c is not None:
                c.close()

    # -- commands --------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, cwd: str | None = None, timeout: float) -> Completed:
        command = build_command(argv, cwd)
        client = self._connected_client()
        chan = self._session(client)
        try:
            self._exec(client, chan, command)
            return self._collect(client, chan, argv[0], timeout)
        finally:
            chan.close()

    def start(self, argv: Sequence[str], *, cwd: str | None = None) -> LineStream:
        command = build_command(argv, cwd)
        client = self._connected_client()
        chan = self._session(client)
        try:
            self._exec(client, chan, command)
        except BaseException:
            chan.close()
            raise
        return _SshLineStream(self, client, chan, argv[0])

    def _session(self, client: paramiko.SSHClient) -> paramiko.Channel:
        """A new session channel; max_missed opens unanswered within reply_timeout mean the link is dead."""
        chan = self._open_channel(client)
        if chan is None:
            raise self._dead(client, "no channel opened")
        return chan

    def _exec(self, client: paramiko.SSHClient, chan: paramiko.Channel, command: str) -> None:
        """Send the exec request; paramiko waits for the server's reply without a deadline, so one is set here."""
        limit = self.options.reply_timeout * self.options.max_missed
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            chan.close()  # wakes exec_command, which then raises

        watchdog = threading.Timer(limit, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            what = f"no reply to a command request within {limit:g} s" if fired.is_set() else f"exec failed: {exc}"
            raise self._dead(client, what) from None
        finally:
            watchdog.cancel()

    def _collect(self, client: paramiko.SSHClient, chan: paramiko.Channel, program: str,
                 timeout: float) -> Completed:
        out, err = bytearray(), bytearray()
        start = last_data = time.monotonic()
        nap = 0.001
        while True:
            got = False
            while chan.recv_ready():
                out += chan.recv(65536)
                got = True
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                got = True
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            now = time.monotonic()
            if now - start > timeout:
                if self._probe(client):
                    raise CommandTimeout(f"{self.name}: `{program}` did not finish within {timeout:g} s")
                raise self._dead(client, "a command got no answer")
            if got:
                last_data, nap = now, 0.001
                continue
            if chan.closed or not self.is_connected:
                raise self._dead(client, "connection lost during a command")
            if now - last_data > self.options.reply_timeout:
                if not self._probe(client):
                    raise self._dead(client, "a command went silent")
                last_data = time.monotonic()
            time.sleep(nap)
            nap = min(nap * 2, 0.02)
        return Completed(chan.recv_exit_status(), out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- files (SFTP) ----------------------------------------------------------------

    def _sftp_call(self, what: str, fn: Any) -> Any:
        """Run `fn(sftp)` under the SFTP lock, turning link failures into HostUnreachable."""
        client = self._connected_client()
        with self._sftp_lock:
            try:
                if self._sftp is None or self._client is not client:
                    self._sftp = client.open_sftp()
                    self._sftp.get_channel().settimeout(SFTP_TIMEOUT)
                return fn(self._sftp)
            except FileNotFoundError:
                raise RemoteFileNotFound(f"{self.name}: {what}: no such file or directory") from None
            except PermissionError:
                raise TransportError(f"{self.name}: {what}: permission denied") from None
            except TransportError:
                raise
            except (socket.timeout, TimeoutError):
                self._sftp = None
                if self._probe(client):
                    raise CommandTimeout(f"{self.name}: {what}: no answer within {SFTP_TIMEOUT:g} s") from None
                raise self._dead(client, f"{what} got no answer") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._sftp = None
                if not self.is_connected:
                    raise self._dead(client, f"{what} failed") from None
                raise TransportError(f"{self.name}: {what}: {exc}") from None

    def read_file(self, path: str, max_bytes: int) -> bytes:
        remote = sftp_path(path)

        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(remote, "rb") as f:
                data = f.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise TransportError(f"{self.name}: {path} is larger than {max_bytes} bytes")
            return data

        return self._sftp_call(f"read {path}", read)

    def tail_file(self, path: str, offset: int) -> tuple[bytes, int]:
        remote = sftp_path(path)

        def tail(sftp: paramiko.SFTPClient) -> tuple[bytes, int]:
            with sftp.open(remote, "rb") as f:
                size = f.stat().st_size or 0
                start = tail_window(size, offset)
                f.seek(start)
                data = f.read(min(size - start, TAIL_CHUNK)) if size > start else b""
            return data, start + len(data)

        return self._sftp_call(f"read {path}", tail)

    def list_dir(self, path: str) -> list[str]:
        remote = sftp_path(path)
        return sorted(self._sftp_call(f"list {path}", lambda sftp: sftp.listdir(remote)))

    def list_files(self, path: str) -> list[str]:
        remote = sftp_path(path)

        def walk(sftp: paramiko.SFTPClient) -> list[str]:
            out: list[str] = []
            folders = [""]
            while folders:
                rel = folders.pop()
                try:
                    entries = sftp.listdir_attr(f"{remote}/{rel}".rstrip("/") if rel else remote)
                except FileNotFoundError:
                    if not rel:
                        return []
                    raise
                for entry in entries:   # the entries' own attributes (a link is a link, not followed)
                    name = f"{rel}/{entry.filename}" if rel else entry.filename
                    mode = entry.st_mode or 0
                    if stat.S_ISDIR(mode) and entry.filename not in CACHE_DIRS:
                        folders.append(name)
                    elif stat.S_ISREG(mode):
                        out.append(name)
            return sorted(out)

        return self._sftp_call(f"list {path}", walk)

    def remove_files(self, paths: Sequence[str]) -> None:
        def remove(sftp: paramiko.SFTPClient) -> None:
            for path in paths:
                try:
                    sftp.remove(sftp_path(check_arg(path, "path")))
                except FileNotFoundError:
                    pass

        self._sftp_call("remove files", remove)

    def put_files(self, pairs: Sequence[tuple[Path, str]]) -> PutStats:
        stats = PutStats()
        made: set[str] = set()

        def put(sftp: paramiko.SFTPClient) -> None:
            for src, dest in pairs:
                remote = sftp_path(dest)
                st = src.stat()
                try:
                    cur = sftp.stat(remote)
                    if cur.st_size == st.st_size and int(cur.st_mtime or 0) == int(st.st_mtime):
                        stats.skipped += 1
                        continue
                except FileNotFoundError:
                    pass
                _makedirs(sftp, os.path.dirname(remote), made)
                tmp = f"{remote}.lenstui-{os.getpid()}.tmp"
                with open(src, "rb") as f:
                    sftp.putfo(f, tmp, file_size=st.st_size, confirm=True)
                sftp.chmod(tmp, stat.S_IMODE(st.st_mode))
                sftp.utime(tmp, (int(st.st_atime), int(st.st_mtime)))
                sftp.posix_rename(tmp, remote)  # readers never see half a file
                stats.sent.append(dest)

        self._sftp_call("upload", put)
        return stats

    def get_file(self, remote: str, local: Path) -> None:
        source = sftp_path(remote)
        local.parent.mkdir(parents=True, exist_ok=True)

        def fill(tmp: str) -> None:
            with open(tmp, "wb") as f:
                self._sftp_call(f"download {remote}", lambda sftp: sftp.getfo(source, f))

        replace_via_temp(local, fill)


class _SshLineStream(LineStream):
    """A program started by one exec on the host's connection, kept open; silence is checked like a command's."""

    def __init__(self, owner: SshTransport, client: paramiko.SSHClient, chan: paramiko.Channel,
                 program: str) -> None:
        self.owner, self.client, self.chan, self.program = owner, client, chan, program
        self._pending = b""
        self._stderr = b""

    def send_line(self, line: str) -> None:
        check_arg(line, "stream line")
        options = self.owner.options
        try:
            self.chan.settimeout(options.reply_timeout * options.max_missed)
            self.chan.sendall(line.encode("utf-8") + b"\n")
        except socket.timeout:  # the server's window stays shut: it is not reading
            if self.owner._probe(self.client):
                raise CommandTimeout(f"{self.owner.name}: `{self.program}` does not read its input") from None
            raise self._lost("a command stopped reading") from None
        except (paramiko.SSHException, EOFError, OSError):
            raise self._ended() from None

    def read_line(self, timeout: float) -> str:
        owner, reply_timeout = self.owner, self.owner.options.reply_timeout
        deadline = quiet_since = time.monotonic()
        deadline += timeout
        while b"\n" not in self._pending:
            self._drain_stderr()
            now = time.monotonic()
            if now >= deadline:
                if owner._probe(self.client):
                    raise CommandTimeout(f"{owner.name}: `{self.program}` did not answer within {timeout:g} s")
                raise self._lost("a command got no answer")
            if now - quiet_since >= reply_timeout:
                # An answer is owed: its silence is one missed reply; the probes are the rest.
                if not owner._probe(self.client, owner.options.max_missed - 1):
                    raise self._lost("a command went silent")
                quiet_since = time.monotonic()
                continue
            self.chan.settimeout(max(0.001, min(deadline, quiet_since + reply_timeout) - now))
            try:
                data = self.chan.recv(1 << 16)
            except socket.timeout:
                continue
            except (paramiko.SSHException, EOFError, OSError):
                data = b""
            if not data:
                raise self._ended()
            self._pending += data
            quiet_since = time.monotonic()
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _drain_stderr(self) -> None:
        # Unread stderr would hold the channel's window shut; only its end is kept, for messages.
        while self.chan.recv_stderr_ready():
            self._stderr = (self._stderr + self.chan.recv_stderr(1 << 16))[-STDERR_KEPT:]

    def _lost(self, what: str) -> TransportError:
        """The link failed under the stream: HostUnreachable, or StreamClosed if a newer connection replaced it."""
        if self.owner._client is not self.client:
            return StreamClosed(f"{self.owner.name}: the connection `{self.program}` ran on was replaced")
        return self.owner._dead(self.client, what)

    def _ended(self) -> TransportError:
        """Output ended: the program exited (StreamClosed with its status), or the link went down."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            return self._lost("connection lost during a command")
        self.chan.status_event.wait(self.owner.options.reply_timeout)  # set by the exit status, or the close
        self._drain_stderr()
        rc: int | None = self.chan.recv_exit_status() if self.chan.exit_status_ready() else -1
        rc = None if rc == -1 else rc   # paramiko's -1: closed without an exit status
        stderr = self._stderr.decode("utf-8", "replace")
        how = f"exited with status {rc}" if rc is not None else "ended"
        return StreamClosed.ended(self.owner.name, self.program, how, rc, stderr)

    def close(self) -> None:
        try:
            self.chan.shutdown_write()   # end of stdin for the program, then the channel
            self.chan.close()
        except (paramiko.SSHException, EOFError, OSError):
            pass


def _makedirs(sftp: paramiko.SFTPClient, path: str, made: set[str]) -> None:
    """mkdir -p over SFTP, remembering what exists."""
    if not path or path in (".", "/") or path in made:
        return
    try:
        if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            made.add(path)
            return
    except FileNotFoundError:
        pass
    _makedirs(sftp, os.path.dirname(path), made)
    try:
        sftp.mkdir(path)
    except OSError:
        if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            raise
    made.add(path)


# ---------------------------------------------------------------------------
# `lenstui trust`


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
