"""The runs the hosts report: each experiment's run on each host, and the one that stands for it.

Reads the status answers the Fleet polled (engine.status; for a host that stopped answering,
its last answer, with when). Plain values in, plain values out: no screen, no Rich, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from engine.numbers import number
from engine.config import Config
from engine.protocol.rundir import RunState, parse_run_name
from engine.results.replicates import ReplicateGroup, groups_of, pooled
from engine.results.representative import Choice, RunCandidate, candidate_from_entry, choose_all

VERDICTS = ("PASS", "WARN", "FAIL")   # the words a verdict can be (engine.results.verdicts writes them)


@dataclass(frozen=True)
class RunRef:
    """One experiment's run on one host, as the status probe reported it (or, when that host
    no longer answers, as it last reported it: `as_of` is when). `name` is its run directory's
    name: the experiment id, or a seed replicate's `<id>@seed<N>` (engine/protocol/rundir.py)."""

    exp_id: str
    host: str
    entry: Mapping[str, Any]
    as_of: float | None = None
    name: str = ""

    @property
    def run_name(self) -> str:
        return self.name or self.exp_id

    @property
    def where(self) -> str:
        """'B1 on lambda', 'B1@seed43 on lambda'."""
        return f"{self.run_name} on {self.host}"

    @property
    def state(self) -> str:
        return str(self.entry.get("state") or RunState.PENDING)

    @property
    def stale(self) -> bool:
        return self.as_of is not None

def verdict_of(entry: Mapping[str, Any], name: str) -> tuple[str | None, float | None]:
    """(verdict, value) the engine wrote for `name`, or (None, None)."""
    verdicts = entry.get("verdicts")
    item = verdicts.get(name) if isinstance(verdicts, dict) else None
    if not isinstance(item, dict):
        return None, None
    verdict = item.get("verdict")
    return (verdict if verdict in VERDICTS else None), number(item.get("value"))

def runs_of(snapshot: Any) -> dict[str, dict[str, Any]]:
    """A host snapshot's runs (run name -> status entry: the experiment id, or a seed replicate's
    <id>@seed<N>); empty when it has no status."""
    return runs_in(getattr(snapshot, "status", None))

def runs_in(status: Any) -> dict[str, dict[str, Any]]:
    """The runs of an engine.status answer (run name -> status entry)."""
    runs = status.get("runs") if isinstance(status, dict) else None
    return {e: r for e, r in runs.items() if isinstance(r, dict)} if isinstance(runs, dict) else {}

LastSeen = Mapping[str, "tuple[float, dict[str, Any]]"]   # host -> (when, its last status answer)

def all_runs(snapshots: Mapping[str, Any], host_order: Sequence[str],
             last_seen: LastSeen | None = None) -> list[RunRef]:
    """Every run on every host, host order then experiment order. A host whose latest poll has
    no status (disconnected, or its probe failing) shows its runs as last seen, with `as_of`."""
    out = []
    for host in host_order:
        snap = snapshots.get(host)
        runs, as_of = runs_of(snap), None
        if getattr(snap, "status", None) is None and last_seen and host in last_seen:
            as_of, status = last_seen[host]
            runs = runs_in(status)
        out += [RunRef(parse_run_name(name)[0], host, entry, as_of, name) for name, entry in runs.items()]
    return out

def candidate(ref: RunRef, order: int = 0) -> RunCandidate:
    """A run as engine.results.representative ranks it."""
    return candidate_from_entry(ref.exp_id, ref.entry, host=ref.host, order=order, as_of=ref.as_of,
                                name=ref.run_name)

def ref_of(c: RunCandidate) -> RunRef:
    return RunRef(c.experiment, c.host or "?", c.metrics, c.as_of, c.run_name)

def replicate_groups(choices: Mapping[str, Choice], config: Config | None) -> dict[str, ReplicateGroup]:
    """Each experiment's seed replicates: the run that stands for it and the runs that differ from it
    by their seed alone (engine/results/replicates.py)."""
    return groups_of(choices, config)

def shown_run(choice: Choice, group: ReplicateGroup | None, config: Config | None) -> RunRef:
    """The run a view shows for an experiment: the one that stands for it, its values the mean
    over its done seed replicates when there are two or more (replicates.pooled)."""
    ref = ref_of(choice.chosen)
    if group is None or not group.is_replicated:
        return ref
    return RunRef(ref.exp_id, ref.host, pooled(group, config), ref.as_of, ref.name)

def representatives(snapshots: Mapping[str, Any], host_order: Sequence[str], last_seen: LastSeen | None = None,
                    plan_epochs: int | None = None) -> dict[str, Choice]:
    """For each experiment, every run of it ranked by the one rule (engine/results/representative.py):
    the first stands for it in the matrix, the decision, the report and the CLI."""
    refs = all_runs(snapshots, host_order, last_seen)
    return choose_all([candidate(r, i) for i, r in enumerate(refs)], plan_epochs)

def hosts_with(exp_id: str, snapshots: Mapping[str, Any], host_order: Sequence[str],
               last_seen: LastSeen | None = None) -> list[str]:
    """The hosts that report (or last reported) a run of `exp_id`, in host order."""
    return list(dict.fromkeys(r.host for r in all_runs(snapshots, host_order, last_seen) if r.exp_id == exp_id))

def runs_with(exp_id: str, snapshots: Mapping[str, Any], host_order: Sequence[str],
              last_seen: LastSeen | None = None) -> list[RunRef]:
    """Every run of `exp_id` (each seed replicate, on each host), in host order then name order."""
    return [r for r in all_runs(snapshots, host_order, last_seen) if r.exp_id == exp_id]
