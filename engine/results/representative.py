"""Which run stands for an experiment: one rule for the matrix, the decision, the report and the CLI.

An experiment can have several runs: one per host (A1 done on `local`, aborted on `lambda`),
copies fetched from hosts, a run last seen on a host that no longer answers, and later
(issue 19) seed replicates. Every view that shows one run per experiment asks `choose`, so
the matrix, the decision panel, the report and `lenstui status` never disagree about which
run's numbers they use. The rule, in order:

1. **Completed or in progress before ended incomplete.** A failed, aborted or lost run comes
   after any run that is done, running or pending (a run last seen running on a host that
   has since disconnected counts as running).
2. **The plan's settings before overrides.** No overrides (or a seed alone: a seed replicate is
   the plan's run too) first; then overrides that keep the plan's data and epochs (device,
   base); then fewer epochs than the plan; last, row limits (`--limit-train`, `--limit-val`: a
   smoke run). Between two runs of the same kind,
   the one planned for more epochs is closer to the plan.
3. **Completed before in progress**, at the same settings: a done run has the numbers.
   Then the plan's seed before a seed replicate (a replicate's numbers count in the mean of
   its group all the same: engine/results/replicates.py).
4. **The newest among equals** (metrics.json's `updated_at`, else when it started), then the
   order the runs were given in (host order of experiments.toml, or `--runs-root` order).

So a 20-epoch B1 running on lambda stands for B1 rather than a finished 2-epoch smoke run on
local (rule 2), but an aborted A1 never hides a finished one (rule 1).

Datasets are never mixed silently: `comparison_notes` says when the runs a decision or a
report compares used different datasets, settings or experiments.toml versions.

Replicates: a Choice keeps every candidate ranked; engine/results/replicates.py groups the
chosen run with the other runs that share its `settings_key` (everything but the seed and the
device), one per seed, without changing the ranking. Torch-free and NumPy-free: lenstui imports this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from engine.files import TIME_FORMAT
from engine.numbers import is_int
from engine.protocol.rundir import IN_PROGRESS, RunState
from engine.protocol.train_options import extra_args, resume_settings

SMOKE_LIMITS = ("limit_train", "limit_val")
# Overrides that do not make two runs' numbers incomparable: the device changes speed and rounding,
# the seed draws another replicate of the same experiment.
NOT_SETTINGS = ("device", "seed")

SETTINGS_WORDS = {0: "the plan's settings", 1: "overrides", 2: "fewer epochs than the plan", 3: "a smoke run"}


@dataclass(frozen=True)
class RunCandidate:
    """One run of one experiment, wherever it was found."""

    experiment: str
    host: str | None                # the host it ran on (run.json), or the host that reported it
    location: str                   # "runs/B1", "lambda:/home/x/checkpoints/B1", "fetched/lambda/B1"
    state: str                      # observed (or, for a host that stopped answering, last seen)
    metrics: Mapping[str, Any]      # metrics.json, or lenstui's status entry (a superset)
    run_info: Mapping[str, Any] | None = None   # run.json provenance (dataset, overrides, started_at, ...)
    state_note: str = ""
    errors: tuple[str, ...] = ()
    order: int = 0                  # the tie-break: the order the runs were given in
    as_of: float | None = None      # Unix time of the last answer from its host, when that host is down
    name: str = ""                  # its directory's name: the experiment id, or a replicate's <id>@seed<N>

    @property
    def run_name(self) -> str:
        """The run directory's name (the experiment id for the plan's seed; rundir.run_name)."""
        return self.name or self.experiment

    @property
    def updated_at(self) -> str | None:
        value = self.metrics.get("updated_at")
        return value if isinstance(value, str) else None

    @property
    def overrides(self) -> dict[str, Any]:
        """What this run changed from experiments.toml (metrics.json's, else run.json's `overrides`;
        for a run that has written neither yet, what its launch command asks for)."""
        for source in (self.metrics, self.run_info or {}):
            value = source.get("overrides")
            if isinstance(value, Mapping):
                return dict(value)
        command = (self.run_info or {}).get("command")
        if isinstance(command, list):
            try:
                return resume_settings(extra_args(command))
            except ValueError:
                return {}
        return {}

    @property
    def dataset(self) -> str | None:
        """The dataset's name (run.json), or the --data-root it read; None when not recorded."""
        info = self.run_info or {}
        if info.get("dataset"):
            return str(info["dataset"])
        root = self.overrides.get("data_root") or info.get("data_root")
        return f"--data-root {root}" if root else None

    @property
    def epochs_planned(self) -> int:
        value = self.metrics.get("epochs_planned")
        return value if is_int(value) else 0

    @property
    def stale(self) -> bool:
        """Last seen on a host that no longer answers."""
        return self.as_of is not None

    def where(self) -> str:
        """'on lambda' (or the location when the host is unknown)."""
        return f"on {self.host}" if self.host else f"in {self.location}"


