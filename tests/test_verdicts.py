"""Plan §6 verdicts: each band at, just below and just above both of its limits, and where values come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import files

from engine.config import load_config
from engine.results.verdicts import VERDICT_NAMES, compute_verdicts, gate_verdicts, thetae_summary

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "experiments.toml")
TH, TARGETS = CONFIG.thresholds, CONFIG.targets
BINS = CONFIG.metrics.thetae_bin_pairs
EPS = 1e-4


def bins(aurocs, counts=None):
    """θ_E bin records (the metrics.json shape) for the plan's six bins."""
    counts = counts or [400] * len(aurocs)
    return [{"bin": list(b), "auroc": a, "count": n, "note": None if a is not None else f"{n} positives < 50"}
            for b, a, n in zip(BINS, aurocs, counts)]


def verdict(metrics, name):
    return compute_verdicts(metrics, TH, TARGETS)[name]


# (verdict name, metrics that put `value` into it, value, expected)
def _band_cases():
    cases = []
    lower = {"core_lr_auc": (0.60, 0.65), "radial_lr_auc": (0.55, 0.60), "core_reliance": (0.03, 0.05),
             "thetae_max_spread": (0.15, 0.20)}
    for name, (p, f) in lower.items():
        for value, expected in ((p - EPS, "PASS"), (p, "WARN"), (p + EPS, "WARN"),
                                (f - EPS, "WARN"), (f, "WARN"), (f + EPS, "FAIL")):
            cases.append((name, value, expected))
    p, f = 0.80, 0.70   # θ_E min bin AUROC: higher is better
    for value, expected in ((p + EPS, "PASS"), (p, "WARN"), (p - EPS, "WARN"),
                            (f + EPS, "WARN"), (f, "WARN"), (f - EPS, "FAIL")):
        cases.append(("thetae_min_bin_auroc", value, expected))
    return cases


def _metrics_for(name, value):
    if name in ("core_lr_auc", "radial_lr_auc"):
        return {f"final_{name}": value}
    if name == "core_reliance":
        return {"core_reliance": value}
    if name == "thetae_min_bin_auroc":
        return {"gates": [{"after_epochs": 5, "val_auroc_by_thetae": bins([value, 0.9, 0.9, 0.9, 0.9, 0.9])}]}
    # spread: the top bin fixed at 0.95, the lowest at 0.95 - value
    return {"gates": [{"after_epochs": 5, "val_auroc_by_thetae": bins([0.95 - value, 0.95, 0.94, 0.93, 0.93, 0.95])}]}


@pytest.mark.parametrize("name,value,expected", _band_cases())
def test_every_band_at_just_below_and_just_above_both_limits(name, value, expected):
    v = verdict(_metrics_for(name, value), name)
    assert v["verdict"] == expected
    assert v["value"] == pytest.approx(value, abs=1e-9)
    assert "PASS" in v["rule"] and "FAIL" in v["rule"]


def test_a_spread_that_is_a_bound_after_float_subtraction_is_on_the_bound():
    # 0.95 - 0.80 is 0.1499999... in floating point; the plan means 0.15, which is WARN, not PASS.
    m = {"gates": [{"after_epochs": 5, "val_auroc_by_thetae": bins([0.80, 0.95, 0.9, 0.9, 0.9, 0.9])}]}
    v = verdict(m, "thetae_max_spread")
    assert v["value"] == 0.15 and v["verdict"] == "WARN"
    # and a reliance written as 0.93 - 0.88 = 0.05000000000000004 is WARN, not FAIL
    assert verdict({"core_reliance": 0.93 - 0.88}, "core_reliance")["verdict"] == "WARN"


@pytest.mark.parametrize("name,key,target", [("val_auroc", "best_val_auroc", 0.90),
                                              ("test_auroc", "test_auroc", 0.88)])
@pytest.mark.parametrize("delta,expected", [(-EPS, "FAIL"), (0.0, "FAIL"), (EPS, "PASS")])
def test_quality_targets_pass_only_strictly_above_and_never_warn(name, key, target, delta, expected):
    v = verdict({key: target + delta}, name)
    assert v["verdict"] == expected
    assert "target, not a band" in v["rule"]


def test_theta_e_rule_says_between_pass_and_fail_is_warn():
    for name in ("thetae_min_bin_auroc", "thetae_max_spread"):
        assert "§6.3 names only PASS and FAIL" in verdict({}, name)["rule"]


def test_final_value_wins_over_gates_and_source_says_which():
    gates = [{"after_epochs": 0, "core_lr_auc": 0.70, "radial_lr_auc": 0.50, "gate_n_samples": 2000},
             {"after_epochs": 10, "core_lr_auc": 0.62, "radial_lr_auc": 0.58, "gate_n_samples": 2000},
             {"after_epochs": 5, "core_lr_auc": 0.66, "radial_lr_auc": 0.61, "gate_n_samples": 2000}]
    running = {"gates": gates}
    core = verdict(running, "core_lr_auc")
    assert (core["value"], core["verdict"], core["source"]) == (0.62, "WARN", "gates[after_epochs=10].core_lr_auc")
    assert "final_core_lr_auc not written yet" in core["note"] and "after 10 epochs" in core["note"]
    done = {"gates": gates, "final_core_lr_auc": 0.58, "final_radial_lr_auc": 0.61}
    assert verdict(done, "core_lr_auc")["source"] == "final_core_lr_auc"
    assert verdict(done, "core_lr_auc")["verdict"] == "PASS"
    assert verdict(done, "radial_lr_auc")["verdict"] == "FAIL"


