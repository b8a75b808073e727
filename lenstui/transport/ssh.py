"""The SSH transport: one persistent paramiko connection per host, honouring ~/.ssh/config and known_hosts.

- The exec string: ssh_command.py (every argv element quoted, nothing interpreted).
- ~/.ssh/config and ProxyCommand: ssh_config.py; connecting, gateways and host keys:
  ssh_connect.py (an unknown or changed key refused, never accepted silently);
  `lenstui trust`: trust.py.
- A dead link is noticed without waiting for TCP: keepalives are sent, and
  while a command is silent the link is probed by opening a channel (the server
  must answer); `max_missed` unanswered probes in a row close the link.
  Reconnection backs off exponentially up to RECONNECT_CAP seconds.
- A long-lived program (`start`, e.g. the status server) is one exec kept open:
  a request it leaves unanswered for reply_timeout counts as a missed reply, so a
  frozen host is noticed as fast as by a command.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import paramiko

from engine.config import Host
from engine.files import replace_via_temp
from lenstui.transport import SshOptions
from lenstui.transport.ssh_command import build_command, sftp_path
from lenstui.transport.ssh_connect import _open_chain
from lenstui.transport.ssh_config import Closable, Endpoint, resolve_endpoint
from lenstui.transport.base import (CACHE_DIRS, STDERR_KEPT, TAIL_CHUNK, AuthError, CommandTimeout, Completed, HostKeyError,
                                    HostUnreachable, LineStream, PutStats, RemoteFileNotFound, StreamClosed,
                                    Transport, TransportError, check_arg, tail_window)

RECONNECT_FIRST = 0.5     # seconds before the first retry after a failure
RECONNECT_CAP = 4.0       # backoff cap: with the app's 2 s refresh a returning host is back within ~7 s
SFTP_TIMEOUT = 10.0       # an SFTP request unanswered this long is checked against a probe


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

    def probe(self, client: paramiko.SSHClient, attempts: int | None = None) -> bool:
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

    def declare_dead(self, client: paramiko.SSHClient, what: str) -> HostUnreachable:
        message = (f"{self.name}: the link died ({what}; no reply to {self.options.max_missed} probes of "
                   f"{self.options.reply_timeout:g} s)")
        self._drop(message, client)
        return HostUnreachable(message)

    def is_current(self, client: paramiko.SSHClient) -> bool:
        """Whether `client` is still this host's connection (a reconnect replaces it)."""
        return self._client is client

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
            raise self.declare_dead(client, "no channel opened")
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
            raise self.declare_dead(client, what) from None
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
                if self.probe(client):
                    raise CommandTimeout(f"{self.name}: `{program}` did not finish within {timeout:g} s")
                raise self.declare_dead(client, "a command got no answer")
            if got:
                last_data, nap = now, 0.001
                continue
            if chan.closed or not self.is_connected:
                raise self.declare_dead(client, "connection lost during a command")
            if now - last_data > self.options.reply_timeout:
                if not self.probe(client):
                    raise self.declare_dead(client, "a command went silent")
                last_data = time.monotonic()
            time.sleep(nap)
            nap = min(nap * 2, 0.02)
        return Completed(chan.recv_exit_status(), out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- files (SFTP) ----------------------------------------------------------------

    def _open_sftp(self, client: paramiko.SSHClient, what: str) -> paramiko.SFTPClient:
        """The SFTP session every file operation uses; a server that will not start one is told apart
        from a dead link, because the fix is on the host: its sshd_config lacks the sftp subsystem."""
        try:
            sftp = client.open_sftp()
        except (paramiko.SSHException, EOFError) as exc:
            if not self.is_connected:
                raise
            raise TransportError(
                f"{self.name}: {what}: the SSH server would not start SFTP ({exc or type(exc).__name__}). "
                "lenstui moves files over SFTP: add `Subsystem sftp "
                "internal-sftp` (or the sftp-server path OpenSSH ships) to the host's sshd_config and "
                "restart sshd") from None
        sftp.get_channel().settimeout(SFTP_TIMEOUT)
        return sftp

    def _sftp_call(self, what: str, fn: Any) -> Any:
        """Run `fn(sftp)` under the SFTP lock, turning link failures into HostUnreachable."""
        client = self._connected_client()
        with self._sftp_lock:
            try:
                if self._sftp is None or self._client is not client:
                    self._sftp = self._open_sftp(client, what)
                return fn(self._sftp)
            except FileNotFoundError:
                raise RemoteFileNotFound(f"{self.name}: {what}: no such file or directory") from None
            except PermissionError:
                raise TransportError(f"{self.name}: {what}: permission denied") from None
            except TransportError:
                raise
            except (socket.timeout, TimeoutError):
                self._sftp = None
                if self.probe(client):
                    raise CommandTimeout(f"{self.name}: {what}: no answer within {SFTP_TIMEOUT:g} s") from None
                raise self.declare_dead(client, f"{what} got no answer") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._sftp = None
                if not self.is_connected:
                    raise self.declare_dead(client, f"{what} failed") from None
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
            if self.owner.probe(self.client):
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
                if owner.probe(self.client):
                    raise CommandTimeout(f"{owner.name}: `{self.program}` did not answer within {timeout:g} s")
                raise self._lost("a command got no answer")
            if now - quiet_since >= reply_timeout:
                # An answer is owed: its silence is one missed reply; the probes are the rest.
                if not owner.probe(self.client, owner.options.max_missed - 1):
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
        if not self.owner.is_current(self.client):
            return StreamClosed(f"{self.owner.name}: the connection `{self.program}` ran on was replaced")
        return self.owner.declare_dead(self.client, what)

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


