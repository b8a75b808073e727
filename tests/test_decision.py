"""Plan §10, table by table: every branch, every boundary value, the cases the plan does not cover."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from engine.config import ConfigError, load_config
from engine.results.decision import BRANCH_TITLES, decide

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "experiments.toml")
BINS = CONFIG.metrics.thetae_bin_pairs
GOOD_BINS = (0.86, 0.90, 0.92, 0.93, 0.94, 0.95)     # min 0.86 (PASS), spread 0.09 (PASS)


def run(core=0.55, rel=0.01, radial=0.50, val=0.95, thetae=GOOD_BINS, status="done", epochs=50, **extra):
    """A finished run's metrics.json, as the engine writes it."""
    m = {"schema_version": 1, "status": status, "epochs_planned": epochs, "overrides": {},
         "history": [{"epoch": e, "train_loss": 0.3, "val_auroc": val, "val_loss": 0.3,
                      "learning_rate": 1e-4, "epoch_time_sec": 1.0} for e in range(epochs)],
         "gates": [{"after_epochs": epochs, "core_lr_auc": core, "radial_lr_auc": radial, "gate_n_samples": 2000,
                    "val_auroc_by_thetae": [{"bin": list(b), "auroc": a, "count": 400, "note": None}
                                            for b, a in zip(BINS, thetae)]}],
         "best_val_auroc": val, "best_epoch": epochs - 1, "final_core_lr_auc": core,
         "final_radial_lr_auc": radial, "core_reliance": rel}
    m.update(extra)
    return m


def running(epoch, planned=50):
    return {"status": "running", "epochs_planned": planned, "overrides": {},
            "history": [{"epoch": e, "val_auroc": 0.8} for e in range(epoch)], "gates": []}


A1 = run(core=0.55, rel=0.01)


def phase1(core, rel):
    return {"A1": A1, "B1": run(core=core, rel=rel)}


# B1 final_core_lr_auc, B1 core_reliance, expected branch. Bands: core 0.60/0.65, reliance 0.03/0.05.
B1_TABLE = [
    # SUCCESS: core < 0.60 and reliance < 0.03
    (0.50, 0.00, "success_b1"),
    (0.5999, 0.0299, "success_b1"),
    (0.55, -0.01, "success_b1"),          # masking the core raised the AUROC: still < 0.03
    # core exactly 0.60 is in "0.60-0.65", never "< 0.60"
    (0.60, 0.01, "acceptable_b1"),
    (0.60, 0.0299, "acceptable_b1"),
    # ACCEPTABLE: core 0.60-0.65 (both included) and reliance < 0.05
    (0.62, 0.03, "acceptable_b1"),        # reliance exactly 0.03 is < 0.05
    (0.62, 0.0499, "acceptable_b1"),
    (0.65, 0.04, "acceptable_b1"),        # core exactly 0.65 is in "0.60-0.65", not "> 0.65"
    (0.6001, 0.0, "acceptable_b1"),
    (0.6499, 0.0, "acceptable_b1"),
    # TEST MASKING: core > 0.65 but reliance < 0.05
    (0.6501, 0.04, "test_masking"),
    (0.70, 0.0, "test_masking"),
    (0.70, 0.03, "test_masking"),
    (0.70, 0.0499, "test_masking"),
    # STOP shortcut: core > 0.65 and reliance > 0.05
    (0.6501, 0.0501, "stop_shortcut"),
    (0.80, 0.20, "stop_shortcut"),
    # Outside the plan
    (0.55, 0.03, "outside_plan"),         # core < 0.60 but reliance exactly 0.03 is not < 0.03
    (0.55, 0.04, "outside_plan"),         # core < 0.60 with reliance 0.03-0.05
    (0.5999, 0.0499, "outside_plan"),
    (0.55, 0.06, "outside_plan"),         # core fine, reliance > 0.05
    (0.62, 0.0501, "outside_plan"),       # core 0.60-0.65 with reliance > 0.05
    (0.60, 0.10, "outside_plan"),
    (0.65, 0.06, "outside_plan"),
    (0.62, 0.05, "outside_plan"),         # reliance exactly 0.05: neither < 0.05 nor > 0.05
    (0.70, 0.05, "outside_plan"),
    (0.55, 0.05, "outside_plan"),
]


