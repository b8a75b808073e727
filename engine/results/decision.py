"""Plan §10, the decision tree, as one pure function of the results so far.

Torch-free: lenstui's decision panel and the report call `decide`. Every case
the plan's tree does not cover comes back as an explicit `outside_plan`
decision with the reason; nothing falls through to a default. About 460 lines because
each branch of the tree carries the reason it gives in words; the branches stay in one
function's reach so a reader can check them against §10 below. The choices this
module makes where the plan is silent are written down in docs/DECISIONS.md.

What the tree reads (docs/DECISIONS.md says why): validation numbers only, never the
test set (§5.6: "final evaluation only"); gates grouped by LRG (the published method's
ungrouped values are context); for a masking variant, the core gate the config names
(`[decision] variant_core_gate`, default the probe on val images masked at the variant's
radius); θ_E from best.pt's val table. Every decision says so in `readings`.

The plan's tree (experiment-plan-v2.md §10):

    After A1 and B1 complete:
    ├── B1 Core AUC < 0.60 AND core_reliance < 0.03 → SUCCESS: use B1, full training
    ├── B1 Core AUC 0.60-0.65 AND core_reliance < 0.05 → ACCEPTABLE: use B1 with monitoring
    ├── B1 Core AUC > 0.65 BUT core_reliance < 0.05 → TEST MASKING VARIANTS (B2, B3, B4)
    │   ├── B3 (scheduled) passes all criteria → use B3
    │   ├── B2 or B4 passes with better θ_E spread → use that config
    │   └── All fail core criteria → STOP: need data redesign
    └── B1 Core AUC > 0.65 AND core_reliance > 0.05 → STOP: model is exploiting shortcut

The tree decides on the point estimates, as the plan says. Beside that, a decision whose inputs
any interval puts within reach of another branch (the 95% interval over LRGs the engine writes at
the end of training, or the seed replicates' interval of the mean: engine/results/uncertainty.py)
is marked too close to call (`Decision.too_close`, with the numbers), and `Decision.settle` says
which replicates would settle it (docs/DECISIONS.md, "Uncertainty").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping

from engine.config import Band, Config, ConfigError
from engine.results.representative import candidate_from_entry, comparison_notes
from engine.numbers import in_words, number
from engine.results.reading import epochs_text
from engine.protocol.rundir import TERMINAL
from engine.results.uncertainty import (crossed, describe, hull, interval_of, replicates_needed, seeds_of)
from engine.results.verdicts import (compute_verdicts, failing, rounded, shown_value,
                             thetae_summary)

PHASE1 = ("A1", "B1")
VARIANTS = ("B2", "B3", "B4")

# What "complete" means for the tree: the end-of-training values it reads.
PHASE1_KEYS = ("final_core_lr_auc", "core_reliance")
VARIANT_KEYS = ("final_core_lr_auc", "final_radial_lr_auc", "core_reliance", "best_val_auroc")
MASKED_VARIANT_KEYS = VARIANT_KEYS + ("final_masked_core_lr_auc",)

# "Passes all criteria" (§10): each of these §6 verdicts is PASS. All are validation
# numbers: test_auroc is held out (§5.6, §7.4) and never part of a choice.
PASS_CRITERIA = ("core_lr_auc", "radial_lr_auc", "core_reliance", "thetae_min_bin_auroc",
                 "thetae_max_spread", "val_auroc")
# "All fail core criteria" (§10): each variant FAILs core_lr_auc or core_reliance.
CORE_CRITERIA = ("core_lr_auc", "core_reliance")


BRANCH_TITLES = {
    "waiting": "Waiting for results",
    "success_b1": "SUCCESS: use B1 config, proceed to full training",
    "acceptable_b1": "ACCEPTABLE: use B1 config with monitoring",
    "test_masking": "TEST MASKING VARIANTS (B2, B3, B4)",
    "use_b3": "Use B3 config (scheduled masking)",
    "use_b2": "Use B2 config (stochastic masking R=5, p=0.5)",
    "use_b4": "Use B4 config (stochastic masking R=3, p=0.3)",
    "stop_data_redesign": "STOP: need data redesign",
    "stop_shortcut": "STOP: model is exploiting shortcut",
    "outside_plan": "Outside the plan: a person decides",
}

# Names under which the values that chose a branch appear in Decision.numbers (the gate
# verdicts use their own source: final_core_lr_auc or final_masked_core_lr_auc).
_NUMBER_KEYS = {"val_auroc": "best_val_auroc"}

# The two kinds of θ_E bins a spread comparison may use, in words.
_BIN_WORDS = {"val": "val bins of best.pt", "val_gate": "the latest val gates' bins, not best.pt's"}

# What every decision reads, in words (Decision.readings).
READ_VALIDATION = ("validation numbers only: the test set is held out (§5.6, §7.4) and no branch reads "
                   "test_auroc or the test θ_E bins")
READ_GROUPED = ("shortcut gates with CV folds grouped by LRG; the published method's ungrouped values "
                "are context only (an LRG's rows on both sides of a fold)")
READ_CORE = {
    "masked": ("core gate of a masking variant: the probe on val images masked at its radius (B3: the "
               "radius in force at its best.pt epoch), decision.variant_core_gate = \"masked\"; the "
               "unmasked probe (the data's shortcut, shared with B1) is shown beside it"),
    "unmasked": ("core gate of a masking variant: the probe on the unmasked val images, "
                 "decision.variant_core_gate = \"unmasked\"; B1-B4 share those images, so every variant "
                 "carries B1's value"),
}


@dataclass(frozen=True)
class Decision:
    """Where §10 stands on the results so far, and what to run next."""

    branch: str                                  # a key of BRANCH_TITLES
    title: str
    reason: str                                  # words a person reads
    numbers: Mapping[str, float | None] = field(default_factory=dict)   # "B1.final_core_lr_auc": 0.71
    next_experiments: tuple[str, ...] = ()       # ("B2", "B3", "B4"), ("FULL",), a rerun, or ()
    base: str | None = None                      # the config selected for the Phase-4 run
    outside_plan: bool = False
    stop: bool = False
    criterion: str | None = None                 # the condition that decided, in words
    provisional: bool = False                    # A1 incomplete, or a run not on the plan's settings
    notes: tuple[str, ...] = ()                  # what else a reader must know
    core_gate_reading: str = "masked"            # decision.variant_core_gate this decision used
    readings: tuple[str, ...] = ()               # which numbers the tree read, in words
    too_close: tuple[str, ...] = ()              # why an interval puts another branch within reach
    settle: tuple[str, ...] = ()                 # the replicates that would settle it, in words
    settle_runs: tuple[tuple[str, int], ...] = ()  # (experiment, how many seeds in all) the panel offers

    @property
    def too_close_to_call(self) -> bool:
        return bool(self.too_close)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists for tuples)."""
        out = asdict(self)
        out["numbers"] = dict(self.numbers)
        out["next_experiments"] = list(self.next_experiments)
        out["notes"] = list(self.notes)
        out["readings"] = list(self.readings)
        out["too_close"] = list(self.too_close)
        out["settle"] = list(self.settle)
        out["settle_runs"] = [list(r) for r in self.settle_runs]
        out["too_close_to_call"] = self.too_close_to_call
        return out


