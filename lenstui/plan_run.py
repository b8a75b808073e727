"""Gathering the plan's facts from the fleet, and Advance: doing the steps that are ready.

Blocking calls (run them in a worker or from the CLI). `gather` asks every answering host for its
manifest check beside the status the caller polled, and derives the table (lenstui/plan.py).
`preview` says what Advance would do, where, before anything starts; `perform` does it: syncs,
manifest builds and the report first, then the launches, each on the slot the scheduler picked
(lenstui/scheduler.py), with the run's provenance recorded in its run.json. Nothing is
remembered here: a rerun derives the same table and continues where the plan stands.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from engine.protocol.codeversion import checkout_version
from engine.results.report import DEFAULT_OUT, RESULTS_MD
from lenstui.fleet import Fleet, FleetError
from lenstui.plan import Action, HostFacts, PlanState, derive
from lenstui.runs import LastSeen, representatives
from lenstui.scheduler import Placement, RunRequest, Schedule, Waiting, schedule


def report_path(fleet: Fleet) -> Path:
    """Where the plan's report goes: planb/EXPERIMENT_RESULTS.md beside experiments.toml."""
    return fleet.config_path.resolve().parent / DEFAULT_OUT / RESULTS_MD


def host_facts(fleet: Fleet, snapshots: Mapping[str, Any], check_manifests: bool = True) -> list[HostFacts]:
    """Each enabled host's status and (asked in parallel) its manifest check."""
    names = [h for h in fleet.hosts() if fleet.config.hosts[h].enabled]
    manifests: dict[str, dict[str, Any]] = {}

    def check(name: str) -> None:
        try:
            manifests[name] = fleet.manifests(name, check=True)
        except FleetError as exc:
            manifests[name] = {"present": False, "error": exc.message}

    local_version = checkout_version()
    threads = []
    for name in names:
        status = getattr(snapshots.get(name), "status", None)
        synced = fleet.same_tree(name) or (isinstance(status, dict) and status.get("synced_code_version") == local_version)
        if check_manifests and isinstance(status, dict) and synced:
            threads.append(threading.Thread(target=check, args=(name,), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    out = []
    for name in names:
        snap = snapshots.get(name)
        status = getattr(snap, "status", None)
        out.append(HostFacts(name, status if isinstance(status, dict) else None,
                             getattr(snap, "error", None) if not isinstance(status, dict) else None,
                             manifests.get(name), fleet.same_tree(name)))
    return out


def gather(fleet: Fleet, snapshots: Mapping[str, Any], last_seen: LastSeen | None = None,
           extra_args: Sequence[str] = (), facts: Sequence[HostFacts] | None = None) -> PlanState:
    """The plan's table now, from the hosts' snapshots (and their manifest checks, unless `facts`)."""
    choices = representatives(snapshots, fleet.hosts(), last_seen, plan_epochs=fleet.config.training.epochs)
    facts = host_facts(fleet, snapshots) if facts is None else facts
    return derive(fleet.config, choices, facts, checkout_version(), report_path(fleet), extra_args)


@dataclass(frozen=True)
class Preview:
    """What Advance would do now: other actions, the runs placed (experiment -> host:GPU), the runs
    that would wait (and why), and why it would stop instead."""

    actions: tuple[Action, ...] = ()
    schedule: Schedule = Schedule()
    halted: str | None = None
    cautions: tuple[str, ...] = ()   # said before the runs: e.g. a decision read from short runs

    @property
    def empty(self) -> bool:
        return not self.actions and not self.schedule.placed and not self.schedule.waiting

    def lines(self) -> list[str]:
        """The confirmation's words: exactly what runs where, with the settings that differ from the plan's."""
        if self.halted:
            return [f"The plan stops here: {self.halted}"]
        out = [f"{a.describe()}" for a in self.actions]
        for p in self.schedule.placed:
            out.append(f"{p.request.name} → {p.label}{_differs(p.request)}  (step {p.request.plan_step})")
        for w in self.schedule.waiting:
            out.append(f"{w.request.name} waits in the queue: {w.why}")
        if out:
            out += [f"Caution: {c}" for c in self.cautions]
        return out or ["nothing is ready: every step is done, running, or waiting on another"]


def _differs(request: RunRequest) -> str:
    words = []
    if request.base:
        words.append(f"base {request.base}")
    if request.extra_args:
        words.append("differs from the plan: " + " ".join(request.extra_args) + " (recorded as overrides)")
    return f"  [{'; '.join(words)}]" if words else ""


def preview(state: PlanState, snapshots: Mapping[str, Any], fleet: Fleet, queued: Sequence[RunRequest] = (),
            gone: Iterable[str] = ()) -> Preview:
    """What Advance would do on `state`: its non-launch actions, and every launch (the plan's ready
    runs after the `queued` ones already waiting) placed by the scheduler."""
    if state.halted():
        return Preview(halted=state.halted())
    ready = state.ready_actions()
    others = tuple(a for a in ready if a.kind != "launch")
    names = {r.name for r in queued}
    launches = list(queued) + [a.request for a in ready if a.kind == "launch" and a.request is not None
                               and a.request.name not in names]
    cautions = ()
    if state.decision.provisional and any((r.plan_step or "")[:1] in ("3", "4") for r in launches):
        # The runs §10 chose were read from runs off the plan's settings (or without A1): spending
        # Phase 3 or the full run on it deserves the decision's own words first.
        cautions = tuple(n for n in state.decision.notes if "provisional" in n) or (
            "the decision that chose these runs is provisional",)
    return Preview(others, schedule(launches, snapshots, fleet.config, gone), cautions=cautions)


@dataclass
class Outcome:
    """What `perform` did: one line per action, the runs started, the ones left waiting, the failures."""

    lines: list[str] = field(default_factory=list)
    started: list[Placement] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def perform(fleet: Fleet, plan: Preview) -> Outcome:
    """Do what `plan` (a Preview the user confirmed) says: the other actions first, then the launches."""
    out = Outcome()
    for a in plan.actions:
        try:
            if a.kind == "sync" and a.host:
                out.lines.append(f"sync {a.host}: {fleet.sync(a.host).message}")
            elif a.kind == "synth" and a.host:   # the synthetic dataset, then its manifests
                out.lines.append(f"synth on {a.host}: {fleet.synth(a.host)}")
                out.lines.append(f"manifests on {a.host}: {fleet.manifests(a.host)['why']}")
            elif a.kind == "manifests" and a.host:
                out.lines.append(f"manifests on {a.host}: {fleet.manifests(a.host)['why']}")
            elif a.kind == "data_check" and a.host:
                out.lines.append(f"data check on {a.host}: {fleet.data_check(a.host)}")
            elif a.kind == "report":
                out.lines.append(write_report(fleet))
        except FleetError as exc:
            out.failed.append(exc.message)
    if out.failed and plan.schedule.placed:   # the runs need what failed (data, manifests, code)
        out.failed.append("no run started: " + ", ".join(p.request.name for p in plan.schedule.placed)
                          + " wait for the step(s) above; Advance again once they are fixed")
        return out
    for p in plan.schedule.placed:
        req = p.request
        try:
            if fleet.run_name(req.exp_id, req.extra_args) != req.name:   # the launcher names it from --seed
                raise FleetError(f"{req.name}: its arguments ({' '.join(req.extra_args) or 'none'}) would run "
                                 f"{fleet.run_name(req.exp_id, req.extra_args)}; not launched")
            result = fleet.launch(req.exp_id, p.host, p.gpu, req.base, req.extra_args,
                                  provenance=req.provenance(p.host, p.gpu))
        except FleetError as exc:
            out.failed.append(exc.message)
            continue
        out.started.append(p)
        out.lines.append(f"{req.name} → {p.label}: {result.message}")
    out.waiting = list(plan.schedule.waiting)
    out.lines += [f"{w.request.name} waits: {w.why}" for w in plan.schedule.waiting]
    return out


def write_report(fleet: Fleet, snapshots: Mapping[str, Any] | None = None) -> str:
    """Write the report from every run the hosts report now (their status entries)."""
    from engine.results import report
    from lenstui.cli import poll_all
    from lenstui.runs import all_runs, candidate

    names = [h for h in fleet.hosts() if fleet.config.hosts[h].enabled]
    snaps = snapshots or poll_all(fleet, names)
    refs = all_runs(snaps, fleet.hosts())
    collection = report.collection_from_candidates([candidate(r, i) for i, r in enumerate(refs)], fleet.config,
                                                   [h for h in names if any(r.host == h for r in refs)])
    files = report.write_report(collection, fleet.config, report_path(fleet).parent)
    return f"report: wrote {files.summary}"