@pytest.mark.parametrize("core,rel,branch", B1_TABLE)
def test_b1_branches_and_their_boundaries(core, rel, branch):
    d = decide(phase1(core, rel), CONFIG)
    assert d.branch == branch
    assert d.title == BRANCH_TITLES[branch]
    assert d.numbers["B1.final_core_lr_auc"] == core and d.numbers["B1.core_reliance"] == rel
    assert d.outside_plan == (branch == "outside_plan")
    assert d.stop == (branch == "stop_shortcut")
    if branch in ("success_b1", "acceptable_b1"):
        assert (d.next_experiments, d.base) == (("FULL",), "B1")
    elif branch == "test_masking":
        assert (d.next_experiments, d.base) == (("B2", "B3", "B4"), None)
    else:
        assert (d.next_experiments, d.base) == ((), None)
    assert not d.provisional


def test_outside_plan_says_which_condition_of_each_branch_fails():
    d = decide(phase1(0.55, 0.04), CONFIG)
    assert "SUCCESS needs core LR AUC < 0.60 (holds) and core_reliance < 0.03 (does not hold)" in d.reason
    assert "ACCEPTABLE needs core LR AUC in [0.60, 0.65] (does not hold)" in d.reason
    d = decide(phase1(0.62, 0.05), CONFIG)
    assert "exactly 0.05" in d.reason and "< 0.05 and > 0.05 only" in d.reason


def test_branch_reasons_carry_the_numbers_and_the_rule():
    d = decide(phase1(0.612, 0.021), CONFIG)
    assert d.branch == "acceptable_b1"
    assert "0.612" in d.reason and "0.021" in d.reason
    assert d.criterion == "B1 core LR AUC in [0.60, 0.65] and core_reliance < 0.05"
    assert json.loads(json.dumps(d.as_dict()))["next_experiments"] == ["FULL"]


def test_success_notes_b1_verdicts_the_tree_does_not_look_at():
    d = decide({"A1": A1, "B1": run(core=0.55, rel=0.01, radial=0.62, val=0.85)}, CONFIG)
    assert d.branch == "success_b1"
    assert any("radial_lr_auc FAIL (0.62)" in n and "val_auroc FAIL (0.85)" in n for n in d.notes)


def test_the_bands_come_from_the_config_not_literals():
    th = CONFIG.thresholds
    strict = replace(CONFIG, thresholds=replace(th, core_lr_auc=replace(th.core_lr_auc, pass_limit=0.50)))
    assert decide(phase1(0.55, 0.01), CONFIG).branch == "success_b1"
    assert decide(phase1(0.55, 0.01), strict).branch == "acceptable_b1"   # 0.55 is now in [0.50, 0.65]


# ---------------------------------------------------------------------------
# Waiting and provisional decisions


def test_nothing_run_yet_waits_and_offers_phase_one():
    d = decide({}, CONFIG)
    assert d.branch == "waiting" and d.next_experiments == ("A1", "B1")
    assert "B1 has not run yet" in d.reason


def test_b1_still_training_waits_and_says_where_it_is():
    d = decide({"A1": A1, "B1": running(7)}, CONFIG)
    assert d.branch == "waiting"
    assert "B1 has no final_core_lr_auc yet (status running, epoch 7/50)" in d.reason
    assert d.next_experiments == ()


def test_an_epoch_gate_is_never_used_for_b1_core_auc():
    b1 = running(10)
    b1["gates"] = [{"after_epochs": 10, "core_lr_auc": 0.55, "radial_lr_auc": 0.5, "gate_n_samples": 2000}]
    b1["core_reliance"] = 0.01
    d = decide({"A1": A1, "B1": b1}, CONFIG)
    assert d.branch == "waiting" and "final_core_lr_auc" in d.reason


@pytest.mark.parametrize("status", ["failed", "aborted", "lost", "done"])
def test_a_b1_that_ended_without_its_final_values_is_offered_for_relaunch(status):
    b1 = running(3)
    b1["status"] = status
    d = decide({"A1": A1, "B1": b1}, CONFIG)
    assert d.branch == "waiting" and d.next_experiments == ("B1",)
    assert f"B1 ended with no final_core_lr_auc (status {status}, epoch 3/50): relaunch it" in d.reason


def test_missing_a1_makes_the_decision_provisional_but_still_reports_it():
    d = decide({"A1": running(20), "B1": run(core=0.55, rel=0.01)}, CONFIG)
    assert d.branch == "success_b1" and d.provisional
    assert any("A1 has no final_core_lr_auc yet (status running, epoch 20/50)" in n and "provisional" in n
               for n in d.notes)
    assert d.numbers["A1.final_core_lr_auc"] is None


def test_a1_numbers_are_reported():
    d = decide(phase1(0.55, 0.01), CONFIG)
    assert (d.numbers["A1.final_core_lr_auc"], d.numbers["A1.core_reliance"], d.numbers["A1.best_val_auroc"]) \
        == (0.55, 0.01, 0.95)