@dataclass(frozen=True)
class Choice:
    """The run that stands for one experiment, the others (best first), and why."""

    experiment: str
    chosen: RunCandidate
    others: tuple[RunCandidate, ...] = ()
    reasons: tuple[str, ...] = field(default=())   # one per other run: why the chosen one comes first

    @property
    def ranked(self) -> tuple[RunCandidate, ...]:
        return (self.chosen, *self.others)

    def reason(self) -> str:
        """'done on local (plan's settings) stands for A1; not aborted on lambda: completed …'."""
        head = f"{describe(self.chosen)} stands for {self.experiment}"
        if not self.others:
            return head
        return head + "; not " + "; not ".join(f"{describe(o)}: {why}" for o, why in zip(self.others, self.reasons))


def candidate_from_entry(exp_id: str, entry: Mapping[str, Any], host: str | None = None, order: int = 0,
                         as_of: float | None = None, name: str | None = None) -> RunCandidate:
    """One run from a status entry (lenstui's, with its `state` and `run`) or a metrics document;
    `name` is its run directory's (a status entry's `name`, else its metrics' `run_name`)."""
    info = entry.get("run") if isinstance(entry.get("run"), Mapping) else None
    state = entry.get("state") or entry.get("status") or RunState.PENDING
    host = host or (info or {}).get("host")
    name = name or next((v for v in (entry.get("name"), entry.get("run_name")) if isinstance(v, str) and v), exp_id)
    location = f"{name} on {host} (lenstui status)" if host else f"{name} (lenstui status)"
    raw_errors = entry.get("errors")
    errors = tuple(str(e) for e in raw_errors) if isinstance(raw_errors, list) else ()
    return RunCandidate(exp_id, host, location, str(state), dict(entry), dict(info) if info else None,
                        str(entry.get("reason") or ""), errors, order, as_of, name)



# ---------------------------------------------------------------------------
# The rule


def settings_rank(overrides: Mapping[str, Any], plan_epochs: int | None = None) -> int:
    """0 the plan's settings; 1 overrides that keep its data and epochs; 2 fewer epochs; 3 row limits.

    A seed alone is the plan's settings: a seed replicate (issue 19) is as much the plan's run as the
    one with experiments.toml's seed."""
    overrides = {k: v for k, v in overrides.items() if k != "seed"}
    if not overrides:
        return 0
    if any(k in overrides for k in SMOKE_LIMITS):
        return 3
    epochs = overrides.get("epochs")
    if is_int(epochs) and (plan_epochs is None or epochs < plan_epochs):
        return 2
    return 1


def settings_text(candidate: RunCandidate) -> str:
    """"the plan's settings" or the overrides as 'epochs=2, limit_train=64'."""
    overrides = candidate.overrides
    if not overrides:
        return "the plan's settings"
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def completion_rank(state: str) -> int:
    """0 done, 1 in progress, 2 ended incomplete (or a state this code does not know)."""
    if state == RunState.DONE:
        return 0
    return 1 if state in IN_PROGRESS else 2


def sort_key(c: RunCandidate, plan_epochs: int | None = None) -> tuple:
    """The rule as a sort key (smaller comes first); see the module docstring."""
    completion = completion_rank(c.state)
    stamp = run_time(c)
    return (completion == 2, settings_rank(c.overrides, plan_epochs), -c.epochs_planned, completion,
            "seed" in c.overrides, -(stamp if stamp is not None else float("-inf")), c.order)


def choose(candidates: Iterable[RunCandidate], plan_epochs: int | None = None) -> Choice:
    """The run that stands for the candidates' experiment (all of one experiment, at least one)."""
    ranked = sorted(candidates, key=lambda c: sort_key(c, plan_epochs))
    if not ranked:
        raise ValueError("choose() needs at least one run")
    chosen, others = ranked[0], tuple(ranked[1:])
    return Choice(chosen.experiment, chosen, others, tuple(why_first(chosen, o, plan_epochs) for o in others))


def choose_all(candidates: Iterable[RunCandidate], plan_epochs: int | None = None) -> dict[str, Choice]:
    """Experiment id -> its Choice, for every experiment that has at least one run."""
    by_exp: dict[str, list[RunCandidate]] = {}
    for c in candidates:
        by_exp.setdefault(c.experiment, []).append(c)
    return {exp: choose(runs, plan_epochs) for exp, runs in by_exp.items()}