# ---------------------------------------------------------------------------
# Reading one run's results


def run_state(metrics: Mapping[str, Any]) -> str | None:
    """The run's state: a reader's observed `state` (lenstui's status entries; may be `lost`),
    else the `status` metrics.json was written with."""
    state = metrics.get("state") or metrics.get("status")
    return state if isinstance(state, str) else None


def progress(metrics: Mapping[str, Any]) -> str:
    """'status running, epoch 7/50 on lambda' (completed epochs over planned; the host when known)."""
    run = metrics.get("run")
    host = run.get("host") if isinstance(run, Mapping) else None
    return (f"status {run_state(metrics) or 'unknown'}, epoch {epochs_text(metrics, missing='0')}"
            + (f" on {host}" if host else ""))


def mixed_data_notes(results: Mapping[str, Mapping[str, Any]], ids: tuple[str, ...]) -> list[str]:
    """engine.results.representative's warning when the runs compared used different datasets."""
    chosen = {e: candidate_from_entry(e, results[e]) for e in ids if results.get(e)}
    return [n for n in comparison_notes(chosen, ids) if "different datasets" in n]


def _missing(exp_id: str, metrics: Mapping[str, Any] | None,
             keys: tuple[str, ...]) -> tuple[str, bool] | None:
    """None when every key holds a number; else (what is missing, whether to (re)launch the run)."""
    if metrics is None:
        return f"{exp_id} has not run yet (no metrics)", True
    for key in keys:
        raw = metrics.get(key)
        if number(raw) is not None:
            continue
        what = f"no {key}" if raw is None else f"a {key} that is not a number ({raw!r})"
        if run_state(metrics) in TERMINAL:
            return f"{exp_id} ended with {what} ({progress(metrics)}): relaunch it", True
        return f"{exp_id} has {what} yet ({progress(metrics)})", False
    return None


