"""Issue 19, table by table: a value whose interval crosses a band edge is marked; a §10 decision whose
inputs any interval puts within reach of another branch is "too close to call"; one well inside is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.numbers import in_words
from engine.results.decision import decide
from engine.results.uncertainty import crossed, replicates_needed, seed_spread, t975
from engine.results.verdicts import compute_verdicts, verdict_words

from tests.test_decision import A1, run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "experiments.toml")
TH = CONFIG.thresholds


# (value, its 95% interval over LRGs, verdict, the edges it crosses). core_reliance: PASS < 0.03,
# WARN 0.03–0.05 (both included), FAIL > 0.05.
RELIANCE_TABLE = [
    (0.048, (0.041, 0.056), "WARN", [0.05]),      # the issue's example
    (0.0503, (0.046, 0.055), "FAIL", [0.05]),     # the synthetic twin's B1: FAIL, within reach of WARN
    (0.040, (0.035, 0.045), "WARN", []),          # well inside WARN
    (0.010, (-0.005, 0.020), "PASS", []),         # well inside PASS
    (0.040, (0.025, 0.060), "WARN", [0.03, 0.05]),
    (0.045, (0.041, 0.050), "WARN", []),          # 0.05 itself is WARN: the interval stays on one side
    (0.028, (0.020, 0.030), "PASS", [0.03]),      # 0.03 itself is WARN: it reaches it
]


@pytest.mark.parametrize("value,interval,verdict,edges", RELIANCE_TABLE)
def test_a_verdict_whose_interval_crosses_a_band_edge_is_marked(value, interval, verdict, edges):
    m = run(rel=value, core_reliance_ci95=list(interval))
    v = compute_verdicts(m, TH, CONFIG.targets)["core_reliance"]
    assert v["verdict"] == verdict                      # judged on the point estimate
    assert v["interval"] == list(interval) and v["interval_source"] == "core_reliance_ci95"
    assert v["crosses"] == edges
    words = verdict_words(v)
    assert words.startswith(f"{verdict} ({in_words(value)}, 95% {in_words(interval[0])}–{in_words(interval[1])}")
    assert ("crosses" in words) == bool(edges)


def test_the_issues_example_reads_as_the_issue_writes_it():
    v = compute_verdicts(run(rel=0.048, core_reliance_ci95=[0.041, 0.056]), TH, CONFIG.targets)["core_reliance"]
    assert verdict_words(v) == "WARN (0.048, 95% 0.041–0.056: crosses 0.05)"


def test_a_higher_is_better_band_and_a_target_are_marked_too():
    m = run(val=0.87, thetae=(0.74, 0.8, 0.8, 0.8, 0.8, 0.8), best_val_auroc_ci95=[0.84, 0.92],
            final_val_thetae_min_bin_auroc_ci95=[0.70, 0.78],
            final_val_auroc_by_thetae=[{"bin": list(b), "auroc": a, "count": 400, "note": None}
                                       for b, a in zip(CONFIG.metrics.thetae_bin_pairs, (0.74, 0.8, 0.8, 0.8, 0.8, 0.8))])
    v = compute_verdicts(m, TH, CONFIG.targets)
    assert v["val_auroc"]["crosses"] == [CONFIG.targets.val_auroc]          # target 0.90 inside [0.84, 0.92]
    assert v["thetae_min_bin_auroc"]["verdict"] == "WARN"                  # PASS ≥ 0.80, FAIL < 0.70
    assert v["thetae_min_bin_auroc"]["crosses"] == [], "[0.70, 0.78] stays within WARN (0.70 itself is WARN)"
    m["final_val_thetae_min_bin_auroc_ci95"] = [0.69, 0.78]
    assert compute_verdicts(m, TH, CONFIG.targets)["thetae_min_bin_auroc"]["crosses"] == [0.7]


def test_an_old_metrics_file_without_intervals_marks_nothing():
    v = compute_verdicts(run(rel=0.0503), TH, CONFIG.targets)["core_reliance"]
    assert v["verdict"] == "FAIL" and v["interval"] is None and v["crosses"] == [] and v["uncertain"] is None


def test_a_seed_spread_alone_marks_a_verdict_and_names_its_seeds():
    m = run(rel=0.046, core_reliance_seeds={"values": [0.040, 0.046, 0.052]})
    v = compute_verdicts(m, TH, CONFIG.targets)["core_reliance"]
    assert v["seeds"]["n"] == 3 and v["crosses"] == [0.05]
    assert "± 0.006 (3 seeds)" in verdict_words(v) and "95% over seeds" in verdict_words(v)


# §10 on B1: (core, its interval, reliance, its interval, branch, too close to call)
B1_CLOSE_TABLE = [
    (0.55, (0.52, 0.58), 0.010, (0.000, 0.020), "success_b1", False),       # well inside SUCCESS
    (0.55, (0.52, 0.61), 0.010, (0.000, 0.020), "success_b1", True),        # core could be 0.60–0.65
    (0.70, (0.68, 0.72), 0.0503, (0.046, 0.055), "stop_shortcut", True),    # the twin's B1: WARN within reach
    (0.70, (0.68, 0.72), 0.080, (0.070, 0.090), "stop_shortcut", False),
    (0.70, (0.64, 0.76), 0.010, (0.000, 0.020), "test_masking", True),      # core could be ACCEPTABLE
    (0.62, (0.61, 0.64), 0.040, (0.032, 0.048), "acceptable_b1", False),
    (0.62, (0.61, 0.64), 0.040, (0.032, 0.051), "acceptable_b1", True),     # reliance 0.05 … outside / STOP
]


@pytest.mark.parametrize("core,core_ci,rel,rel_ci,branch,close", B1_CLOSE_TABLE)
def test_a_decision_whose_inputs_could_flip_the_branch_is_too_close_to_call(core, core_ci, rel, rel_ci, branch, close):
    b1 = run(core=core, rel=rel, final_core_lr_auc_ci95=list(core_ci), core_reliance_ci95=list(rel_ci))
    d = decide({"A1": A1, "B1": b1}, CONFIG)
    assert d.branch == branch                     # the tree decides on the point estimates
    assert d.too_close_to_call is close
    if close:
        assert d.too_close[0].startswith("B1 core LR AUC ") and "could also give" in d.too_close[0]
        assert f"core_reliance {in_words(rel)}, 95% {in_words(rel_ci[0])}–{in_words(rel_ci[1])}" in d.too_close[0]
        assert d.settle and "--seeds 42,43,44" in d.settle[0]     # no seed spread yet: three seeds measure it
        assert d.settle_runs == (("B1", 3),)
        assert d.as_dict()["too_close_to_call"] is True
    else:
        assert d.too_close == () and d.settle == ()


def test_with_seeds_measured_the_panel_offers_as_many_seeds_as_would_clear_the_edge():
    b1 = run(core=0.70, rel=0.044, core_reliance_seeds={"values": [0.041, 0.044, 0.047]})
    d = decide({"A1": A1, "B1": b1}, CONFIG)
    assert d.branch == "test_masking" and d.too_close_to_call      # mean 0.044, 95% of mean 0.037–0.051
    n = replicates_needed(0.044, 0.003, 0.05, 3)
    assert n is not None and n > 3
    assert any(f"B1 with {n} seeds" in s for s in d.settle)
    assert d.settle_runs == (("B1", n),)


def test_seed_spread_and_replicates_needed_are_the_textbook_ones():
    s = seed_spread([1.0, 2.0, 3.0])
    assert (s.mean, s.sd) == (2.0, 1.0)
    assert (s.low, s.high) == pytest.approx((2.0 - 4.303 / 3 ** 0.5, 2.0 + 4.303 / 3 ** 0.5))
    assert t975(1) == 12.706 and t975(200) == pytest.approx(1.972, abs=0.001)
    assert seed_spread([0.5]) is None
    assert replicates_needed(0.044, 0.003, 0.05, 3) == 4        # t(3)·0.003/2 = 0.0048 < 0.006
    assert replicates_needed(0.0499, 0.01, 0.05, 3) is None     # too close for 10 seeds
    assert crossed(TH.core_reliance, 0.04, 0.06) == [0.05]
