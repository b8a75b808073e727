"""The engine's side of stdout.log: every line once, a header per start, never truncated.

Launched by lenstui, the process's stdout already *is* `<run_dir>/stdout.log` (the
launcher appends to it), so a line printed is a line logged. Run by hand, stdout is a
terminal or some other file, so each line is printed and also appended to stdout.log.
Which case applies is decided by comparing the files themselves (device + inode), not
by a flag someone could forget: a line can never be written twice, and the log is only
ever opened for appending. A progress bar is drawn only on a terminal, never logged.

Torch-free.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

from engine.protocol.rundir import LAUNCH_HEADER


def same_file(stream: TextIO, path: Path) -> bool:
    """Whether `stream` writes to the file at `path` (false when either cannot be checked)."""
    try:
        a = os.fstat(stream.fileno())
        b = os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class RunLog:
    """Writes the run's readable lines to stdout and, when stdout is elsewhere, to stdout.log."""

    def __init__(self, path: Path, stream: TextIO | None = None) -> None:
        self.path = Path(path)
        self.stream = stream if stream is not None else sys.stdout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None if same_file(self.stream, self.path) else open(self.path, "a", encoding="utf-8")
        self._progress_shown = False
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, text: str) -> None:
        """One line (or several joined by newlines) to the terminal/launcher and the log."""
        if self._progress_shown:
            self.stream.write("\r\x1b[2K")
            self._progress_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()

    def header(self, title: str, fields: dict[str, object]) -> None:
        """A start header: a rule with the date and `title`, then one `key: value` per line."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        lines = [f"{LAUNCH_HEADER}{stamp}  {title} " + "=" * max(3, 60 - len(title))]
        lines += [f"  {key}: {value}" for key, value in fields.items()]
        self.line("\n".join(lines))

    def progress(self, text: str) -> None:
        """A transient status line, shown only on a terminal and never logged."""
        if self.is_tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._progress_shown = True

    def close(self) -> None:
        if self._progress_shown:
            self.stream.write("\n")
            self._progress_shown = False
        if self._file is not None:
            self._file.close()
            self._file = None