def test_a_shortened_run_makes_the_decision_provisional_and_says_so():
    d = decide({"A1": A1, "B1": run(core=0.55, rel=0.01, epochs=2, overrides={"epochs": 2})}, CONFIG)
    assert d.branch == "success_b1" and d.provisional
    assert "B1 ran with NOT the plan's settings: epochs=2: the decision is provisional" in d.notes


# ---------------------------------------------------------------------------
# The masking variants (B1 core > 0.65, reliance < 0.05)

B1_CORE = 0.70   # B1's unmasked core probe: B1-B4 share their val images, so every variant carries it
B1_SHORTCUT_IN_DATA = run(core=B1_CORE, rel=0.02, thetae=(0.80, 0.88, 0.90, 0.92, 0.94, 0.95))   # spread 0.15
RADIUS = {"B2": 5, "B3": 7, "B4": 3}


def variant(exp, masked=0.55, rel=0.01, radial=0.50, val=0.95, thetae=GOOD_BINS, **extra):
    """A finished masking variant as the engine writes it: the unmasked probe is B1's (the same val
    images), the masked probe at the variant's radius is its own; θ_E from best.pt's val table."""
    m = run(core=B1_CORE, rel=rel, radial=radial, val=val, thetae=thetae)
    m["gates"][-1].update(mask_radius=RADIUS[exp], masked_core_lr_auc=masked, masked_radial_lr_auc=radial)
    m.update(final_mask_radius=RADIUS[exp], final_masked_core_lr_auc=masked, final_masked_radial_lr_auc=radial,
             final_val_auroc_by_thetae=m["gates"][-1]["val_auroc_by_thetae"])
    if exp == "B3":
        m["best_epoch"] = 9     # B3's schedule masks at R=7 in epochs 0-9
    m.update(extra)
    return m


def variants(b2, b3, b4):
    return {"A1": A1, "B1": B1_SHORTCUT_IN_DATA, "B2": b2, "B3": b3, "B4": b4}


def spread(s):
    """θ_E bins with a PASSing minimum 0.85 and a spread of `s`."""
    return (0.85, 0.85 + s, 0.86, 0.86, 0.86, 0.86)


def V(exp, **kw):
    return lambda: variant(exp, **kw)


# Boundary cases of the sub-tree on values of the engine's shape (tests/test_variant_subtree.py
# reaches each branch with values the engine computed).
VARIANT_TABLE = [
    # id, B2, B3, B4, branch, base
    ("b3_passes", V("B2"), V("B3"), V("B4"), "use_b3", "B3"),
    ("b3_passes_alone", V("B2", masked=0.70), V("B3"), V("B4", masked=0.70), "use_b3", "B3"),
    ("b2_better_spread", V("B2", thetae=spread(0.05)), V("B3", masked=0.62), V("B4", masked=0.70), "use_b2", "B2"),
    ("b4_better_spread", V("B2", masked=0.70), V("B3", masked=0.62), V("B4", thetae=spread(0.10)), "use_b4", "B4"),
    ("both_better_b4_lower", V("B2", thetae=spread(0.12)), V("B3", masked=0.62),
     V("B4", thetae=spread(0.08)), "use_b4", "B4"),
    ("both_tie", V("B2", thetae=spread(0.08)), V("B3", masked=0.62), V("B4", thetae=spread(0.08)),
     "outside_plan", None),
    ("b2_spread_on_the_warn_bound", V("B2", thetae=spread(0.15)), V("B3", masked=0.62), V("B4", masked=0.70),
     "outside_plan", None),                          # spread exactly 0.15 is WARN: B2 does not pass
    ("all_fail_core", V("B2", masked=0.70), V("B3", rel=0.06), V("B4", masked=0.66, rel=0.051),
     "stop_data_redesign", None),
    ("fail_differently", V("B2", masked=0.62), V("B3", radial=0.61), V("B4", masked=0.70), "outside_plan", None),
    ("b3_warn_only_on_val_target", V("B2", masked=0.70), V("B3", val=0.90), V("B4", masked=0.70),
     "outside_plan", None),                          # val exactly 0.90 is not > 0.90: B3 does not pass
    ("b3_thetae_min_warn", V("B2", masked=0.70), V("B3", thetae=(0.80, 0.9, 0.9, 0.9, 0.9, 0.9)),
     V("B4", masked=0.70), "outside_plan", None),
]


