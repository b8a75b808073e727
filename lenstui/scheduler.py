"""Where runs go: every GPU of every host with room, and a queue for the runs that must wait.

Plain values in, plain values out (no network, no screen): the app and `lenstui plan run` hand it
the hosts' latest status answers and the run requests; it answers which request goes to which
host:GPU now and why each other one waits. docs/PLAN.md, "Scheduling", is the contract.

- A *slot* is one GPU of one connected, enabled host; a host without GPUs offers its CPU as one
  slot. A slot takes up to the host's `max_runs_per_gpu` runs (experiments.toml), counting the
  runs in progress there, and only while its free memory is at least MIN_FREE_MIB: GPU processes
  that lenstui did not start (other people's jobs) occupy memory and are listed on the slot.
- A host that does not answer offers nothing: its runs keep going (they are detached) and its
  GPUs are not handed to anyone until it answers again, or the user declares it gone (`gone`).
- Requests are placed in order, each on the slot with the fewest runs (then the most free memory,
  then host order), so A1 and B1 land on different GPUs, or different hosts, when there are any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from engine.config import Config
from engine.protocol.rundir import IN_PROGRESS

MIN_FREE_MIB = 4096   # a GPU with less free memory takes no new run (a ResNet18 run at batch 128: docs/PLAN.md)


@dataclass(frozen=True)
class RunRequest:
    """One run to start: the generic unit the scheduler queues (the plan's steps, a user, issue 19's
    replicates). `run_name` is its run directory's name (default: the experiment id);
    `extra_args` go to engine.train as they are (e.g. ("--epochs", "2") or ("--seed", "7"));
    `requested_by` says who asked ("plan", "user", ...); `plan_step` and `decision` are recorded in
    the run's run.json (`provenance`) with the host and GPU it was given."""

    exp_id: str
    run_name: str = ""
    extra_args: tuple[str, ...] = ()
    base: str | None = None
    requested_by: str = "user"
    plan_step: str | None = None
    decision: str | None = None
    host: str | None = None        # only this host (None: any host with room)

    @property
    def name(self) -> str:
        return self.run_name or self.exp_id

    def provenance(self, host: str, gpu: str) -> dict[str, Any]:
        """What run.json records about who asked for this run, and where it was put."""
        out: dict[str, Any] = {"requested_by": self.requested_by, "host": host, "gpu": gpu}
        if self.plan_step:
            out["plan_step"] = self.plan_step
        if self.decision:
            out["decision"] = self.decision
        return out


@dataclass(frozen=True)
class Slot:
    """One GPU (or a GPU-less host's CPU) and what occupies it."""

    host: str
    gpu: str                       # "0", "1", ... or "cpu"
    limit: int                     # the host's max_runs_per_gpu
    runs: tuple[str, ...] = ()     # lenstui's runs in progress here
    foreign: tuple[str, ...] = ()  # other processes on the GPU: "pid 4242 (11,000 MiB)"
    free_mib: int | None = None    # None: not known (a CPU slot)
    total_mib: int | None = None
    name: str = ""                 # the GPU's model

    @property
    def label(self) -> str:
        return f"{self.host}:{'cpu' if self.gpu == 'cpu' else 'gpu' + self.gpu}"

    def room(self) -> tuple[bool, str]:
        """(has room, why not)."""
        if len(self.runs) >= self.limit:
            return False, f"{self.label} holds {len(self.runs)} run(s), its limit (max_runs_per_gpu = {self.limit})"
        if self.free_mib is not None and self.free_mib < MIN_FREE_MIB:
            others = f"; other processes: {', '.join(self.foreign)}" if self.foreign else ""
            return False, f"{self.label} has {self.free_mib:,} MiB free, under {MIN_FREE_MIB:,}{others}"
        return True, ""


@dataclass(frozen=True)
class Placement:
    request: RunRequest
    host: str
    gpu: str

    @property
    def label(self) -> str:
        return f"{self.host}:{'cpu' if self.gpu == 'cpu' else 'gpu' + self.gpu}"


