"""Which engine code ran: one version string, the same in a checkout and on a host `lenstui sync` filled.

    git-<commit>[+dirty] engine-<hash>

`engine-<hash>` is a hash of the engine's own files (what sync pushes, `engine_files`), so two
hosts that report the same string run the same code whatever git says; `git-<commit>` names
the checkout it came from, `+dirty` when engine/ differs from that commit. Without git (a
copied tree) it is `engine-<hash>` alone.

On a host that sync filled there is no git: sync writes the version it pushed into
`engine/code_version.json` (`RECORD`), and `code_version` reads it back there, with when it
was synced. run.json's `code_version` (engine.train) and sync's message are this one string.
Torch-free and NumPy-free.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any, Sequence

from engine import ENGINE_VERSION
from engine.files import read_json, timestamp

ENGINE_DIR = Path(__file__).resolve().parent.parent    # engine/protocol/codeversion.py -> engine/
RECORD = "code_version.json"    # written by sync into the host's engine/, never into a checkout
SKIPPED_DIRS = ("__pycache__",)
SKIPPED_SUFFIXES = (".pyc",)


def engine_files(engine_dir: Path = ENGINE_DIR) -> list[Path]:
    """The engine's files, sorted: regular files under `engine_dir` but caches, hidden folders and RECORD."""
    out = []
    for dirpath, dirnames, filenames in os.walk(engine_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(SKIPPED_SUFFIXES) or (Path(dirpath) == engine_dir and name == RECORD):
                continue
            if stat.S_ISREG(path.lstat().st_mode):
                out.append(path)
    return out


def content_hash(files: Sequence[Path], engine_dir: Path = ENGINE_DIR) -> str:
    """12 hex digits of a hash over each file's path (relative to the project) and bytes."""
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f.relative_to(engine_dir.parent).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


def checkout_version(engine_dir: Path = ENGINE_DIR, files: Sequence[Path] | None = None) -> str:
    """`git-<commit>[+dirty] engine-<hash>` of the engine in `engine_dir` (no git: `engine-<hash>`)."""
    content = f"engine-{content_hash(engine_files(engine_dir) if files is None else files, engine_dir)}"
    root = engine_dir.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return content
        # Untracked files count: a new module that is not committed yet is code that runs.
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", engine_dir.name],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return content
    flag = "+dirty" if dirty.stdout.strip() else ""
    return f"git-{commit.stdout.strip()}{flag} {content}"


def code_version(engine_dir: Path = ENGINE_DIR) -> str:
    """The version of the engine in `engine_dir`: the one sync recorded there (and when), else the checkout's."""
    synced = read_json(engine_dir / RECORD).data or {}
    if isinstance(synced.get("code_version"), str):
        return f"{synced['code_version']} (synced {synced.get('synced_at', '?')})"
    return checkout_version(engine_dir)


def synced_version(engine_dir: Path = ENGINE_DIR) -> str | None:
    """The checkout version sync recorded in `engine_dir` (None: no record, e.g. a checkout)."""
    synced = read_json(engine_dir / RECORD).data or {}
    value = synced.get("code_version")
    return value if isinstance(value, str) else None


def record(version: str) -> dict[str, Any]:
    """What sync writes into a host's engine/RECORD for `version`."""
    return {"code_version": version, "engine_version": ENGINE_VERSION,
            "synced_at": timestamp(), "synced_from": socket.gethostname()}
