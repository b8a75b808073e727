"""The local transport: this machine, through subprocess (argv lists, never a shell) and the filesystem."""

from __future__ import annotations

import os
import selectors
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from engine.files import replace_via_temp

from lenstui.transport.base import (CACHE_DIRS, TAIL_CHUNK, CommandTimeout, Completed, LineStream, PutStats,
                                    RemoteFileNotFound, StreamClosed, Transport, TransportError, check_arg,
                                    check_argv, stderr_tail, tail_window)

CLOSE_GRACE = 1.0    # seconds a stream program gets to exit on end of stdin before it is killed


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

    def start(self, argv: Sequence[str], *, cwd: str | None = None) -> LineStream:
        argv = check_argv(argv)
        if cwd is not None:
            check_arg(cwd, "working directory")
        return _LocalLineStream(self.name, argv, cwd)

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

    def list_files(self, path: str) -> list[str]:
        root = Path(os.path.expanduser(check_arg(path, "path")))
        if not root.is_dir():
            return []
        out = []
        try:
            for dirpath, dirnames, filenames in os.walk(root):   # links to folders are not followed
                dirnames[:] = [d for d in dirnames if d not in CACHE_DIRS]
                out += [(Path(dirpath) / n).relative_to(root).as_posix() for n in filenames
                        if stat.S_ISREG((Path(dirpath) / n).lstat().st_mode)]
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot list {root}: {exc.strerror}") from None
        return sorted(out)

    def remove_files(self, paths: Sequence[str]) -> None:
        for path in paths:
            target = os.path.expanduser(check_arg(path, "path"))
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise TransportError(f"{self.name}: cannot remove {target}: {exc.strerror}") from None

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


class _LocalLineStream(LineStream):
    """A child process with piped stdin and stdout; its stderr goes to a temporary file (nothing to drain)."""

    def __init__(self, name: str, argv: list[str], cwd: str | None) -> None:
        self.name, self.program = name, argv[0]
        self._stderr = tempfile.TemporaryFile()
        self._pending = b""
        self._lock = threading.Lock()
        try:
            # Not a new session: the program belongs to lenstui, and ends when its stdin does.
            self._proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr)
        except FileNotFoundError as exc:
            self._stderr.close()
            missing = cwd if cwd and not os.path.isdir(cwd) else argv[0]
            raise TransportError(f"{name}: {missing!r} not found ({exc.strerror})") from None
        except OSError as exc:
            self._stderr.close()
            raise TransportError(f"{name}: cannot run {argv[0]!r}: {exc.strerror}") from None

    def send_line(self, line: str) -> None:
        check_arg(line, "stream line")
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line.encode("utf-8") + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise self._ended() from None

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(f"{self.name}: `{self.program}` did not answer within {timeout:g} s")
            try:
                fd = self._proc.stdout.fileno()  # type: ignore[union-attr]
                with selectors.DefaultSelector() as sel:
                    sel.register(fd, selectors.EVENT_READ)
                    if not sel.select(left):
                        continue
                chunk = os.read(fd, 1 << 16)
            except (ValueError, OSError):  # closed by close() in another thread
                chunk = b""
            if not chunk:
                raise self._ended()
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _ended(self) -> StreamClosed:
        """The program's output ended: wait briefly for its exit status, read its stderr."""
        try:
            rc: int | None = self._proc.wait(timeout=CLOSE_GRACE)
        except subprocess.TimeoutExpired:
            rc = None
        stderr = stderr_tail(self._stderr)
        how = "was killed" if rc is not None and rc < 0 else f"exited with status {rc}" if rc is not None \
            else "closed its output"
        return StreamClosed.ended(self.name, self.program, how, rc, stderr)

    def close(self) -> None:
        with self._lock:
            proc = self._proc
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # end of input: a server exits by itself
            except OSError:
                pass
            try:
                proc.wait(timeout=CLOSE_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, self._stderr):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass


def _atomic_copy(src: Path, dest: Path) -> None:
    """Copy with the mtime kept (so the next sync skips it), renamed into place."""
    replace_via_temp(dest, lambda tmp: shutil.copy2(src, tmp))
