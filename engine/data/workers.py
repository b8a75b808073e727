"""Worker processes for the data layer's parallel builds: the stamp cache and the synthetic twin.

Both cut their work into tasks (shards, or runs of a shard's row groups) and run them on every
core of the host, each in its own process; with one job, or too little work to pay for starting
workers (~1 s), the same code runs in this process. Workers are *spawned*, never forked: the
parent may hold pyarrow's (or torch's) threads, which a fork would copy half-way.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable


def default_jobs() -> int:
    """Worker processes by default: one per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


class InlineExecutor:
    """Runs each task when it is submitted, in this process: the executor for one job."""

    def __enter__(self) -> "InlineExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, **kwargs: Any) -> None:
        return None


def executor(jobs: int, initializer: Callable[[], None] | None = None) -> "ProcessPoolExecutor | InlineExecutor":
    """`jobs` spawned worker processes (each running `initializer` first), or InlineExecutor for one."""
    if jobs <= 1:
        return InlineExecutor()
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer)