@pytest.mark.parametrize("name,b2,b3,b4,branch,base", VARIANT_TABLE, ids=[c[0] for c in VARIANT_TABLE])
def test_masking_variant_branches(name, b2, b3, b4, branch, base):
    d = decide(variants(b2(), b3(), b4()), CONFIG)
    assert d.branch == branch, d.reason
    assert d.base == base
    assert d.next_experiments == (("FULL",) if base else ())
    assert d.stop == (branch == "stop_data_redesign")
    assert d.outside_plan == (branch == "outside_plan")
    assert d.criterion
    assert "B1 has core LR AUC 0.70 and core_reliance 0.02" in d.reason
    assert d.core_gate_reading == "masked" and any("masked at its radius" in r for r in d.readings)


def test_the_unmasked_reading_gives_every_variant_b1s_core_and_so_stops():
    """The reading before issue 14: B1-B4 share the unmasked images, so no variant can pass."""
    unmasked = replace(CONFIG, decision=replace(CONFIG.decision, variant_core_gate="unmasked"))
    for name, b2, b3, b4, *_ in VARIANT_TABLE:
        d = decide(variants(b2(), b3(), b4()), unmasked)
        assert d.branch == "stop_data_redesign", name
        assert d.core_gate_reading == "unmasked"
        assert "B2 core_lr_auc FAIL (0.70)" in d.criterion


def test_variant_criteria_are_named():
    d = decide(variants(variant("B2"), variant("B3"), variant("B4", masked=0.70)), CONFIG)
    assert d.criterion == ("B3 passes all criteria (core_lr_auc, radial_lr_auc, core_reliance, "
                           "thetae_min_bin_auroc, thetae_max_spread, val_auroc: every one PASS)")
    assert "B2 also passes; §10 prefers B3 (its first sub-branch)" in d.notes
    assert d.numbers["B3.final_masked_core_lr_auc"] == 0.55 and d.numbers["B3.final_core_lr_auc"] == 0.70
    d = decide(variants(variant("B2", thetae=spread(0.05)), variant("B3", masked=0.62),
                        variant("B4", masked=0.70)), CONFIG)
    assert "θ_E spread 0.05 is lower than B1's 0.15 (the latest val gates' bins, not best.pt's)" in d.criterion
    assert "B3 does not pass (core_lr_auc WARN (0.62 masked at R=7))" in d.reason
    assert d.numbers["B2.thetae_max_spread_val_gate"] == 0.05 and d.numbers["B1.thetae_max_spread_val_gate"] == 0.15
    d = decide(variants(variant("B2", masked=0.70), variant("B3", rel=0.06), variant("B4", masked=0.66, rel=0.051)),
               CONFIG)
    assert d.criterion.startswith("every variant FAILs a core criterion")
    assert "B3 core_reliance FAIL (0.06)" in d.criterion
    assert "B2 core_lr_auc FAIL (0.70 masked at R=5)" in d.criterion


def test_spreads_compare_best_pt_val_tables_when_both_runs_have_them():
    b1 = run(core=B1_CORE, rel=0.02, thetae=spread(0.05),
             final_val_auroc_by_thetae=[{"bin": list(b), "auroc": a, "count": 400, "note": None}
                                        for b, a in zip(BINS, spread(0.15))])
    d = decide({"A1": A1, "B1": b1, "B2": variant("B2", thetae=spread(0.08)), "B3": variant("B3", masked=0.62),
                "B4": variant("B4", masked=0.70)}, CONFIG)
    # The gate bins would say 0.08 > 0.05 (not better); best.pt's tables say 0.08 < 0.15.
    assert d.branch == "use_b2", d.reason
    assert "lower than B1's 0.15 (val bins of best.pt)" in d.criterion


def test_variants_failing_differently_explain_each_one():
    d = decide(variants(variant("B2", masked=0.62), variant("B3", radial=0.61), variant("B4", masked=0.70)), CONFIG)
    assert "B2 does not pass: core_lr_auc WARN (0.62 masked at R=5)" in d.reason
    assert "B3 does not pass: radial_lr_auc FAIL (0.61)" in d.reason
    assert "B4 does not pass: core_lr_auc FAIL (0.70 masked at R=3)" in d.reason
    assert "B2, B3 do not" in d.reason


@pytest.mark.parametrize("b2_spread", [0.09, 0.05])
def test_a_passing_variant_whose_spread_is_not_lower_than_b1s_is_outside_the_plan(b2_spread):
    b1 = run(core=B1_CORE, rel=0.02, thetae=spread(0.05))
    d = decide({"A1": A1, "B1": b1, "B2": variant("B2", thetae=spread(b2_spread)), "B3": variant("B3", masked=0.62),
                "B4": variant("B4", masked=0.70)}, CONFIG)
    assert d.branch == "outside_plan"
    assert (f"B2 passes all criteria, but its θ_E spread {b2_spread:.2f} is not lower than B1's 0.05 "
            "(the latest val gates' bins, not best.pt's)") in d.reason


