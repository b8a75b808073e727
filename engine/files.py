"""One way to write a file or a folder that someone may be reading, and to read JSON another process writes.

- `replace_via_temp` / `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: a file is
  either the old one or the new one, never half (temp file beside it, fsync, rename, fsync of the
  folder); on any failure the temp file goes and the old file stays.
- `build_dir_once`: a folder built once under a lock and published by one rename (manifests,
  stamp caches); concurrent builders neither collide nor repeat the work.
- `replace_dir`: a finished folder put in place of an older one (the synthetic dataset).
- `read_json`: a JSON object, or why there is none (missing, garbled, half-written), never an
  exception; `json_safe`: NaN and infinities as null, so every JSON written is strict JSON.

Torch-free and NumPy-free: the engine on every host and lenstui on a laptop use it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"   # every timestamp a file holds: run.json, metrics.json, caches


def timestamp() -> str:
    """Now, as every file the engine writes records a time ('2026-02-07T10:00:00+0000')."""
    import time

    return time.strftime(TIME_FORMAT)


class CacheError(ValueError):
    """A cache folder cannot be made or read; the message names it and what to do."""


# ---------------------------------------------------------------------------
# Files


def replace_via_temp(path: Path, fill: Callable[[str], None]) -> None:
    """Let `fill` write a temp file beside `path`, then rename it over `path`.

    The one way every part writes a file that someone may be reading: `path` is
    either the old file or the new one, never half; on any failure the temp
    file is removed and the old file is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` durably (fsync) so that `path` is either the old file or the new one."""

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    replace_via_temp(Path(path), fill)
    fsync_dir(Path(path).parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with a stable, indented layout; NaN and infinities are written as null."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=1, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float as None and every key a string: what strict JSON can hold."""
    if isinstance(obj, float):
        return None if obj != obj or obj in (float("inf"), float("-inf")) else obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class JsonRead:
    """The result of reading a JSON file that another process may be writing."""

    data: dict[str, Any] | None
    error: str | None = None


def read_json(path: Path) -> JsonRead:
    """Read a JSON object; a missing, garbled or non-object file is an error, not an exception."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return JsonRead(None, None)
    except (OSError, UnicodeDecodeError) as exc:
        return JsonRead(None, f"{path}: cannot read: {exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return JsonRead(None, f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})")
    if not isinstance(data, dict):
        return JsonRead(None, f"{path}: expected a JSON object, found {type(data).__name__}")
    return JsonRead(data)


# ---------------------------------------------------------------------------
# Folders


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)   # the second builder waits, then finds it built
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_dir_once(final: Path, build: Callable[[Path], None]) -> bool:
    """Make `final` by calling build(tmp_dir) unless it exists; True when this call built it.

    A lock file beside it serialises builders; the build goes into a temp folder that
    is renamed into place, so a reader sees either nothing or the complete folder, and
    a builder that crashed leaves only a temp folder that the next builder removes.
    """
    if final.is_dir():
        return False
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{final.parent}: cannot create the cache folder ({exc.strerror}); point the cache "
                         "at a writable folder (cache_dir= / --cache-dir / --out)") from None
    with _locked(final.parent / f"{final.name}.lock"):
        if final.is_dir():
            return False
        for stale in final.parent.glob(f"{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out`; an earlier folder there is removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
