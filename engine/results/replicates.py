"""Seed replicates: the runs of one experiment that differ only by their training seed, and what
they add up to.

An experiment may be run with several seeds (`replicates = N` in experiments.toml, `lenstui launch
B1 --seeds 42,43,44`): the plan's seed in the experiment's own run directory (`B1`), every other
seed in one of its own (`B1@seed43`, engine/protocol/rundir.py). engine/results/representative.py
still picks the one run that stands for the experiment; its **replicate group** is that run and
every other run of the experiment with the same settings (overrides other than the seed and the
device) and dataset that completed or is in progress, one per seed (the first-ranked copy of a
seed wins: a run fetched from its host is the same replicate). Runs that ended incomplete are
listed apart: they have no numbers to give.

`pooled(group, config)` is what the verdicts, the decision and the report read for the
experiment. With one done replicate it is that run's metrics. With two or more, every end-of-
training value a verdict or §10 reads is the **mean over the done replicates** (the point
estimate), and beside it:

- `<key>_seeds`: the replicates' values, their mean, sd and the 95% interval of the mean
  (engine/results/uncertainty.py); more replicates narrow it;
- `<key>_ci95`: the mean of the replicates' intervals over LRGs. The replicates are evaluated on
  the same validation LRGs, so their errors are strongly correlated: the mean of their bounds is
  the interval of the mean when the correlation is perfect, and a little wide otherwise (it never
  claims more than the data hold). More seeds do not narrow it; more validation LRGs do.

θ_E bins and sensitivity curves are averaged bin by bin and radius by radius; the θ_E minimum and
spread of a group are those of its mean bins, with the replicates' own minimum and spread as their
seed spread. A masking variant whose replicates' best.pt epochs fall under different mask radii
(B3's schedule) is not averaged on its masked probe: the standing run's value is kept and a note
says why. The group's verdicts are recomputed from the pooled values. Torch-free and NumPy-free.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from engine.config import Config
from engine.numbers import is_int, number
from engine.protocol.rundir import RunState, parse_run_name
from engine.results.reading import bins_by_edges
from engine.results.representative import Choice, RunCandidate, completion_rank, settings_key
from engine.results.uncertainty import pair, seed_spread
from engine.results.verdicts import compute_verdicts, thetae_summary

# The end-of-training numbers a verdict, §10 or the report reads: averaged over done replicates.
SCALAR_KEYS = ("best_val_auroc", "core_reliance", "test_auroc", "final_core_lr_auc", "final_radial_lr_auc",
               "final_core_lr_auc_ungrouped", "final_radial_lr_auc_ungrouped", "final_raw_robust_core_lr_auc",
               "final_raw_robust_radial_lr_auc")
# The masked probes: averaged only when every done replicate measured them at one radius.
MASKED_KEYS = ("final_masked_core_lr_auc", "final_masked_radial_lr_auc", "final_masked_core_lr_auc_ungrouped")
BIN_KEYS = ("final_val_auroc_by_thetae", "test_auroc_by_thetae")
CURVE_KEYS = ("core_sensitivity", "test_core_sensitivity")
# θ_E minimum and spread: the key prefix of their intervals, and which bins they come from.
THETAE_PREFIXES = {"final_val_thetae": "val", "test_thetae": "test"}


def seed_of(c: RunCandidate, plan_seed: int | None = None) -> int | None:
    """The run's training seed: metrics.json's `seed`, else its override, else its name's, else the
    plan's (`plan_seed`; None when that is not known either)."""
    for value in (c.metrics.get("seed"), c.overrides.get("seed"), parse_run_name(c.run_name)[1]):
        if is_int(value):
            return int(value)
    return plan_seed


def is_done(c: RunCandidate) -> bool:
    """A replicate with its end-of-training numbers: done, with best_val_auroc or core_reliance written."""
    return c.state == RunState.DONE and any(number(c.metrics.get(k)) is not None
                                            for k in ("core_reliance", "best_val_auroc"))


