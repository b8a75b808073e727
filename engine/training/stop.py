"""A stop asked for by a signal: the training loop finishes its batch, saves last.pt and says `aborted`.

SIGTERM (lenstui's abort, or `kill`) or a first ctrl-c sets the request; the loop looks at it
after every batch and raises `Aborted` where the state on disk is consistent. A second ctrl-c
stops at once, without saving that epoch's progress.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any


@dataclass
class StopRequest:
    """Set by SIGTERM/SIGINT; the training loop looks at it after every batch."""

    signum: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second ctrl-c: stop now, without waiting for the batch
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

class Aborted(Exception):
    """A stop was requested; raised at a point where the state on disk is consistent."""
