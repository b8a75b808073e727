"""Where a data root's manifests and stamp caches go.

A configured folder (`[hosts.X] cache_dir`, or a command's --cache-dir) is used as given and
must be writable. Without one, the default is `<data_root>/.lenstui-cache`, where the data root
is writable; a data root the run's user cannot write (a shared or read-only data folder, as on
many GPU hosts) gets a folder of its own under the user's cache, `~/.cache/lenstui/` (or
`$XDG_CACHE_HOME/lenstui/`), named for the data root. Whichever it is, `CacheDir.reason` says
why, and every command prints it: the choice is never silent.

Torch-free and NumPy-free.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.files import CacheError

DEFAULT_NAME = ".lenstui-cache"
USER_CACHE_APP = "lenstui"


@dataclass(frozen=True)
class CacheDir:
    """The cache folder of one data root, and why it is that one."""

    path: Path
    reason: str

    @property
    def manifests(self) -> Path:
        return self.path / "manifests"

    @property
    def stamps(self) -> Path:
        return self.path / "stamps"


def user_cache_for(data_root: str | Path) -> Path:
    """`~/.cache/lenstui/<name>-<hash>`: one folder per data root (its resolved path), under the user's cache."""
    root = Path(data_root).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return base / USER_CACHE_APP / f"{root.name or 'root'}-{digest}"


def writable_problem(folder: Path) -> str | None:
    """None when `folder` can be created and written (a file made and removed there); else why not.

    A real write, not os.access: root passes every permission check, but not a read-only mount.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def resolve_cache_dir(data_root: str | Path, configured: str | Path | None = None, *,
                      setting: str = "cache_dir") -> CacheDir:
    """The cache folder for `data_root`: `configured` if given, else the default (see the module doc).

    `setting` names where `configured` came from (e.g. "hosts.lambda.cache_dir in experiments.toml"
    or "--cache-dir"), for the message when it cannot be written.
    """
    if configured is not None:
        path = Path(os.path.expanduser(str(configured)))
        problem = writable_problem(path)
        if problem:
            raise CacheError(f"{path}: cannot write the cache folder ({problem}); it is set by {setting}: point "
                             "it at a folder this user can write")
        return CacheDir(path, f"set by {setting}")
    inside = Path(data_root) / DEFAULT_NAME
    if not Path(data_root).is_dir():   # nothing to cache; the reader says the data root is missing
        return CacheDir(inside, "the default; the data root does not exist")
    problem = writable_problem(inside)
    if problem is None:
        return CacheDir(inside, "the default, inside the data root")
    fallback = user_cache_for(data_root)
    second = writable_problem(fallback)
    if second:
        raise CacheError(f"no writable cache folder: {inside} ({problem}) and {fallback} ({second}); set "
                         f"{setting} to a folder this user can write")
    return CacheDir(fallback, f"the data root cannot be written ({inside}: {problem}), so the user's cache; "
                              f"set {setting} to choose another")