def test_a_failing_test_auroc_does_not_stop_a_variant_whose_val_numbers_pass():
    held_out = {"test_auroc": 0.60,
                "test_auroc_by_thetae": [{"bin": list(b), "auroc": a, "count": 400, "note": None}
                                         for b, a in zip(BINS, (0.55, 0.6, 0.9, 0.95, 0.97, 0.99))]}
    d = decide(variants(variant("B2", masked=0.70), variant("B3", **held_out), variant("B4", masked=0.70)), CONFIG)
    assert d.branch == "use_b3" and d.base == "B3"
    assert "test" not in " ".join(d.numbers)


def test_a_variant_without_its_masked_probe_is_not_complete():
    b3 = variant("B3")
    del b3["final_masked_core_lr_auc"]
    d = decide(variants(variant("B2"), b3, variant("B4")), CONFIG)
    assert d.branch == "test_masking" and d.next_experiments == ("B3",)
    assert "B3 ended with no final_masked_core_lr_auc" in d.reason


def test_a_masked_probe_without_a_value_is_not_replaced_by_the_unmasked_one():
    b3 = variant("B3", final_gate_note="gate not computed: too few LRGs")
    b3["final_masked_core_lr_auc"] = None
    b3["final_core_lr_auc"] = 0.55            # would PASS if it were read instead
    d = decide(variants(variant("B2", masked=0.70), b3, variant("B4", masked=0.70)), CONFIG)
    assert d.branch == "test_masking" and "B3 ended with no final_masked_core_lr_auc" in d.reason


def test_variants_still_running_keep_the_masking_branch_and_offer_what_is_not_started():
    d = decide(variants(running(12), variant("B3"), None), CONFIG)
    assert d.branch == "test_masking" and d.next_experiments == ("B4",)
    assert "B2 has no final_core_lr_auc yet (status running, epoch 12/50)" in d.reason
    assert "B4 has not run yet" in d.reason and "once all three are complete" in d.reason


def test_a_missing_experiment_in_the_config_is_a_config_error():
    cut = replace(CONFIG, experiments=MappingProxyType({k: v for k, v in CONFIG.experiments.items() if k != "B3"}))
    with pytest.raises(ConfigError, match="missing: B3"):
        decide({}, cut)


def test_the_decision_modules_import_without_torch_numpy_or_matplotlib():
    code = ("import sys, engine.results.decision, engine.results.verdicts, engine.results.report; "
            "bad = [m for m in ('torch', 'numpy', 'sklearn', 'matplotlib', 'lenstui') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_status_entry_with_an_observed_state_is_read_like_metrics():
    # lenstui passes the status probe's entries: `state` (observed, may be lost) beside `written_status`.
    entry = {**running(9), "state": "lost", "written_status": "running"}
    del entry["status"]
    d = decide({"A1": A1, "B1": entry}, CONFIG)
    assert d.branch == "waiting" and d.next_experiments == ("B1",)
    assert "B1 ended with no final_core_lr_auc (status lost, epoch 9/50): relaunch it" in d.reason


def test_a_spread_that_cannot_be_compared_is_outside_the_plan():
    b1 = run(core=B1_CORE, rel=0.02, thetae=(0.85, None, None, None, None, None))   # one bin: no spread
    d = decide({"A1": A1, "B1": b1, "B2": variant("B2"), "B3": variant("B3", masked=0.62),
                "B4": variant("B4", masked=0.70)}, CONFIG)
    assert d.branch == "outside_plan"
    assert ("B2 passes all criteria, but its θ_E spread cannot be compared with B1's (the latest val gates' "
            "bins, not best.pt's: B2 0.09, B1 –)") in d.reason


def test_b1s_ungrouped_probe_is_named_when_it_would_change_the_branch():
    b1 = run(core=0.557, rel=0.01, final_core_lr_auc_ungrouped=0.698)
    d = decide({"A1": A1, "B1": b1}, CONFIG)
    assert d.branch == "success_b1"
    assert any("ungrouped CV is 0.698" in n and "TEST MASKING" in n for n in d.notes)
    b1 = run(core=0.557, rel=0.01, final_core_lr_auc_ungrouped=0.58)    # the same branch: nothing to say
    assert not any("ungrouped" in n for n in decide({"A1": A1, "B1": b1}, CONFIG).notes)