def settings_note(exp_id: str, metrics: Mapping[str, Any] | None) -> str | None:
    """"B1 ran with NOT the plan's settings: epochs=2" when the run overrode experiments.toml."""
    overrides = (metrics or {}).get("overrides")
    if not isinstance(overrides, Mapping) or not overrides:
        return None
    shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return f"{exp_id} ran with NOT the plan's settings: {shown}"


# ---------------------------------------------------------------------------
# The B1 branches


def _band_conditions(band: Band, what: str) -> dict[str, tuple[Callable[[float], bool], str]]:
    """The three ways §10 cuts a lower-is-better band, with their words.

    Consistent with §6: the bounds themselves belong to the middle (WARN) range,
    so "0.60-0.65" includes 0.60 and 0.65, "< 0.05" excludes 0.05 and so does "> 0.05".
    """
    p, f = band.pass_limit, band.fail_limit
    return {
        "below_pass": (lambda v: v < p, f"{what} < {p:.2f}"),
        "within": (lambda v: p <= v <= f, f"{what} in [{p:.2f}, {f:.2f}]"),
        "below_fail": (lambda v: v < f, f"{what} < {f:.2f}"),
        "above_fail": (lambda v: v > f, f"{what} > {f:.2f}"),
    }


_SHORT = {"success_b1": "SUCCESS", "acceptable_b1": "ACCEPTABLE", "test_masking": "TEST MASKING",
          "stop_shortcut": "STOP (shortcut)"}

# (branch, core condition, reliance condition): mutually exclusive by construction.
_B1_BRANCHES = (
    ("success_b1", "below_pass", "below_pass"),
    ("acceptable_b1", "within", "below_fail"),
    ("test_masking", "above_fail", "below_fail"),
    ("stop_shortcut", "above_fail", "above_fail"),
)


def decide(results: Mapping[str, Mapping[str, Any]], config: Config) -> Decision:
    """Evaluate §10 on `results` (experiment id → its metrics.json dict, possibly partial).

    Reads validation numbers only: a decision is the same whatever the runs' test_* values.
    """
    reading = config.decision.variant_core_gate
    decision = _decide(results, config)
    readings = (READ_VALIDATION, READ_GROUPED, READ_CORE[reading])
    too_close, settle, settle_runs = _how_close(decision, results, config)
    return replace(decision, core_gate_reading=reading, readings=readings, too_close=too_close, settle=settle,
                   settle_runs=settle_runs)


# ---------------------------------------------------------------------------
# Too close to call: the branches the intervals put within reach

_NUDGE = 1e-9   # a value just beside a band edge (comparisons round to 10 decimals: verdicts.DECIMALS)


