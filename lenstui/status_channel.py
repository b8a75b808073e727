"""One host's long-lived status server, `python -m engine.status --serve`, asked once per refresh.

Started once over the host's open connection (an SSH exec, or a local child
process), it answers each request line with one fresh status line, so a refresh
costs the probe and the transfer, not an exec and a Python start on the host.
Each run's history and gates travel only when they changed: the answer names
the ones left out, and this side puts back what it received last time.

Whatever goes wrong (the server exits, hangs, answers nonsense, the link dies)
closes the channel; the error goes to the caller, and the next `ask` starts a
new server. A server whose engine code was replaced (`lenstui sync`) says so and
exits, and is started again at once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from engine.protocol.status import SERVE_PROTOCOL   # the protocol this client speaks (torch-free module)
from lenstui.transport.base import LineStream, StreamClosed, Transport, TransportError

HELLO_LINES = 20       # lines of start-up noise (a chatty login shell) tolerated before the hello


class StatusChannel:
    """A status server on one host, started on first use; `ask` is one request and one answer."""

    def __init__(self, transport: Transport, argv: list[str], cwd: str | None) -> None:
        self.transport, self.argv, self.cwd = transport, list(argv), cwd
        self.host = transport.name
        self._stream: LineStream | None = None
        self._runs: dict[str, dict[str, Any]] | None = None   # the last answer's runs, whole
        self._next_id = 0
        self._final = False   # closed by its owner for good: no server is started again
        self._lock = threading.Lock()

    def ask(self, timeout: float) -> dict[str, Any]:
        """A status answer computed now; TransportError (StreamClosed if the server cannot start) otherwise.

        A server that ended since the last call (idle exit, its code replaced, the
        connection replaced) is started again once within the same call.
        """
        with self._lock:
            for attempt in (1, 2):
                fresh = self._stream is None
                try:
                    if fresh:
                        self._start(timeout)
                    return self._request(timeout)
                except _StartAgain as exc:
                    self.close()
                    if attempt == 2:
                        raise TransportError(f"{self.host}: {exc}") from None
                except StreamClosed:
                    self.close()
                    if fresh or attempt == 2:
                        raise
                except ProbeFailed:
                    raise  # the server is fine and goes on; so does the channel
                except TransportError:
                    self.close()
                    raise
            raise AssertionError("unreachable")

    def close(self, final: bool = False) -> None:
        """Stop the server (end of its stdin); the next `ask` starts another, unless `final`."""
        self._final = self._final or final
        stream, self._stream, self._runs = self._stream, None, None
        if stream is not None:
            stream.close()

    # -- inside ask (under the lock) -------------------------------------------------

    def _start(self, timeout: float) -> None:
        if self._final:  # a poll still in flight when its Fleet closed must not leave a server behind
            raise TransportError(f"{self.host}: the status channel is closed")
        stream = self.transport.start(self.argv, cwd=self.cwd)
        self._stream = stream   # _runs is None already: a new stream follows close() or __init__
        if self._final:  # closed while it started
            self.close()
            raise TransportError(f"{self.host}: the status channel is closed")
        deadline = time.monotonic() + timeout
        for _ in range(HELLO_LINES):
            line = stream.read_line(max(0.001, deadline - time.monotonic()))
            hello = _json_object(line)
            if hello is None or "serve" not in hello:
                continue  # a login shell's banner; the server's first line is its hello
            if hello["serve"] != SERVE_PROTOCOL:
                raise _Unexpected(f"{self.host}: engine.status --serve speaks protocol {hello['serve']!r}, "
                                  f"this lenstui {SERVE_PROTOCOL}; run `lenstui sync --host {self.host}`")
            return
        raise _Unexpected(f"{self.host}: engine.status --serve did not say hello in {HELLO_LINES} lines")

    def _request(self, timeout: float) -> dict[str, Any]:
        stream = self._stream
        if stream is None:  # closed by another thread (Fleet.close, a sync) since this ask began
            raise StreamClosed(f"{self.host}: the status channel was closed")
        self._next_id += 1
        rid = self._next_id
        stream.send_line(json.dumps({"id": rid, "full": self._runs is None}))
        line = stream.read_line(timeout)
        answer = _json_object(line)
        if answer is None or answer.get("id") != rid:
            raise _Unexpected(f"{self.host}: engine.status --serve answered request {rid} with {line[:200]!r}")
        if "restart" in answer:
            raise _StartAgain(str(answer["restart"]))
        if "error" in answer:
            raise ProbeFailed(f"{self.host}: {answer['error']}")
        status = answer.get("status")
        if not isinstance(status, dict) or not isinstance(status.get("runs"), dict):
            raise _Unexpected(f"{self.host}: engine.status --serve sent no status in {line[:200]!r}")
        self._runs = self._restore_unchanged(status["runs"])
        return status

    def _restore_unchanged(self, runs: dict[str, Any]) -> dict[str, Any]:
        """Put back each run's parts the server left out as unchanged, from the previous answer."""
        before = self._runs or {}
        for name, entry in runs.items():
            for key in entry.pop("unchanged", None) or ():
                if key not in before.get(name, {}):
                    raise _Unexpected(f"{self.host}: engine.status --serve left out {name}'s {key}, "
                                      "which this side never received")
                entry[key] = before[name][key]
        return runs


class ProbeFailed(TransportError):
    """The server is up but its probe failed (a bug in engine.status): said on screen, the channel kept."""


class _Unexpected(TransportError):
    """The server answered something this client cannot read: the channel is closed."""


class _StartAgain(Exception):
    """The server asked to be replaced (its engine code changed on disk)."""


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
