"""The local transport: this machine, through subprocess (argv lists, never a shell) and the filesystem."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from engine.rundir import replace_via_temp

from lenstui.transport.base import (TAIL_CHUNK, CommandTimeout, Completed, PutStats, RemoteFileNotFound,
                                    Transport, TransportError, check_arg, check_argv, tail_window)


class LocalTransport(Transport):
    """Runs commands as child processes of lenstui; paths are this machine's paths."""

    def __init__(self, name: str = "local") -> None:
        self.name = name

    @property
    def is_connected(self) -> bool:
        return True

    def connect(self) -> None:
        pass

    def run(self, argv: Sequence[str], *, cwd: str | None = None, timeout: float) -> Completed:
        argv = check_argv(argv)
        if cwd is not None:
            check_arg(cwd, "working directory")
        try:
            done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"{self.name}: `{argv[0]}` did not finish within {timeout:g} s") from None
        except FileNotFoundError as exc:
            missing = cwd if cwd and not os.path.isdir(cwd) else argv[0]
            raise TransportError(f"{self.name}: {missing!r} not found ({exc.strerror})") from None
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot run {argv[0]!r}: {exc.strerror}") from None
        return Completed(done.returncode, done.stdout.decode("utf-8", "replace"),
                         done.stderr.decode("utf-8", "replace"))

    def read_file(self, path: str, max_bytes: int) -> bytes:
        path = os.path.expanduser(check_arg(path, "path"))
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise RemoteFileNotFound(f"{self.name}: {path} does not exist") from None
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot read {path}: {exc.strerror}") from None
        if len(data) > max_bytes:
            raise TransportError(f"{self.name}: {path} is larger than {max_bytes} bytes")
        return data

    def tail_file(self, path: str, offset: int) -> tuple[bytes, int]:
        path = os.path.expanduser(check_arg(path, "path"))
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = tail_window(size, offset)
                f.seek(start)
                data = f.read(min(size - start, TAIL_CHUNK))
        except FileNotFoundError:
            raise RemoteFileNotFound(f"{self.name}: {path} does not exist") from None
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot read {path}: {exc.strerror}") from None
        return data, start + len(data)

    def list_dir(self, path: str) -> list[str]:
        path = os.path.expanduser(check_arg(path, "path"))
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            raise RemoteFileNotFound(f"{self.name}: {path} does not exist") from None
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot list {path}: {exc.strerror}") from None

    def put_files(self, pairs: Sequence[tuple[Path, str]]) -> PutStats:
        stats = PutStats()
        for src, dest in pairs:
            dest_path = Path(os.path.expanduser(check_arg(dest, "path")))
            st = src.stat()
            try:
                if dest_path.resolve() == src.resolve():
                    stats.skipped += 1  # syncing a folder onto itself (the local host's work_dir)
                    continue
                cur = dest_path.stat()
                if cur.st_size == st.st_size and int(cur.st_mtime) == int(st.st_mtime):
                    stats.skipped += 1
                    continue
            except FileNotFoundError:
                pass
            try:
                dest_path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_copy(src, dest_path)
            except OSError as exc:
                raise TransportError(f"{self.name}: cannot write {dest_path}: {exc.strerror}") from None
            stats.sent.append(str(dest_path))
        return stats

    def get_file(self, remote: str, local: Path) -> None:
        src = Path(os.path.expanduser(check_arg(remote, "path")))
        if not src.exists():
            raise RemoteFileNotFound(f"{self.name}: {src} does not exist")
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            _atomic_copy(src, local)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot copy {src} to {local}: {exc.strerror}") from None

    def close(self) -> None:
        pass


def _atomic_copy(src: Path, dest: Path) -> None:
    """Copy with the mtime kept (so the next sync skips it), renamed into place."""
    replace_via_temp(dest, lambda tmp: shutil.copy2(src, tmp))