def reach(metrics: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The range a value may be in: the hull of its interval over LRGs and its seeds' interval of the mean."""
    seeds = seeds_of(metrics, key)
    return hull(interval_of(metrics, key), (seeds.low, seeds.high) if seeds is not None else None)


def _probe_points(value: float, span: tuple[float, float] | None, band: Band) -> list[float]:
    """The value, its range's ends, and each band edge inside the range with its two sides: every
    region of the band the range touches has one point here."""
    if span is None:
        return [value]
    low, high = span
    points = [value, low, high]
    for edge in (band.pass_limit, band.fail_limit):
        if low <= edge <= high:
            points += [p for p in (edge - _NUDGE, edge, edge + _NUDGE) if low <= p <= high]
    return points


def b1_branch(core: float, rel: float, config: Config) -> str:
    """The B1 branch of §10 (or outside_plan) these two values give."""
    th = config.thresholds
    core_conds = _band_conditions(th.core_lr_auc, "core LR AUC")
    rel_conds = _band_conditions(th.core_reliance, "core_reliance")
    core_r, rel_r = rounded(core), rounded(rel)
    return next((b for b, c, r in _B1_BRANCHES if core_conds[c][0](core_r) and rel_conds[r][0](rel_r)),
                "outside_plan")


def b1_reachable(b1: Mapping[str, Any], config: Config) -> dict[str, tuple[float, float]]:
    """Each B1 branch some pair of values within B1's ranges gives -> one such pair (core, reliance)."""
    th = config.thresholds
    core, rel = number(b1.get("final_core_lr_auc")), number(b1.get("core_reliance"))
    if core is None or rel is None:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for c in _probe_points(core, reach(b1, "final_core_lr_auc"), th.core_lr_auc):
        for r in _probe_points(rel, reach(b1, "core_reliance"), th.core_reliance):
            out.setdefault(b1_branch(c, r, config), (c, r))
    return out


def _how_close(decision: Decision, results: Mapping[str, Mapping[str, Any]],
               config: Config) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, int], ...]]:
    """(why the decision is too close to call, which replicates would settle it in words, and as
    (experiment, seeds in all)); all empty when every interval keeps the decision's inputs inside
    its branch (or there is no decision yet)."""
    if decision.branch == "waiting" or "B1" not in results:
        return (), (), ()
    th = config.thresholds
    b1 = results["B1"]
    too_close: list[str] = []
    settle: list[str] = []
    runs: dict[str, int] = {}
    b1_branch_now = b1_branch(number(b1["final_core_lr_auc"]), number(b1["core_reliance"]), config)
    others = {b: v for b, v in b1_reachable(b1, config).items() if b != b1_branch_now}
    if others:
        shown = "; ".join(f"{name} {_value_words(b1, key, band)}" for name, key, band in
                          (("core LR AUC", "final_core_lr_auc", th.core_lr_auc),
                           ("core_reliance", "core_reliance", th.core_reliance)))
        too_close.append(f"B1 {shown}: within these ranges §10 could also give "
                         + " or ".join(repr(BRANCH_TITLES[b]) for b in others))
        words, n = _settle_words("B1", b1, (("final_core_lr_auc", th.core_lr_auc),
                                            ("core_reliance", th.core_reliance)), config)
        settle += words
        if n:
            runs["B1"] = n
    if b1_branch_now == "test_masking" and all(results.get(v) for v in VARIANTS) \
            and decision.branch != "test_masking":
        for v in VARIANTS:
            mine = compute_verdicts(results[v], th, config.targets,
                                    variant_core_gate=config.decision.variant_core_gate)
            crossing = [n for n in PASS_CRITERIA if mine[n].get("crosses")]
            close = [f"{n} {mine[n]['verdict']} ({shown_value(mine[n])})" for n in crossing]
            if close:
                too_close.append(f"{v}: {'; '.join(close)}: its 'passes all criteria' could go either way")
                spreads = [mine[n]["seeds"] for n in crossing if mine[n].get("seeds")]
                have = max((int(sp.get("n") or 0) for sp in spreads), default=0)
                settle += (_seeds_words(v, config, f"{v} with more seeds (replicates) narrows the seed part")
                           if len(spreads) == len(crossing) else _seeds_words(v, config))
                runs[v] = max(3, have + 2, _planned(config, v))
    return tuple(too_close), tuple(dict.fromkeys(settle)), tuple(runs.items())


def _planned(config: Config, exp_id: str) -> int:
    return config.experiments[exp_id].replicates if exp_id in config.experiments else 1


def _value_words(metrics: Mapping[str, Any], key: str, band: Band) -> str:
    value = number(metrics.get(key))
    span = reach(metrics, key)
    edges = crossed(band, *span) if span is not None and value is not None else []
    return describe(value, interval_of(metrics, key), seeds_of(metrics, key), edges)


