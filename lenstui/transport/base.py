"""The transport interface: run an argv on a host, talk to a long-lived one, move files, say whether the link is up.

Two implementations behave the same (toolong's watcher pattern): `local`
(subprocess + the filesystem) and `ssh` (paramiko). A transport only executes
argv lists and moves bytes; what runs on the host (status, launch, abort) lives
in the engine so both transports run the same code.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

TAIL_CHUNK = 1 << 20   # at most this many bytes per tail_file call
CACHE_DIRS = ("__pycache__",)   # folders list_files does not enter: Python writes them on the host


class TransportError(Exception):
    """Something went wrong talking to a host; the message is for the user."""


class HostUnreachable(TransportError):
    """The host cannot be reached or the link died (refused, timed out, reset)."""


class HostKeyError(TransportError):
    """The host's key is unknown or changed: refused, with how to trust it."""


class AuthError(TransportError):
    """The host refused our credentials."""


class CommandTimeout(TransportError):
    """A command did not finish in time, though the link is alive."""


class RemoteFileNotFound(TransportError, FileNotFoundError):
    """A file or directory does not exist on the host."""


STDERR_KEPT = 4096   # bytes of a stream program's stderr kept for its error message


def stderr_tail(f: Any) -> str:
    """The last STDERR_KEPT bytes of a program's stderr, kept in the temporary file `f`, as text."""
    try:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - STDERR_KEPT))
        return f.read().decode("utf-8", "replace")
    except (ValueError, OSError):   # already closed
        return ""


def last_line(text: str) -> str:
    """The last non-empty line of a program's stderr, or "no message"."""
    return text.strip().splitlines()[-1] if text.strip() else "no message"


class StreamClosed(TransportError):
    """The program behind a line stream ended: its exit status (None if unknown) and the end of its stderr."""

    def __init__(self, message: str, rc: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.rc, self.stderr = rc, stderr

    @classmethod
    def ended(cls, host: str, program: str, how: str, rc: int | None, stderr: str) -> "StreamClosed":
        """'<host>: `<program>` <how>: <stderr's last line>', with the status and stderr kept."""
        return cls(f"{host}: `{program}` {how}: {last_line(stderr)}", rc, stderr)


@dataclass(frozen=True)
class Completed:
    """A finished command: exit status and its output decoded as UTF-8."""

    rc: int
    stdout: str
    stderr: str


@dataclass
class PutStats:
    """What put_files did: the remote paths written and how many were already current."""

    sent: list[str] = field(default_factory=list)
    skipped: int = 0


def check_arg(value: str, what: str = "argument") -> str:
    """Refuse a value that a remote shell or a path could misread (NUL, newline)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} {value!r} contains a NUL or newline character; refused")
    return value


def check_argv(argv: Sequence[str]) -> list[str]:
    """An argv list with every element checked; an empty argv is a bug."""
    if not argv:
        raise ValueError("empty command")
    return [check_arg(a, "command argument") for a in argv]


class LineStream(ABC):
    """A program started on a host, spoken to one line at a time through its stdin and stdout.

    It lives as long as the stream: `close()`, or the link going down, closes its stdin,
    and a program written for this (`engine.status --serve`) exits on that.
    """

    @abstractmethod
    def send_line(self, line: str) -> None:
        """Write one line (no newline inside) to the program's stdin."""

    @abstractmethod
    def read_line(self, timeout: float) -> str:
        """The next line of the program's stdout, without its newline.

        StreamClosed when the program ended (with its exit status and stderr);
        CommandTimeout when no line came within `timeout` seconds though the link
        answers; HostUnreachable when the link died meanwhile.
        """

    @abstractmethod
    def close(self) -> None:
        """End the program (its stdin closed; killed if it lingers) and free what the stream holds."""


class Transport(ABC):
    """One host's link. Thread-safe: the app polls, launches and tails from worker threads."""

    name: str
    down_since: float | None = None   # time.time() of the first failure since the link was last up

    @property
    @abstractmethod
    def is_connected(self) -> bool:
        """Whether the link is up now (the local transport always is)."""

    @abstractmethod
    def connect(self) -> None:
        """Open the link if it is not open; raises TransportError with a human message."""

    @abstractmethod
    def run(self, argv: Sequence[str], *, cwd: str | None = None, timeout: float) -> Completed:
        """Run `argv` (no shell interprets it) in `cwd` and wait at most `timeout` seconds."""

    @abstractmethod
    def start(self, argv: Sequence[str], *, cwd: str | None = None) -> LineStream:
        """Start `argv` (no shell interprets it) in `cwd`, its stdin and stdout kept open as a LineStream."""

    @abstractmethod
    def read_file(self, path: str, max_bytes: int) -> bytes:
        """The whole file; TransportError if it is larger than `max_bytes`."""

    @abstractmethod
    def tail_file(self, path: str, offset: int) -> tuple[bytes, int]:
        """Bytes from `offset` to the end (a negative offset: the last -offset bytes) and the new offset.

        A file shorter than `offset` was replaced: reading restarts at 0.
        """

    @abstractmethod
    def list_dir(self, path: str) -> list[str]:
        """Names in a directory; RemoteFileNotFound if there is none."""

    @abstractmethod
    def list_files(self, path: str) -> list[str]:
        """Every regular file under the folder `path`, as a path relative to it ('protocol/rundir.py'),
        sorted; __pycache__ folders are not entered and links are not followed; [] when there is no
        such folder."""

    @abstractmethod
    def remove_files(self, paths: Sequence[str]) -> None:
        """Delete these files on the host (one already gone is no error)."""

    @abstractmethod
    def put_files(self, pairs: Sequence[tuple[Path, str]]) -> PutStats:
        """Copy local files to host paths, creating folders; skip files whose size and mtime match."""

    @abstractmethod
    def get_file(self, remote: str, local: Path) -> None:
        """Copy a host file to a local path (written atomically)."""

    @abstractmethod
    def close(self) -> None:
        """Close the link; a later call reconnects."""


def tail_window(size: int, offset: int) -> int:
    """Where a tail read starts, given the file's size and the caller's offset."""
    if offset < 0:
        return max(0, size + offset)
    return 0 if offset > size else offset