def test_theta_e_uses_best_pt_val_bins_else_the_latest_gate_never_test_and_names_excluded_bins():
    gates = [{"after_epochs": 5, "val_auroc_by_thetae": bins([0.60, 0.9, 0.9, 0.9, 0.9, 0.9])},
             {"after_epochs": 10, "val_auroc_by_thetae": bins([None, 0.85, 0.9, 0.92, 0.93, None],
                                                              counts=[12, 400, 400, 400, 400, 30])}]
    v = verdict({"gates": gates}, "thetae_min_bin_auroc")
    assert v["value"] == 0.85 and v["verdict"] == "PASS"
    assert v["source"] == "gates[after_epochs=10].val_auroc_by_thetae"
    assert "not best.pt" in v["note"]
    assert "[0.50, 0.75): 12 positives < 50" in v["note"] and "[2.50, 3.00): 30 positives < 50" in v["note"]
    assert verdict({"gates": gates}, "thetae_max_spread")["value"] == pytest.approx(0.08)

    # The test bins are held out: however bad, no verdict reads them.
    with_test = {"gates": gates, "test_auroc_by_thetae": bins([0.55, 0.9, 0.9, 0.9, 0.9, 0.95])}
    assert verdict(with_test, "thetae_min_bin_auroc") == verdict({"gates": gates}, "thetae_min_bin_auroc")
    assert thetae_summary(with_test, "test").min_auroc == 0.55  # the report's held-out table asks by name

    # best.pt's own val table, written at the end of training, is what §6.3 reads.
    final = {**with_test, "final_val_auroc_by_thetae": bins([0.78, 0.9, 0.9, 0.9, 0.9, 0.95])}
    v = verdict(final, "thetae_min_bin_auroc")
    assert (v["value"], v["verdict"], v["source"]) == (0.78, "WARN", "final_val_auroc_by_thetae")
    assert "best.pt" in v["note"]


def test_a_spread_needs_two_bins_with_an_auroc():
    m = {"gates": [{"after_epochs": 5, "val_auroc_by_thetae": bins([0.9, None, None, None, None, None])}]}
    spread = verdict(m, "thetae_max_spread")
    assert spread["verdict"] is None and "at least two bins" in spread["note"]
    assert verdict(m, "thetae_min_bin_auroc")["verdict"] == "PASS"


def test_a_run_with_nothing_yet_has_no_verdicts_and_says_why():
    v = compute_verdicts({"status": "running", "history": [], "gates": []}, TH, TARGETS)
    assert list(v) == list(VERDICT_NAMES)
    for name, entry in v.items():
        assert entry["verdict"] is None and entry["value"] is None and entry["note"], name
    assert "final evaluation only" in v["test_auroc"]["note"]


def test_best_val_auroc_so_far_is_used_while_running_and_garbage_is_not_a_number():
    running = {"history": [{"epoch": 0, "val_auroc": 0.80}, {"epoch": 1, "val_auroc": 0.93},
                           {"epoch": 2, "val_auroc": 0.91}]}
    v = verdict(running, "val_auroc")
    assert (v["value"], v["verdict"]) == (0.93, "PASS") and v["source"].startswith("history")
    assert verdict({"core_reliance": "0.01"}, "core_reliance")["verdict"] is None
    assert verdict({"core_reliance": True}, "core_reliance")["verdict"] is None


def test_gate_verdicts_of_one_gate_record():
    gate = {"after_epochs": 15, "core_lr_auc": 0.65, "radial_lr_auc": 0.5499, "gate_n_samples": 2000}
    g = gate_verdicts(gate, TH)
    assert set(g) == {"core_lr_auc", "radial_lr_auc"}
    assert (g["core_lr_auc"]["verdict"], g["radial_lr_auc"]["verdict"]) == ("WARN", "PASS")
    assert g["core_lr_auc"]["source"] == "gates[after_epochs=15].core_lr_auc"
    assert gate_verdicts({"after_epochs": 0, "core_lr_auc": None}, TH)["core_lr_auc"]["verdict"] is None