@dataclass(frozen=True)
class Waiting:
    request: RunRequest
    why: str


@dataclass(frozen=True)
class Schedule:
    placed: tuple[Placement, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    slots: tuple[Slot, ...] = ()
    held: tuple[str, ...] = field(default_factory=tuple)   # hosts not answering, whose GPUs are held for them


def slots_of(snapshots: Mapping[str, Any], config: Config, gone: Iterable[str] = ()) -> tuple[list[Slot], list[str]]:
    """Every slot of every enabled host that answered, and the hosts held (not answering, not gone)."""
    out: list[Slot] = []
    held: list[str] = []
    gone = set(gone)
    for name, host in config.hosts.items():
        if not host.enabled or name in gone:
            continue
        snap = snapshots.get(name)
        status = getattr(snap, "status", None)
        if not isinstance(status, dict):
            held.append(name)
            continue
        runs = status.get("runs") if isinstance(status.get("runs"), dict) else {}
        live = {exp: r for exp, r in runs.items() if isinstance(r, dict) and r.get("state") in IN_PROGRESS}
        gpus = [g for g in status.get("gpus") or [] if isinstance(g, dict)]
        if not gpus:
            out.append(Slot(name, "cpu", host.max_runs_per_gpu, tuple(sorted(live))))
            continue
        for g in gpus:
            index = str(g.get("index"))
            here = tuple(sorted(e for e, r in live.items() if str(r.get("gpu")) == index))
            foreign = tuple(f"pid {p.get('pid')} ({p.get('used_memory_mib') or '?'} MiB)"
                            for p in g.get("processes") or [] if isinstance(p, dict) and not p.get("experiment"))
            used, total = g.get("memory_used_mib"), g.get("memory_total_mib")
            free = int(total - used) if isinstance(used, (int, float)) and isinstance(total, (int, float)) else None
            out.append(Slot(name, index, host.max_runs_per_gpu, here, foreign, free,
                            int(total) if isinstance(total, (int, float)) else None, str(g.get("name") or "")))
    return out, held


def schedule(requests: Sequence[RunRequest], snapshots: Mapping[str, Any], config: Config,
             gone: Iterable[str] = ()) -> Schedule:
    """Place `requests` in order on the slots with room; the rest wait, each with why."""
    slots, held = slots_of(snapshots, config, gone)
    taken: dict[tuple[str, str], int] = {}
    placed: list[Placement] = []
    waiting: list[Waiting] = []
    for req in requests:
        best: tuple | None = None
        reasons: list[str] = []
        for order, slot in enumerate(slots):
            if req.host is not None and slot.host != req.host:
                continue
            extra = taken.get((slot.host, slot.gpu), 0)
            grown = Slot(slot.host, slot.gpu, slot.limit, slot.runs + ("(placed now)",) * extra, slot.foreign,
                         None if slot.free_mib is None else slot.free_mib - extra * MIN_FREE_MIB)
            ok, why = grown.room()
            if not ok:
                reasons.append(why)
                continue
            key = (len(grown.runs), -(grown.free_mib or 0), order)
            if best is None or key < best[0]:
                best = (key, slot)
        if best is None:
            if req.host is not None and not any(s.host == req.host for s in slots):
                why = (f"{req.host} is not answering: its GPUs are held for it until it is back (or declared gone)"
                       if req.host in held else f"{req.host} has no slot (not enabled?)")
            else:
                why = "every GPU is busy: " + "; ".join(reasons) if reasons else "no host answers"
                if held:
                    why += f" (held for hosts not answering: {', '.join(held)})"
            waiting.append(Waiting(req, why))
            continue
        slot = best[1]
        taken[(slot.host, slot.gpu)] = taken.get((slot.host, slot.gpu), 0) + 1
        placed.append(Placement(req, slot.host, slot.gpu))
    return Schedule(tuple(placed), tuple(waiting), tuple(slots), tuple(held))
