"""The plan's §7 execution table, every step's status derived from real state.

Nothing here is remembered between calls: a step's status comes from what the hosts answer now
(their status: runs, GPUs, engine and synced code versions; their manifest check), the §10
decision on the runs that stand for A1..B4, and the report file on disk. Two laptops, or an app
restarted in the middle, derive the same table. Plain values in, plain values out (no network):
the app and `lenstui plan` gather the inputs (lenstui/plan_inputs.py) and render the result.

Statuses: done, running, ready (Advance would do it now), waiting (on another step, named in
`blocked_by`), blocked (something a person must fix, named in `blocked_by`), failed (a run that
ended without completing: a person looks before it is run again), stopped (the decision halts
the plan), not needed (the tree's branch skips it). docs/PLAN.md describes each step and the
`lenstui plan --json` schema.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine import ENGINE_VERSION
from engine.config import Config
from engine.protocol.rundir import IN_PROGRESS, RunState, run_name, seed_args
from engine.results.decision import PHASE1, VARIANTS, Decision, decide
from engine.results.replicates import group_of, planned_replicates, replicate_seeds
from engine.results.representative import Choice, parse_time
from lenstui.scheduler import RunRequest

PLAN_SCHEMA = 1   # `lenstui plan --json`: bump when a field changes meaning (docs/PLAN.md)

DONE, RUNNING, READY, WAITING, BLOCKED, FAILED, STOPPED, NOT_NEEDED = (
    "done", "running", "ready", "waiting", "blocked", "failed", "stopped", "not needed")
STATUSES = (DONE, RUNNING, READY, WAITING, BLOCKED, FAILED, STOPPED, NOT_NEEDED)


@dataclass(frozen=True)
class Action:
    """What Advance does for a ready step: sync or build manifests on a host, launch a run, write the report."""

    kind: str                          # "sync", "synth", "manifests", "data_check", "launch", "report"
    host: str | None = None            # sync, manifests: the host
    request: RunRequest | None = None  # launch: the run

    def describe(self) -> str:
        if self.kind == "launch" and self.request is not None:
            base = f" (base {self.request.base})" if self.request.base else ""
            return f"launch {self.request.name}{base}"
        if self.kind == "report":
            return "write the report"
        return f"{self.kind.replace('_', ' ')} on {self.host}"


@dataclass(frozen=True)
class Step:
    key: str                 # "1.5", "2.1", ...
    phase: int
    title: str
    status: str              # one of STATUSES
    detail: str              # what the state is, and where
    blocked_by: str | None = None
    actions: tuple[Action, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "phase": self.phase, "title": self.title, "status": self.status,
                "detail": self.detail, "blocked_by": self.blocked_by,
                "actions": [_action_dict(a) for a in self.actions]}


@dataclass(frozen=True)
class HostFacts:
    """What one enabled host says, for the plan: its status answer (None: not answering, with why)
    and its manifest check (engine.manifest --check; None: not asked)."""

    host: str
    status: Mapping[str, Any] | None
    error: str | None = None
    manifests: Mapping[str, Any] | None = None
    same_tree: bool = False       # the local host running this folder's engine (nothing to sync)


@dataclass(frozen=True)
class PlanState:
    name: str
    steps: tuple[Step, ...]
    decision: Decision
    local_code_version: str
    report: str | None            # the report's path, when written
    hosts: tuple[HostFacts, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def step(self, key: str) -> Step:
        return next(s for s in self.steps if s.key == key)

    def ready_actions(self) -> list[Action]:
        """Every action of every ready step, in plan order (what Advance performs)."""
        return [a for s in self.steps if s.status == READY for a in s.actions]

    def halted(self) -> str | None:
        """Why Advance stops here (a STOP or outside-the-plan decision, once taken), or None."""
        if any(s.status == STOPPED for s in self.steps):
            return f"{self.decision.title}: {self.decision.reason}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"schema": PLAN_SCHEMA, "plan": self.name, "local_code_version": self.local_code_version,
                "engine_version": ENGINE_VERSION,
                "steps": [s.as_dict() for s in self.steps],
                "decision": {k: v for k, v in self.decision.as_dict().items()
                             if k in ("branch", "title", "reason", "next_experiments", "base", "stop",
                                      "outside_plan", "provisional", "criterion")},
                "halted": self.halted(), "report": self.report,
                "hosts": [{"host": h.host, "answering": h.status is not None, "error": h.error,
                           "engine_version": (h.status or {}).get("engine_version"),
                           "synced_code_version": (h.status or {}).get("synced_code_version"),
                           "manifests": dict(h.manifests) if h.manifests is not None else None}
                          for h in self.hosts],
                "notes": list(self.notes)}


def _action_dict(a: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": a.kind, "host": a.host}
    if a.request is not None:
        out["request"] = asdict(a.request)
    return out


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (0,)


def _run_words(choice: Choice | None) -> str:
    if choice is None:
        return "not run"
    c = choice.chosen
    epoch = c.metrics.get("epoch")
    planned = c.metrics.get("epochs_planned")
    gpu = c.metrics.get("gpu")
    where = f"{c.host}" + (f":gpu{gpu}" if gpu not in (None, "", "cpu") else (":cpu" if gpu == "cpu" else ""))
    progress = f", epoch {epoch}/{planned}" if epoch is not None and planned else ""
    stale = " (as last seen)" if c.as_of is not None else ""
    return f"{c.state} on {where}{progress}{stale}"


def _seed_request(exp_id: str, seed: int, plan_seed: int, extra_args: Sequence[str], base: str | None,
                  step: str, decision: str | None) -> RunRequest:
    """The run request of one seed of `exp_id`: the plan's seed is the experiment's own run."""
    return RunRequest(exp_id, run_name=run_name(exp_id, seed, plan_seed),
                      extra_args=(*extra_args, *seed_args(seed, plan_seed)), base=base, requested_by="plan",
                      plan_step=step, decision=decision)


def derive(config: Config, choices: Mapping[str, Choice], hosts: Sequence[HostFacts], local_code_version: str,
           report_path: Path | None = None, extra_args: Sequence[str] = ()) -> PlanState:
    """The plan's table from the facts gathered now. `extra_args`: training arguments every run the
    plan launches gets (e.g. short epochs; recorded by the engine as overrides)."""
    results = {e: {**c.chosen.metrics, "run": {**(c.chosen.metrics.get("run") or {}), "host": c.chosen.host}}
               for e, c in choices.items() if e in config.experiments}
    decision = decide(results, config)
    steps: list[Step] = []
    enabled = [h for h in hosts]
    down = [h for h in enabled if h.status is None]

    # -- Phase 1 ---------------------------------------------------------------
    def per_host(check: Any, fix: Any) -> tuple[str, str, str | None, tuple[Action, ...]]:
        """(status, detail, blocked_by, actions) of a per-host condition over every enabled host."""
        missing, actions, said = [], [], []
        for h in enabled:
            if h.status is None:
                continue
            ok, words = check(h)
            said.append(f"{h.host}: {words}")
            if not ok:
                missing.append(h.host)
                if fix is not None:
                    actions.append(fix(h))
        detail = "; ".join(said) or "no host answers"
        if down:
            detail += "; not answering: " + ", ".join(f"{h.host} ({h.error or 'no answer'})" for h in down)
        actions = [a for a in actions if a is not None]
        if missing:
            return (READY if actions else BLOCKED), detail, (None if actions else ", ".join(missing)), tuple(actions)
        if down or not said:
            return WAITING, detail, "hosts not answering: " + ", ".join(h.host for h in down), ()
        return DONE, detail, None, ()

    def synced(h: HostFacts) -> tuple[bool, str]:
        if h.same_tree:
            return True, "runs this folder's engine"
        theirs = (h.status or {}).get("synced_code_version")
        if theirs == local_code_version:
            return True, f"code {theirs}"
        return False, f"code {theirs or 'never synced'} (here {local_code_version})"

    sync_status, sync_detail, sync_by, sync_actions = per_host(synced, lambda h: Action("sync", h.host))

    def metrics_ok(h: HostFacts) -> tuple[bool, str]:
        theirs = (h.status or {}).get("engine_version")
        if _version(theirs) >= _version(ENGINE_VERSION):
            return True, f"engine {theirs}"
        return False, f"engine {theirs}, older than {ENGINE_VERSION}"

    engine_status, engine_detail, _, _ = per_host(metrics_ok, None)
    code_ready = sync_status == DONE

    def manifests_ok(h: HostFacts) -> tuple[bool, str]:
        m = h.manifests
        if m is None:
            return False, "not checked (its code is not synced yet)" if not code_ready else "not checked"
        if m.get("error"):
            return False, str(m["error"])
        return bool(m.get("present")), ("built" + (f" at {m.get('path')}" if m.get("path") else "")
                                        if m.get("present") else str(m.get("why") or "not built"))

    def make_manifests(h: HostFacts) -> Action | None:
        """Build them; where the dataset itself is missing, make it first (synthetic), or nothing."""
        if h.manifests and h.manifests.get("dataset_missing"):
            return Action("synth", h.host) if config.dataset_for(config.hosts[h.host]).kind == "synthetic" else None
        return Action("manifests", h.host)

    man_status, man_detail, man_by, man_actions = per_host(manifests_ok, make_manifests)
    no_data = [h.host for h in enabled if h.status is not None and h.manifests and h.manifests.get("dataset_missing")
               and config.dataset_for(config.hosts[h.host]).kind != "synthetic"]
    if no_data:   # real shards cannot be made here: a person copies them (lenstui preflight says where)
        man_status, man_actions = BLOCKED, tuple(a for a in man_actions if a is not None)
        man_by = (f"no dataset on {', '.join(no_data)}: copy its shards there (`lenstui preflight --host "
                  f"{no_data[0]}` says what to copy where)")
    if not code_ready and man_status != DONE:
        man_status, man_by, man_actions = WAITING, "1.5 (code synced to every host)", ()
    if any(h.manifests and h.manifests.get("error") for h in enabled if h.status is not None):
        man_status, man_actions = BLOCKED, ()
        man_by = "; ".join(f"{h.host}: {h.manifests['error']}" for h in enabled
                           if h.status is not None and h.manifests and h.manifests.get("error"))
    steps.append(Step("1.1", 1, "Stratified 10% manifest (unpaired view)", man_status, man_detail, man_by, man_actions))
    steps.append(Step("1.2", 1, "Paired 10% manifest", DONE if man_status == DONE else WAITING,
                      "built with 1.1 (one build makes the paired and unpaired views, full and 10%)",
                      "1.1" if man_status != DONE else None))
    # 1.3: the data check, the gate matrix of engine.gates on the dataset, recorded beside the
    # manifests it read; its ordering verdict (SCIENCE.md's) is shown, and informs, never blocks.
    checked = [(h.host, h.manifests["data_check"]) for h in enabled
               if h.status is not None and h.manifests and isinstance(h.manifests.get("data_check"), dict)]
    if checked:
        where, record = checked[0]
        verdict = "ordering as expected" if record.get("ordering_ok") else "ordering NOT as expected"
        steps.append(Step("1.3", 1, "Verify data loading (data check: the gate matrix)", DONE,
                          f"{verdict} on {where}: {record.get('ordering')} (a verdict to read: it does not block)"))
    elif man_status in (DONE, READY):
        first = next((h for h in enabled if h.status is not None), None)
        steps.append(Step("1.3", 1, "Verify data loading (data check: the gate matrix)",
                          READY if first is not None else WAITING,
                          f"not run; Advance runs engine.gates --matrix on {first.host if first else '?'}"
                          + (" after 1.1" if man_status == READY else ""),
                          None if first is not None else "a host that answers",
                          (Action("data_check", first.host),) if first is not None else ()))
    else:
        steps.append(Step("1.3", 1, "Verify data loading (data check: the gate matrix)", WAITING,
                          "needs the manifests (1.1)", "1.1"))
    steps.append(Step("1.4", 1, "Training script has every metric (engine version)",
                      engine_status if engine_status != READY else WAITING, engine_detail,
                      None if engine_status == DONE else "1.5 (sync the older hosts)"))
    steps.append(Step("1.5", 1, "Code synced to every host", sync_status, sync_detail, sync_by, sync_actions))
    phase1_done = all(s.status == DONE for s in steps)
    phase1_by = ", ".join(s.key for s in steps if s.status != DONE)
    # Code synced and only the manifests (or the synthetic data) left to make: one Advance makes them
    # and then launches A1 and B1 (perform skips the launches if a build fails).
    after_manifests = (not phase1_done and sync_status == DONE and engine_status == DONE
                       and man_status in (DONE, READY) and steps[2].status in (DONE, READY))

    # -- Phase 2 ---------------------------------------------------------------
    def run_step(key: str, phase: int, exp_id: str, title: str, wanted: bool, waiting_on: str | None,
                 decision_words: str | None, base: str | None = None, not_needed: str | None = None) -> Step:
        choice = choices.get(exp_id)
        words = _run_words(choice)
        # Seed replicates (`replicates = N`): the step is done when every planned seed is, and Advance
        # launches the missing ones, each as a run of its own (<id>@seed<N>).
        plan_seed, planned = config.training.seed, planned_replicates(config, exp_id)
        group = group_of(choice, plan_seed, planned) if choice is not None else None
        missing = [] if planned == 1 else [
            seed for seed in replicate_seeds(config, exp_id) if group is None or seed not in group.seeds]
        if group is not None and planned > 1:
            words = f"{words}; {group.words()}"
        if choice is not None and missing and wanted and not_needed is None \
                and choice.chosen.state in (RunState.DONE, *IN_PROGRESS):
            requests = tuple(_seed_request(exp_id, seed, plan_seed, extra_args, base, key, decision_words)
                             for seed in missing)
            return Step(key, phase, title, READY, f"{words}; Advance launches seed(s) {', '.join(map(str, missing))}",
                        None, tuple(Action("launch", request=r) for r in requests))
        if choice is not None:
            state = choice.chosen.state
            if state == RunState.DONE and not missing:
                return Step(key, phase, title, DONE, words)
            if state in IN_PROGRESS:
                return Step(key, phase, title, RUNNING, words)
            # Done but with seeds missing that are not wanted now: waiting or not needed, below.
            if not_needed is None and state != RunState.DONE:
                reason = choice.chosen.metrics.get("reason") or ""
                return Step(key, phase, title, FAILED, f"{words}{': ' + str(reason) if reason else ''}",
                            f"{exp_id} ended without completing: look at its log, then relaunch it from the "
                            "main screen (it resumes from last.pt)")
        if not_needed is not None:
            return Step(key, phase, title, NOT_NEEDED, not_needed if choice is None else f"{not_needed}; {words}")
        if not wanted:
            return Step(key, phase, title, WAITING, words, waiting_on)
        seeds = replicate_seeds(config, exp_id)
        requests = tuple(_seed_request(exp_id, seed, plan_seed, extra_args, base, key, decision_words)
                         for seed in seeds)
        seeds_words = f" with {len(seeds)} seeds ({', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
        return Step(key, phase, title, READY,
                    f"not run; Advance launches it{' with base ' + base if base else ''}{seeds_words}",
                    None, tuple(Action("launch", request=r) for r in requests))

    for key, exp_id in zip(("2.1", "2.2"), PHASE1):
        purpose = config.experiments[exp_id].purpose
        steps.append(run_step(key, 2, exp_id, f"{exp_id}: {purpose}", phase1_done or after_manifests,
                              f"Phase 1 ({phase1_by})" if not phase1_done else None, "§7.2: Phase 2 baselines"))
    both = all(choices.get(e) is not None and choices[e].chosen.state == RunState.DONE for e in PHASE1)
    steps.append(Step("2.3", 2, "Analyse A1 vs B1 (gates, θ_E, core sensitivity)", DONE if both else WAITING,
                      "both complete: their numbers are on the matrix and the decision screen" if both
                      else "needs A1 and B1 complete", None if both else "2.1, 2.2"))
    # The tree is read once both baselines are done (§7.2): a running B1 may have written its final
    # numbers already, but the decision waits for A1 and B1 to complete.
    waiting = decision.branch == "waiting" or not both
    halt = (decision.stop or decision.outside_plan) and not waiting
    steps.append(Step("2.4", 2, "Decide (§10)", STOPPED if halt and not _variants_decided(decision) else
                      (WAITING if waiting else DONE),
                      f"{'so far (provisional, A1 and B1 not both done): ' if waiting and decision.branch != 'waiting' else ''}"
                      f"{decision.title}: {decision.reason}",
                      ("the decision halts the plan: a person decides" if halt else
                       "2.3" if waiting else None)))

    # -- Phase 3 ---------------------------------------------------------------
    to_variants = decision.branch in ("test_masking", "use_b2", "use_b3", "use_b4", "stop_data_redesign") or (
        any(choices.get(v) is not None for v in VARIANTS))
    skip_variants = (None if to_variants or waiting else
                     f"not needed: the decision is {decision.title}")
    variant_words = f"§10: {decision.title} ({decision.criterion or decision.reason})"
    for key, exp_id in zip(("3.1", "3.2", "3.3"), VARIANTS):
        purpose = config.experiments[exp_id].purpose
        steps.append(run_step(key, 3, exp_id, f"{exp_id}: {purpose}",
                              not waiting and decision.branch == "test_masking" and exp_id in decision.next_experiments,
                              "2.4 (the decision)" if waiting else f"the decision ({decision.title})",
                              variant_words, not_needed=skip_variants))
    if skip_variants:
        steps.append(Step("3.4", 3, "Compare the variants", NOT_NEEDED, skip_variants))
    else:
        chose = decision.branch in ("use_b2", "use_b3", "use_b4")
        steps.append(Step("3.4", 3, "Compare the variants", DONE if chose else STOPPED if halt else WAITING,
                          f"{decision.title}: {decision.reason}" if (chose or halt) else "needs B2, B3 and B4 complete",
                          None if chose else "the decision halts the plan: a person decides" if halt else "3.1-3.3"))

    # -- Phase 4 ---------------------------------------------------------------
    full_id = next((e.id for e in config.experiments.values() if e.base is not None), "FULL")
    go_full = full_id in decision.next_experiments and decision.base is not None and not halt and not waiting
    full_words = f"§10: {decision.title} (base {decision.base})"
    steps.append(run_step("4.1", 4, full_id, f"{full_id}: full training on the chosen config", go_full,
                          "the decision halts the plan" if halt else "a decision that selects a config (2.4 / 3.4)",
                          full_words, base=decision.base))
    full = choices.get(full_id)
    full_done = full is not None and full.chosen.state == RunState.DONE
    test_auroc = full.chosen.metrics.get("test_auroc") if full is not None else None
    steps.append(Step("4.2", 4, "Final test evaluation (held out, once)", DONE if full_done and test_auroc is not None
                      else WAITING, f"test AUROC {test_auroc:.3f} (held out: no decision reads it)"
                      if full_done and isinstance(test_auroc, (int, float)) else "after 4.1",
                      None if full_done else "4.1"))
    report = str(report_path) if report_path is not None and report_path.is_file() else None
    ended = parse_time(full.chosen.metrics.get("updated_at")) if full_done else None
    fresh = report is not None and (ended is None or os.path.getmtime(report) >= ended.timestamp())
    if full_done and fresh:
        steps.append(Step("4.3", 4, "Document (the report)", DONE, f"written: {report}"))
    elif full_done:
        steps.append(Step("4.3", 4, "Document (the report)", READY,
                          f"{'older than ' + full_id + ' at ' + report if report else 'not written'}; "
                          f"Advance writes it to {report_path}", None, (Action("report"),)))
    else:
        steps.append(Step("4.3", 4, "Document (the report)", WAITING,
                          f"written: {report} (before {full_id} completed)" if report else "not written", "4.2"))
    return PlanState(config.plan_name, tuple(steps), decision,
                     local_code_version, report, tuple(hosts))


def _variants_decided(decision: Decision) -> bool:
    """A STOP taken after the variants ran (3.4 carries it, not 2.4)."""
    return decision.branch == "stop_data_redesign"


def to_json(state: PlanState) -> str:
    return json.dumps(state.as_dict(), indent=1, default=str)