def _settle_words(exp_id: str, metrics: Mapping[str, Any], keys: tuple[tuple[str, Band], ...],
                  config: Config) -> tuple[list[str], int]:
    """What replicates would settle `exp_id`'s side of the edges, in words and as how many seeds in
    all (0: none would): with a seed spread, the fewest seeds whose interval of the mean clears each
    crossed edge; without one, three seeds to measure it. The interval over LRGs does not narrow
    with seeds: said when it alone crosses."""
    have_seeds = None
    needs: list[int] = []
    lrg_only = False
    for key, band in keys:
        value, seeds, lrgs = number(metrics.get(key)), seeds_of(metrics, key), interval_of(metrics, key)
        if value is None:
            continue
        have_seeds = seeds.n if seeds is not None else have_seeds
        if seeds is not None:
            for edge in crossed(band, seeds.low, seeds.high):
                n = replicates_needed(seeds.mean, seeds.sd, edge, seeds.n)
                needs.append(n if n is not None else -1)
        if lrgs is not None and crossed(band, *lrgs):
            lrg_only = lrg_only or seeds is None or not crossed(band, seeds.low, seeds.high)
    out, total = [], 0
    if have_seeds is None:
        out += _seeds_words(exp_id, config)
        total = max(3, _planned(config, exp_id))
    elif needs and all(n > 0 for n in needs):
        total = max(needs)
        out.append(f"run {exp_id} with {total} seeds (replicates = {total}): with the spread measured so far, "
                   "the mean's interval would clear the edge")
    elif needs:
        out.append(f"{exp_id}'s mean over seeds sits too close to the edge for up to 10 seeds to settle it")
    if lrg_only:
        out.append(f"{exp_id}'s interval over LRGs crosses an edge: more seeds do not narrow it, more "
                   "validation LRGs do")
    return out, total


def _seeds_words(exp_id: str, config: Config, words: str | None = None) -> list[str]:
    """'run B1 with 3 seeds (replicates = 3, or lenstui launch B1 --seeds 42,43,44): ...'."""
    planned = config.experiments[exp_id].replicates if exp_id in config.experiments else 1
    seeds = ",".join(str(config.training.seed + k) for k in range(max(3, planned)))
    return [words or (f"run {exp_id} with {max(3, planned)} seeds (replicates = {max(3, planned)}, or lenstui "
                      f"launch {exp_id} --seeds {seeds}): its seed-to-seed spread is not measured yet")]


def _decide(results: Mapping[str, Mapping[str, Any]], config: Config) -> Decision:
    _check_plan(config)
    full_id = _phase4_id(config)
    numbers: dict[str, float | None] = {}
    notes: list[str] = []
    for exp_id in PHASE1:
        m = results.get(exp_id) or {}
        for key in ("final_core_lr_auc", "core_reliance", "best_val_auroc"):
            numbers[f"{exp_id}.{key}"] = number(m.get(key))

    a1_missing = _missing("A1", results.get("A1"), PHASE1_KEYS)
    b1_missing = _missing("B1", results.get("B1"), PHASE1_KEYS)
    if b1_missing:
        gaps = [b1_missing] + ([a1_missing] if a1_missing else [])
        launch = tuple(e for e, gap in (("A1", a1_missing), ("B1", b1_missing)) if gap and gap[1])
        reason = ("; ".join(g[0] for g in gaps) + ". §10 starts from B1's final_core_lr_auc "
                  "(full validation set) and core_reliance; an epoch gate's value is not used.")
        return Decision("waiting", BRANCH_TITLES["waiting"], reason, numbers, launch)

    provisional = False
    if a1_missing:
        provisional = True
        notes.append(f"{a1_missing[0]}: the decision is provisional until A1 (the diagnostic "
                     "baseline) completes (§10: 'after A1 and B1 complete')")
    for exp_id in PHASE1:
        note = settings_note(exp_id, results.get(exp_id))
        if note:
            provisional = True
            notes.append(note + ": the decision is provisional")
    for note in mixed_data_notes(results, PHASE1):
        provisional = True
        notes.append(note + ": the decision is provisional")

    b1 = results["B1"]
    core, rel = number(b1["final_core_lr_auc"]), number(b1["core_reliance"])
    th = config.thresholds
    core_conds = _band_conditions(th.core_lr_auc, "core LR AUC")
    rel_conds = _band_conditions(th.core_reliance, "core_reliance")
    core_r, rel_r = rounded(core), rounded(rel)
    chosen = [(b, c, r) for b, c, r in _B1_BRANCHES if core_conds[c][0](core_r) and rel_conds[r][0](rel_r)]
    said = f"B1 has core LR AUC {in_words(core)} and core_reliance {in_words(rel)}"

    published = _ungrouped_note(b1, core_conds, rel_conds, core_r, rel_r, chosen)
    if published:
        notes.append(published)
    if not chosen:
        return _b1_outside_plan(said, core_conds, rel_conds, rel_r, th.core_reliance, numbers,
                                notes, provisional)
    branch, c, r = chosen[0]
    criterion = f"B1 {core_conds[c][1]} and {rel_conds[r][1]}"
    title = BRANCH_TITLES[branch]
    common = dict(numbers=numbers, criterion=criterion, provisional=provisional)

    if branch in ("success_b1", "acceptable_b1"):
        b1_verdicts = compute_verdicts(b1, th, config.targets, variant_core_gate=config.decision.variant_core_gate)
        others = failing(b1_verdicts, [n for n in PASS_CRITERIA if n not in CORE_CRITERIA])
        if others:
            notes.append("not part of the §10 branch, but B1 does not PASS: " + ", ".join(others))
        if branch == "success_b1":
            reason = (f"{said}, so {criterion} holds. B1 does not lean on the core; "
                      "train B1's config on full data.")
        else:
            reason = (f"{said}, so {criterion} holds. Use B1's config on full data and watch the core gate "
                      "(core_lr_auc is WARN) at every gate of the full run.")
        return Decision(branch, title, reason, next_experiments=(full_id,), base="B1",
                        notes=tuple(notes), **common)
    if branch == "stop_shortcut":
        reason = (f"{said}, so {criterion} holds. The CNN loses AUROC when the core is masked, so it uses "
                  "the core shortcut. Stop; do not train on full data.")
        return Decision(branch, title, reason, stop=True, notes=tuple(notes), **common)
    return _masking_variants(results, config, said, criterion, numbers, notes, provisional, full_id)


