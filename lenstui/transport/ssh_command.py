"""The remote command line: every argv element checked (no NUL, no newline) and `shlex.quote`d, so no
value from the config or the user is ever shell syntax; a leading ~ keeps meaning the remote home."""

from __future__ import annotations

import shlex
from typing import Sequence

from lenstui.transport.base import check_arg, check_argv


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