def why_first(a: RunCandidate, b: RunCandidate, plan_epochs: int | None = None) -> str:
    """Why `a` comes before `b` under the rule, in words (the first criterion that separates them)."""
    ka, kb = sort_key(a, plan_epochs), sort_key(b, plan_epochs)
    if ka[0] != kb[0]:
        return "a run that completed or is in progress comes before one that ended incomplete"
    if ka[1] != kb[1]:
        return (f"{SETTINGS_WORDS[ka[1]]} come before {SETTINGS_WORDS[kb[1]]}" if ka[1] == 0
                else f"{SETTINGS_WORDS[ka[1]]} ({settings_text(a)}) is closer to the plan than "
                     f"{SETTINGS_WORDS[kb[1]]} ({settings_text(b)})")
    if ka[2] != kb[2]:
        return f"{a.epochs_planned} planned epochs are closer to the plan than {b.epochs_planned}"
    if ka[3] != kb[3]:
        return "a completed run comes before one still in progress"
    if ka[4] != kb[4]:
        return "the plan's seed comes before a seed replicate (seed=" + str(b.overrides.get("seed")) + ")"
    if ka[5] != kb[5]:
        return f"newer ({time_text(a)} against {time_text(b)})"
    return "equal by the rule otherwise; the first listed wins"


# ---------------------------------------------------------------------------
# Times and words


def parse_time(value: Any) -> datetime | None:
    """rundir's timestamps ('2026-02-07T10:00:00+0000'), or any ISO time with an offset."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None   # a time without an offset cannot be compared


def run_time(c: RunCandidate) -> float | None:
    """When the run last changed: metrics.json's updated_at, else run.json's ended/started, else launched."""
    info = c.run_info or {}
    for value in (c.metrics.get("updated_at"), info.get("ended_at"), info.get("started_at"),
                  info.get("launched_at"), c.metrics.get("launched_at")):
        parsed = parse_time(value)
        if parsed is not None:
            return parsed.timestamp()
    return None


def time_text(c: RunCandidate) -> str:
    stamp = run_time(c)
    return "no time recorded" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def last_seen_words(state: str, as_of: float) -> str:
    """'running? as of 00:15': a run as last seen on a host that no longer answers (a live one may have
    ended since, hence the '?')."""
    clock = time.strftime("%H:%M", time.localtime(as_of))
    return f"{state}{'?' if state in IN_PROGRESS else ''} as of {clock}"


def state_words(c: RunCandidate) -> str:
    """'running', or 'running? as of 00:15' for a run on a host that no longer answers."""
    return last_seen_words(c.state, c.as_of) if c.stale else c.state


def describe(c: RunCandidate) -> str:
    """'aborted on lambda (epochs=20)', 'done on local (the plan's settings)'; a seed replicate by its
    name: 'done B1@seed43 on local (seed=43)'."""
    name = f"{c.run_name} " if c.run_name != c.experiment else ""
    return f"{state_words(c)} {name}{c.where()} ({settings_text(c)})"


# ---------------------------------------------------------------------------
# Comparing the chosen runs of several experiments


def settings_key(c: RunCandidate) -> tuple:
    """What must match for two runs' numbers to be compared: the overrides, the device and the seed aside."""
    return tuple(sorted((k, str(v)) for k, v in c.overrides.items() if k not in NOT_SETTINGS))


def comparison_notes(chosen: Mapping[str, RunCandidate], ids: Sequence[str]) -> list[str]:
    """Warnings when the runs that stand for `ids` used different datasets or settings."""
    runs = [(e, chosen[e]) for e in ids if e in chosen]
    if len(runs) < 2:
        return []
    notes = []
    datasets = {c.dataset for _, c in runs if c.dataset}
    if len(datasets) > 1:
        notes.append("the runs compared used different datasets: "
                     + ", ".join(f"{e} {c.dataset or 'unknown'} ({c.where()})" for e, c in runs)
                     + "; their numbers are not comparable")
    if len({settings_key(c) for _, c in runs}) > 1:
        notes.append("the runs compared used different settings: "
                     + ", ".join(f"{e} {settings_text(c)} ({c.where()})" for e, c in runs))
    # Not compared: run.json's config_sha256. It hashes the whole experiments.toml, hosts
    # included, so enabling a host would raise the alarm between two identical trainings; the
    # report's provenance table shows it per run instead.
    return notes