def _ungrouped_note(b1: Mapping[str, Any], core_conds: dict, rel_conds: dict, core_r: float, rel_r: float,
                    chosen: list) -> str | None:
    """When B1's core probe under the published method's ungrouped CV would pick another branch, say so."""
    plain = rounded(number(b1.get("final_core_lr_auc_ungrouped")))
    if plain is None:
        return None
    branch = next((b for b, c, r in _B1_BRANCHES if core_conds[c][0](plain) and rel_conds[r][0](rel_r)),
                  "outside_plan")
    if branch == (chosen[0][0] if chosen else "outside_plan"):
        return None
    return (f"B1's core probe under the published method's ungrouped CV is {in_words(plain)} (grouped by "
            f"LRG: {in_words(core_r)}); read that way the tree would give {BRANCH_TITLES[branch]!r}. "
            "The ungrouped value lets the probe recognise LRGs whose other rows it trained on; the tree "
            "reads the grouped one")


def _b1_outside_plan(said: str, core_conds: dict, rel_conds: dict, rel_r: float, rel_band: Band,
                     numbers: dict, notes: list[str], provisional: bool) -> Decision:
    """No B1 branch holds: say, branch by branch, which condition fails."""
    why = []
    for branch, c, r in _B1_BRANCHES:
        core_text, rel_text = core_conds[c][1], rel_conds[r][1]
        core_ok = "holds" if c in _holding(core_conds, numbers["B1.final_core_lr_auc"]) else "does not hold"
        rel_ok = "holds" if r in _holding(rel_conds, rel_r) else "does not hold"
        why.append(f"{_SHORT[branch]} needs {core_text} ({core_ok}) "
                   f"and {rel_text} ({rel_ok})")
    exact = ""
    if rel_r == rel_band.fail_limit:
        exact = (f" core_reliance is exactly {rel_band.fail_limit:.2f}: the plan branches on "
                 f"< {rel_band.fail_limit:.2f} and > {rel_band.fail_limit:.2f} only.")
    reason = (f"No §10 branch holds: {said}.{exact} " + "; ".join(why)
              + ". Nothing is launched; a person decides and records why.")
    return Decision("outside_plan", BRANCH_TITLES["outside_plan"], reason, numbers,
                    outside_plan=True, criterion="no B1 branch of §10 holds",
                    provisional=provisional, notes=tuple(notes))


