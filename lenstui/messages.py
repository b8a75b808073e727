"""Every custom message of the app, in one place.

Events are past tense (something happened in a worker); requests are imperative (a screen asks
the app to act: the app owns the Fleet, the workers and the dialogs). Workers run in threads
and report back only through these; the UI thread alone changes state and draws. Screens read
the app's latest state (its config, snapshots, runs) directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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


Action = Literal["launch", "abort", "sync", "report", "plan"]


@dataclass
class ActionFinished(Message):
    """A Fleet action run in a worker (engine.launch, abort, sync, the report) returned (ok) or raised
    (not ok); `message` is the result's words or the error's."""

    action: Action
    ok: bool
    message: str
    exp_id: str | None = None
    host: str | None = None


@dataclass
class PlanFactsGathered(Message):
    """The hosts' manifest checks and this checkout's code version arrived (lenstui/plan_run.py)."""

    facts: dict[str, Any]          # host -> its manifest check (engine.manifest --check), or None
    code_version: str
    error: str | None = None


@dataclass
class PlanPreviewReady(Message):
    """What Advance would do now (lenstui.plan_run.Preview), to confirm; or why it cannot say."""

    preview: Any | None
    error: str | None = None


# -- requests: a screen asks the app to act (the app owns the Fleet and the dialogs) -------------


@dataclass
class MainScreenReady(Message):
    """The main screen's widgets exist: the app may draw and start polling."""


@dataclass
class AbortRequested(Message):
    """Abort `exp_id` (on `host`, or wherever it runs): the app asks for confirmation first. `name`:
    which of its runs there (a seed replicate's <id>@seed<N>; the experiment's own run when None)."""

    exp_id: str | None = None
    host: str | None = None
    name: str | None = None


@dataclass
class LaunchRequested(Message):
    """Open the launch dialog for each (experiment, host, base[, extra arguments]), in turn, then confirm
    them together (a seed replicate's extra arguments hold its --seed)."""

    items: list[tuple]
    notes: list[str] = field(default_factory=list)


@dataclass
class DetailRequested(Message):
    """Open the run detail of `exp_id` (the matrix's selected row when None)."""

    exp_id: str | None = None


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