@dataclass(frozen=True)
class ReplicateGroup:
    """The run that stands for an experiment and its seed replicates."""

    experiment: str
    members: tuple[RunCandidate, ...]     # one per seed, best-ranked first (the standing run leads)
    ended: tuple[RunCandidate, ...] = ()  # replicates of these settings that ended incomplete
    plan_seed: int | None = None
    planned: int = 1                      # how many the config asks for (`replicates`)

    @property
    def done(self) -> tuple[RunCandidate, ...]:
        return tuple(c for c in self.members if is_done(c))

    @property
    def seeds(self) -> tuple[int | None, ...]:
        return tuple(seed_of(c, self.plan_seed) for c in self.members)

    @property
    def is_replicated(self) -> bool:
        """Whether there is more than one run to show: more than one member, or more planned."""
        return len(self.members) > 1 or self.planned > 1

    def count_words(self) -> str:
        """'2/3': done replicates over those that exist (or are planned, when more are)."""
        return f"{len(self.done)}/{max(len(self.members), self.planned)}"

    def words(self) -> str:
        """'3 of 3 seeds done (42, 43, 44)'."""
        seeds = ", ".join("plan's" if s is None else str(s) for s in sorted(self.seeds, key=lambda s: (s is not None, s or 0)))
        total = max(len(self.members), self.planned)
        return f"{len(self.done)} of {total} seed{'s' if total != 1 else ''} done ({seeds})"


def group_of(choice: Choice, plan_seed: int | None = None, planned: int = 1) -> ReplicateGroup:
    """The replicate group of the run that stands for `choice.experiment` (see the module docstring)."""
    chosen = choice.chosen
    key, dataset = settings_key(chosen), chosen.dataset
    members: list[RunCandidate] = []
    ended: list[RunCandidate] = []
    seen: set[int | None] = set()
    for c in choice.ranked:
        if settings_key(c) != key or c.dataset != dataset:
            continue
        seed = seed_of(c, plan_seed)
        if completion_rank(c.state) == 2:
            if c is not chosen:
                ended.append(c)
                continue
        if seed in seen:
            continue   # the same replicate found twice (a fetched copy): the first-ranked stands
        seen.add(seed)
        members.append(c)
    return ReplicateGroup(choice.experiment, tuple(members), tuple(ended), plan_seed, planned)


def groups_of(choices: Mapping[str, Choice], config: Config | None) -> dict[str, ReplicateGroup]:
    """Experiment id -> its replicate group, with the config's plan seed and replicate counts."""
    plan_seed = config.training.seed if config is not None else None
    return {e: group_of(c, plan_seed, planned_replicates(config, e)) for e, c in choices.items()}


def planned_replicates(config: Config | None, exp_id: str) -> int:
    """How many seeds the config runs `exp_id` with (1 when it does not say, or does not know it)."""
    if config is None or exp_id not in config.experiments:
        return 1
    return config.experiments[exp_id].replicates


def replicate_seeds(config: Config, exp_id: str) -> list[int]:
    """The seeds of `exp_id`'s planned replicates: the plan's seed, then the next ones up."""
    return [config.training.seed + k for k in range(planned_replicates(config, exp_id))]


# ---------------------------------------------------------------------------
# What a group adds up to