def test_verdicts_survive_the_metrics_file(tmp_path):
    m = {"final_core_lr_auc": 0.61, "core_reliance": 0.02, "best_val_auroc": 0.95,
         "gates": [{"after_epochs": 5, "val_auroc_by_thetae": bins([0.81, 0.9, 0.9, 0.9, 0.9, None])}]}
    m["verdicts"] = compute_verdicts(m, TH, TARGETS)
    files.atomic_write_json(tmp_path / "metrics.json", m)
    back = json.loads((tmp_path / "metrics.json").read_text())["verdicts"]
    assert back["core_lr_auc"] == {"verdict": "WARN", "value": 0.61, "rule": m["verdicts"]["core_lr_auc"]["rule"],
                                   "source": "final_core_lr_auc", "note": None, "reading": "unmasked",
                                   "mask_radius": None, "ungrouped_value": None,
                                   "ungrouped_source": "final_core_lr_auc_ungrouped", "raw_robust_value": None,
                                   "raw_robust_source": None, "uninformative": None,
                                   # an old file without intervals: none, and no edge crossed
                                   "interval": None, "interval_source": None, "seeds": None,
                                   "crosses": [], "uncertain": None}
    assert back["core_lr_auc"]["rule"] == "PASS < 0.60, WARN 0.60–0.65, FAIL > 0.65 (§6.1)"


# ---------------------------------------------------------------------------
# What the gate verdicts read (issue 14)

MASKED_RUN = {"final_gate_n_samples": 10000, "final_core_lr_auc": 0.71, "final_core_lr_auc_ungrouped": 0.83,
              "final_radial_lr_auc": 0.50, "final_mask_radius": 3, "final_masked_core_lr_auc": 0.56,
              "final_masked_core_lr_auc_ungrouped": 0.68, "final_raw_robust_core_lr_auc": 0.86}


def test_a_masking_run_is_judged_on_its_masked_probe_with_the_unmasked_one_beside_it():
    v = verdict(MASKED_RUN, "core_lr_auc")
    assert (v["value"], v["verdict"], v["source"]) == (0.56, "PASS", "final_masked_core_lr_auc")
    assert (v["reading"], v["mask_radius"], v["unmasked_value"]) == ("masked", 3, 0.71)
    assert (v["ungrouped_value"], v["raw_robust_value"]) == (0.68, 0.86)
    assert "masked at R=3" in v["note"]


def test_the_unmasked_reading_judges_the_data_as_stored():
    v = compute_verdicts(MASKED_RUN, TH, TARGETS, variant_core_gate="unmasked")["core_lr_auc"]
    assert (v["value"], v["verdict"], v["source"], v["reading"]) == (0.71, "FAIL", "final_core_lr_auc", "unmasked")
    assert v["ungrouped_value"] == 0.83


def test_a_run_without_a_mask_is_judged_unmasked_under_either_reading():
    b1 = {"final_gate_n_samples": 10000, "final_core_lr_auc": 0.62, "final_mask_radius": None,
          "final_masked_core_lr_auc": None}
    for reading in ("masked", "unmasked"):
        v = compute_verdicts(b1, TH, TARGETS, variant_core_gate=reading)["core_lr_auc"]
        assert (v["value"], v["reading"]) == (0.62, "unmasked")


def test_a_masked_probe_without_a_value_stays_without_one():
    m = {**MASKED_RUN, "final_masked_core_lr_auc": None, "final_gate_note": "gate not computed: 3 LRGs"}
    v = verdict(m, "core_lr_auc")
    assert v["value"] is None and v["verdict"] is None
    assert "final_masked_core_lr_auc has no value: gate not computed: 3 LRGs" in v["note"]


def test_while_training_the_latest_gate_is_read_at_its_mask_radius():
    running = {"gates": [{"after_epochs": 5, "core_lr_auc": 0.71, "radial_lr_auc": 0.5, "gate_n_samples": 2000,
                          "mask_radius": 7, "masked_core_lr_auc": 0.52, "core_lr_auc_ungrouped": 0.8,
                          "masked_core_lr_auc_ungrouped": 0.6}]}
    v = verdict(running, "core_lr_auc")
    assert (v["value"], v["source"], v["mask_radius"]) == (0.52, "gates[after_epochs=5].masked_core_lr_auc", 7)
    assert v["ungrouped_value"] == 0.6 and "not written yet" in v["note"]


def test_a_radial_pass_on_residual_inputs_says_it_cannot_fail():
    m = {"final_radial_lr_auc": 0.50, "final_radial_feature_max_abs": 1.2e-4, "inputs": {"preprocessing": "residual"},
         "final_raw_robust_radial_lr_auc": 0.93}
    v = verdict(m, "radial_lr_auc")
    assert v["verdict"] == "PASS"
    assert "cannot fail on residual inputs" in v["uninformative"] and "1.2e-04" in v["uninformative"]
    assert "raw_robust inputs the same val rows give 0.93" in v["uninformative"]
    raw = {"final_radial_lr_auc": 0.52, "final_radial_feature_max_abs": 3.1, "inputs": {"preprocessing": "raw_robust"}}
    assert verdict(raw, "radial_lr_auc")["uninformative"] is None
    # Without the inputs recorded (an older run), the measured feature scale says it.
    assert verdict({"final_radial_lr_auc": 0.5, "final_radial_feature_max_abs": 1e-4}, "radial_lr_auc")["uninformative"]


def test_the_test_auroc_verdict_is_reported_and_marked_held_out():
    v = verdict({"test_auroc": 0.91}, "test_auroc")
    assert v["verdict"] == "PASS" and "held out" in v["rule"] and "never used to choose" in v["note"]
