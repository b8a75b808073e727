"""Every custom message of the app, in one place.

Events are past tense (something happened in a worker), requests are
imperative (a widget asks the app to act). Workers run in threads and report
back only through these; the UI thread alone changes state and draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class HostPolled(Message):
    """A poll of one host finished: its snapshot, or why there is none."""

    host: str
    snapshot: Any | None          # lenstui.fleet.HostSnapshot
    error: str | None = None      # an unexpected failure inside the poll itself

    def can_replace(self, message: Message) -> bool:
        # A newer poll of the same host supersedes an older one still queued.
        return isinstance(message, HostPolled) and message.host == self.host


@dataclass
class LaunchFinished(Message):
    """Fleet.launch returned (ok) or raised FleetError (not ok)."""

    exp_id: str
    host: str
    ok: bool
    message: str


@dataclass
class AbortFinished(Message):
    """Fleet.abort returned (ok) or raised (not ok)."""

    exp_id: str
    host: str
    ok: bool
    message: str


@dataclass
class SyncFinished(Message):
    """Fleet.sync of one host returned (ok) or raised (not ok)."""

    host: str
    ok: bool
    message: str


@dataclass
class ReportFinished(Message):
    """The report was written (ok, with its paths) or could not be (not ok)."""

    ok: bool
    message: str


@dataclass
class LogFetched(Message):
    """The tail of a run's stdout.log arrived."""

    exp_id: str
    host: str
    text: str
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogFetched) and (message.exp_id, message.host) == (self.exp_id, self.host)


@dataclass
class CutoutsLoaded(Message):
    """Cutout images are ready to draw: (title, [strips of each image]) per example, or an error."""

    panels: list[tuple[str, list[Any]]] = field(default_factory=list)
    error: str | None = None