def pooled(group: ReplicateGroup, config: Config | None = None) -> dict[str, Any]:
    """The metrics the experiment is judged on: the standing run's, with every end-of-training value
    the mean over the group's done replicates when there are two or more (module docstring), its
    verdicts recomputed, and `replicates` saying what stands behind it."""
    chosen = group.members[0] if group.members else None
    base = copy.deepcopy(dict(chosen.metrics)) if chosen is not None else {}
    done = [c.metrics for c in group.done]
    notes: list[str] = []
    if len(done) >= 2:
        for key in SCALAR_KEYS:
            _pool_scalar(base, done, key)
        radii = {number(m.get("final_mask_radius")) for m in done}
        if len(radii) == 1:
            for key in MASKED_KEYS:
                _pool_scalar(base, done, key)
        elif any(number(m.get(k)) is not None for m in done for k in MASKED_KEYS):
            shown = ", ".join(f"R={int(r)}" if r is not None else "none" for r in sorted(radii, key=lambda r: r or 0))
            notes.append(f"the replicates' best.pt epochs fall under different mask radii ({shown}): the "
                         "masked probe is the standing run's, not a mean")
        for key in BIN_KEYS:
            _pool_records(base, done, key, "bin")
        for key in CURVE_KEYS:
            _pool_records(base, done, key, "radius")
        for prefix, kind in THETAE_PREFIXES.items():
            _pool_thetae(base, done, prefix, kind)
    base["replicates"] = {
        "n": max(len(group.members), group.planned), "members": len(group.members), "done": len(done),
        "planned": group.planned, "pooled": len(done) >= 2,
        "seeds": sorted((seed_of(c, group.plan_seed) for c in group.members), key=lambda s: (s is not None, s or 0)),
        "runs": [f"{c.run_name} on {c.host or '?'} ({c.state})" for c in group.members],
        "ended_incomplete": [f"{c.run_name} on {c.host or '?'} ({c.state})" for c in group.ended],
        "notes": notes,
    }
    if config is not None and len(done) >= 2:
        base["verdicts"] = compute_verdicts(base, config.thresholds, config.targets,
                                            variant_core_gate=config.decision.variant_core_gate)
    return base


def _pool_scalar(out: dict[str, Any], done: Sequence[Mapping[str, Any]], key: str) -> None:
    values = [number(m.get(key)) for m in done]
    if any(v is None for v in values):
        return   # a value some replicate lacks is not averaged: the standing run's stays, alone
    spread = seed_spread(values)
    out[key] = spread.mean
    out[f"{key}_seeds"] = spread.as_dict()
    out[f"{key}_ci95"] = _mean_interval([m.get(f"{key}_ci95") for m in done])


def _mean_interval(raw: Sequence[Any]) -> list[float] | None:
    """The mean of the replicates' [low, high] (None unless every one has an interval)."""
    pairs = [pair(r) for r in raw]
    if not pairs or any(p is None for p in pairs):
        return None
    return [sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)]


def _pool_records(out: dict[str, Any], done: Sequence[Mapping[str, Any]], key: str, by: str) -> None:
    """θ_E bins (by their edges) or curve points (by radius): the mean AUROC of each over the replicates."""
    if by == "bin":
        tables = [bins_by_edges(r for r in (m.get(key) or []) if isinstance(r, Mapping)) for m in done]
    else:
        tables = [{p.get("radius"): p for p in (m.get(key) or []) if isinstance(p, Mapping)} for m in done]
    records = out.get(key)
    if not isinstance(records, list) or not all(tables):
        return
    pooled_records = []
    for record in records:
        if not isinstance(record, Mapping):
            continue
        record = dict(record)
        ident = next(iter(bins_by_edges([record])), None) if by == "bin" else record.get("radius")
        mine = [t.get(ident) for t in tables]
        values = [number(r.get("auroc")) if isinstance(r, Mapping) else None for r in mine]
        if all(v is not None for v in values):
            spread = seed_spread(values)
            record["auroc"] = spread.mean
            record["seeds"] = spread.as_dict()
            record["ci95"] = _mean_interval([r.get("ci95") for r in mine])
        pooled_records.append(record)
    out[key] = pooled_records


def _pool_thetae(out: dict[str, Any], done: Sequence[Mapping[str, Any]], prefix: str, kind: str) -> None:
    """The seed spread of each replicate's own θ_E minimum and spread, and their intervals' mean."""
    summaries = [thetae_summary(m, kind) for m in done]
    for stat, attr in (("min_bin_auroc", "min_auroc"), ("max_spread", "max_spread")):
        values = [getattr(t, attr) for t in summaries]
        key = f"{prefix}_{stat}"
        if all(v is not None for v in values):
            out[f"{key}_seeds"] = seed_spread(values).as_dict()
        out[f"{key}_ci95"] = _mean_interval([m.get(f"{key}_ci95") for m in done])