def _holding(conds: dict, value: float | None) -> set[str]:
    value = rounded(value)
    return {name for name, (test, _) in conds.items() if value is not None and test(value)}


# ---------------------------------------------------------------------------
# The masking variants (B1 core AUC > 0.65 but core_reliance < 0.05)


def _masking_variants(results: Mapping[str, Mapping[str, Any]], config: Config, said: str,
                      b1_criterion: str, numbers: dict, notes: list[str], provisional: bool,
                      full_id: str) -> Decision:
    th, targets = config.thresholds, config.targets
    reading = config.decision.variant_core_gate
    b1 = results["B1"]
    lead = (f"{said}, so {b1_criterion} holds. The data carry a core shortcut that the CNN does not "
            "rely on (yet): test the masking variants B2, B3, B4.")
    keys = MASKED_VARIANT_KEYS if reading == "masked" else VARIANT_KEYS
    gaps = {v: _missing(v, results.get(v), keys) for v in VARIANTS}
    pending = [v for v in VARIANTS if gaps[v]]
    if pending:
        launch = tuple(v for v in pending if gaps[v][1])
        reason = lead + " Still needed: " + "; ".join(gaps[v][0] for v in pending) + "."
        if len(pending) < len(VARIANTS):
            reason += " The variants are compared once all three are complete (§7.3 step 3.4)."
        return Decision("test_masking", BRANCH_TITLES["test_masking"], reason, numbers, launch,
                        criterion=b1_criterion, provisional=provisional, notes=tuple(notes))

    for v in VARIANTS:
        note = settings_note(v, results[v])
        if note:
            provisional = True
            notes.append(note + ": the decision is provisional")
    for note in mixed_data_notes(results, ("B1",) + VARIANTS):
        provisional = True
        notes.append(note + ": the decision is provisional")
    verdicts = {v: compute_verdicts(results[v], th, targets, variant_core_gate=reading) for v in VARIANTS}
    for v in VARIANTS:
        core = verdicts[v]["core_lr_auc"]
        if core["reading"] == "masked":   # the data's shortcut, beside the gate that is judged
            numbers[f"{v}.final_core_lr_auc"] = core.get("unmasked_value")
        for name in PASS_CRITERIA:
            label = verdicts[v][name]["source"] if name in ("core_lr_auc", "radial_lr_auc") else None
            numbers[f"{v}.{label or _NUMBER_KEYS.get(name, name)}"] = verdicts[v][name]["value"]
    flat = [v for v in VARIANTS if verdicts[v]["radial_lr_auc"].get("uninformative")
            and verdicts[v]["radial_lr_auc"]["verdict"] == "PASS"]
    if flat:
        notes.append(f"radial_lr_auc PASS of {', '.join(flat)} counts toward 'passes all criteria' as the "
                     f"plan says, but {verdicts[flat[0]]['radial_lr_auc']['uninformative']}")
    not_passing = {v: failing(verdicts[v], PASS_CRITERIA) for v in VARIANTS}
    common = dict(numbers=numbers, provisional=provisional)

    def chose(v: str, criterion: str, reason: str) -> Decision:
        return Decision(f"use_{v.lower()}", BRANCH_TITLES[f"use_{v.lower()}"], reason,
                        next_experiments=(full_id,), base=v, criterion=criterion,
                        notes=tuple(notes), **common)

    if not not_passing["B3"]:
        criterion = f"B3 passes all criteria ({', '.join(PASS_CRITERIA)}: every one PASS)"
        also = [v for v in ("B2", "B4") if not not_passing[v]]
        if also:
            verb = "passes" if len(also) == 1 else "pass"
            notes.append(f"{' and '.join(also)} also {verb}; §10 prefers B3 (its first sub-branch)")
        return chose("B3", criterion, f"{lead} {criterion}: use B3's config on full data.")

    # B2 / B4: passes all criteria AND a lower θ_E spread than B1, from bins of one kind.
    better, judged = [], {}
    for v in ("B2", "B4"):
        if not_passing[v]:
            judged[v] = f"{v} does not pass: {', '.join(not_passing[v])}"
            continue
        # Both spreads from bins of one kind: best.pt's val tables when both runs have them.
        kind = "val" if all(thetae_summary(m, "val").source for m in (results[v], b1)) else "val_gate"
        mine, theirs = thetae_summary(results[v], kind).max_spread, thetae_summary(b1, kind).max_spread
        numbers[f"{v}.thetae_max_spread_{kind}"] = mine
        numbers[f"B1.thetae_max_spread_{kind}"] = theirs
        if mine is None or theirs is None:
            judged[v] = (f"{v} passes all criteria, but its θ_E spread cannot be compared with B1's "
                         f"({_BIN_WORDS[kind]}: {v} {in_words(mine)}, B1 {in_words(theirs)})")
        elif mine < theirs:
            better.append((mine, v, theirs, kind))
        else:
            judged[v] = (f"{v} passes all criteria, but its θ_E spread {in_words(mine)} is not lower "
                         f"than B1's {in_words(theirs)} ({_BIN_WORDS[kind]})")
    if len(better) == 2 and better[0][0] == better[1][0]:
        spread = in_words(better[0][0])
        reason = (f"{lead} B3 does not pass ({', '.join(not_passing['B3'])}). B2 and B4 both pass "
                  f"with a θ_E spread of {spread}, lower than B1's: a tie the plan does not break. "
                  "A person chooses between B2 and B4.")
        return Decision("outside_plan", BRANCH_TITLES["outside_plan"], reason, numbers,
                        outside_plan=True, criterion="B2 and B4 tie on θ_E spread",
                        provisional=provisional, notes=tuple(notes))
    if better:
        better.sort()
        mine, v, theirs, kind = better[0]
        criterion = (f"{v} passes all criteria ({', '.join(PASS_CRITERIA)}: every one PASS) and its "
                     f"θ_E spread {in_words(mine)} is lower than B1's {in_words(theirs)} ({_BIN_WORDS[kind]})")
        if len(better) == 2:
            criterion += f", and lower than {better[1][1]}'s {in_words(better[1][0])}"
        reason = (f"{lead} B3 does not pass ({', '.join(not_passing['B3'])}). {criterion}: "
                  f"use {v}'s config on full data.")
        return chose(v, criterion, reason)

    core_fails = {v: [f"{n} FAIL ({shown_value(verdicts[v][n])})" for n in CORE_CRITERIA
                      if verdicts[v][n]["verdict"] == "FAIL"] for v in VARIANTS}
    if all(core_fails.values()):
        criterion = ("every variant FAILs a core criterion (core_lr_auc or core_reliance): "
                     + "; ".join(f"{v} {', '.join(core_fails[v])}" for v in VARIANTS))
        reason = (f"{lead} {criterion[0].upper()}{criterion[1:]}. Masking does not remove the "
                  "shortcut: stop and redesign the data.")
        return Decision("stop_data_redesign", BRANCH_TITLES["stop_data_redesign"], reason,
                        stop=True, criterion=criterion, notes=tuple(notes), **common)

    judged["B3"] = f"B3 does not pass: {', '.join(not_passing['B3'])}"
    survivors = [v for v in VARIANTS if not core_fails[v]]
    reason = (f"{lead} No sub-branch of §10 holds: " + "; ".join(judged[v] for v in VARIANTS)
              + f". Not all variants FAIL a core criterion ({', '.join(survivors)} do not), so the "
              "data-redesign STOP does not hold either. Nothing is launched; a person decides.")
    return Decision("outside_plan", BRANCH_TITLES["outside_plan"], reason, numbers,
                    outside_plan=True, criterion="no masking-variant branch of §10 holds",
                    provisional=provisional, notes=tuple(notes))


# ---------------------------------------------------------------------------
# The config must hold the tree's experiments


def _check_plan(config: Config) -> None:
    missing = [e for e in PHASE1 + VARIANTS if e not in config.experiments]
    if missing:
        raise ConfigError(config.source, "experiments",
                          f"the §10 decision tree needs experiments {', '.join(PHASE1 + VARIANTS)}; "
                          f"missing: {', '.join(missing)}", "restore them from the plan (§3)")


def _phase4_id(config: Config) -> str:
    for exp in config.experiments.values():
        if exp.base is not None:
            return exp.id
    raise ConfigError(config.source, "experiments",
                      "no Phase-4 experiment (one with `base`) for the decision's full-data run",
                      "add [experiments.FULL] with phase = 4 and base = \"B1\"")
