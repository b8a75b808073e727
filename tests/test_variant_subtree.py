"""§10's masking sub-tree on results the engine computed (tests/engine_made_runs.py), branch by branch.

Every core value below comes out of engine.training.evaluate.final_val_metrics on a val split that B1-B4
share, so it is one the engine can write: the variants' unmasked core probes equal B1's, and
what tells them apart is the radius each is masked at and what each model looks at.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from engine.config import load_config
from engine.results.decision import decide
from engine.results.verdicts import compute_verdicts
from engine_made_runs import engine_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "experiments.toml")
UNMASKED = replace(CONFIG, decision=replace(CONFIG.decision, variant_core_gate="unmasked"))

# B3's schedule: R=7 in epochs 0-9, R=5 in 10-29, R=3 from 30. Its best.pt epoch sets its radius.
EARLY, LATE = 5, 36   # best.pt epochs, counted from 1: B3 masks at R=7 in epochs 1-10, R=3 from 31

# id, where the data's core shortcut lies (counter-images at r < this), B2/B3/B4 as
# (model, best epoch), expected branch. B1 and A1 are the "broad" model (a wide θ_E spread).
TABLE = [
    # r < 5: masking at R=5 or 7 removes the shortcut, R=3 does not.
    ("use_b3", 5, ("arcs", EARLY), ("arcs", EARLY), ("arcs", EARLY), "use_b3"),
    ("use_b2_by_spread", 5, ("arcs", EARLY), ("arcs", LATE), ("arcs", EARLY), "use_b2"),
    ("all_fail_core_stop", 5, ("core", EARLY), ("arcs", LATE), ("arcs", EARLY), "stop_data_redesign"),
    ("none_passes_not_all_fail_core", 5, ("weak", EARLY), ("arcs", LATE), ("arcs", EARLY), "outside_plan"),
    # r < 3: every radius removes it; B2 and B3 fail on their models.
    ("use_b4_by_spread", 3, ("weak", EARLY), ("core", EARLY), ("arcs", EARLY), "use_b4"),
]


def results(shortcut_radius, b2, b3, b4):
    b1 = engine_run(CONFIG, "B1", shortcut_radius, "broad")
    out = {"A1": engine_run(CONFIG, "A1", shortcut_radius, "broad"), "B1": b1}
    for exp, (model, best_epoch) in zip(("B2", "B3", "B4"), (b2, b3, b4)):
        out[exp] = engine_run(CONFIG, exp, shortcut_radius, model, best_epoch=best_epoch)
    return out


@pytest.mark.parametrize("name,rs,b2,b3,b4,branch", TABLE, ids=[row[0] for row in TABLE])
def test_each_branch_of_the_variant_subtree_from_engine_made_results(name, rs, b2, b3, b4, branch):
    runs = results(rs, b2, b3, b4)
    b1_core = runs["B1"]["final_core_lr_auc"]
    # What the engine writes: every variant carries B1's unmasked probe; B1 opens the sub-tree.
    assert b1_core > CONFIG.thresholds.core_lr_auc.fail_limit and runs["B1"]["core_reliance"] < 0.05
    assert all(runs[v]["final_core_lr_auc"] == b1_core for v in ("B2", "B3", "B4"))
    assert [runs[v]["final_mask_radius"] for v in ("B2", "B3", "B4")] == [5, 7 if b3[1] == EARLY else 3, 3]

    d = decide(runs, CONFIG)
    assert d.branch == branch, d.reason
    assert d.core_gate_reading == "masked"
    assert d.base == ({"use_b2": "B2", "use_b3": "B3", "use_b4": "B4"}.get(branch))
    # The decision shows the numbers it followed, the masked gate beside the data's shortcut.
    for v in ("B2", "B3", "B4"):
        assert d.numbers[f"{v}.final_masked_core_lr_auc"] == runs[v]["final_masked_core_lr_auc"]
        assert d.numbers[f"{v}.final_core_lr_auc"] == b1_core

    # Under the reading before issue 14 (the unmasked probe) the same results always STOP.
    old = decide(runs, UNMASKED)
    assert old.branch == "stop_data_redesign" and old.core_gate_reading == "unmasked"


def test_the_spread_decides_between_b2_and_b4_on_best_pt_val_tables():
    d = decide(results(5, ("arcs", EARLY), ("arcs", LATE), ("arcs", EARLY)), CONFIG)
    assert "(val bins of best.pt)" in d.criterion
    assert d.numbers["B2.thetae_max_spread_val"] < d.numbers["B1.thetae_max_spread_val"]


def test_b3s_gate_is_masked_at_the_radius_of_its_best_pt_epoch():
    early = engine_run(CONFIG, "B3", 5, "arcs", best_epoch=EARLY)
    late = engine_run(CONFIG, "B3", 5, "arcs", best_epoch=LATE)
    v_early = compute_verdicts(early, CONFIG.thresholds, CONFIG.targets)["core_lr_auc"]
    v_late = compute_verdicts(late, CONFIG.thresholds, CONFIG.targets)["core_lr_auc"]
    assert (v_early["mask_radius"], v_early["verdict"]) == (7, "PASS")
    assert (v_late["mask_radius"], v_late["verdict"]) == (3, "FAIL")
    assert v_early["unmasked_value"] == v_late["unmasked_value"] == early["final_core_lr_auc"]


def test_the_radial_pass_on_residual_inputs_is_flagged_as_unable_to_fail():
    runs = results(5, ("arcs", EARLY), ("arcs", EARLY), ("arcs", EARLY))
    radial = compute_verdicts(runs["B3"], CONFIG.thresholds, CONFIG.targets)["radial_lr_auc"]
    assert radial["verdict"] == "PASS" and "cannot fail on residual inputs" in radial["uninformative"]
    assert runs["B3"]["final_radial_feature_max_abs"] < 1e-3
    assert any("radial_lr_auc PASS of B2, B3, B4" in n for n in decide(runs, CONFIG).notes)


def _with_test_numbers(metrics, rng):
    """`metrics` with every test_* value replaced at random (a held-out set that went anywhere)."""
    out = dict(metrics)
    out["test_auroc"] = rng.uniform(0.3, 1.0)
    out["test_auroc_by_thetae"] = [{"bin": list(b), "auroc": rng.uniform(0.3, 1.0), "count": 100, "note": None}
                                   for b in CONFIG.metrics.thetae_bin_pairs]
    out["test_core_sensitivity"] = [{"radius": r, "auroc": rng.uniform(0.3, 1.0)}
                                    for r in CONFIG.metrics.sensitivity_radii]
    return out


@pytest.mark.parametrize("name,rs,b2,b3,b4,branch", TABLE, ids=[row[0] for row in TABLE])
def test_changing_only_test_numbers_never_changes_a_decision(name, rs, b2, b3, b4, branch):
    runs = results(rs, b2, b3, b4)
    before = decide(runs, CONFIG)
    rng = random.Random(14)
    for _ in range(20):
        changed = {e: _with_test_numbers(m, rng) for e, m in runs.items()}
        assert decide(changed, CONFIG) == before


def test_a_variant_whose_val_numbers_pass_is_chosen_though_its_test_numbers_would_fail():
    runs = results(5, ("arcs", EARLY), ("arcs", EARLY), ("arcs", EARLY))
    runs["B3"].update(test_auroc=0.62, test_auroc_by_thetae=[
        {"bin": list(b), "auroc": a, "count": 100, "note": None}
        for b, a in zip(CONFIG.metrics.thetae_bin_pairs, (0.51, 0.55, 0.6, 0.7, 0.9, 0.99))])
    verdicts = compute_verdicts(runs["B3"], CONFIG.thresholds, CONFIG.targets)
    assert verdicts["test_auroc"]["verdict"] == "FAIL" and "held out" in verdicts["test_auroc"]["rule"]
    d = decide(runs, CONFIG)
    assert d.branch == "use_b3" and d.base == "B3"


def test_the_report_shows_what_the_decision_read_beside_the_held_out_test(tmp_path):
    from engine import files
    from engine.protocol import rundir
    from engine.results.report import collect_runs, write_report

    runs = results(5, ("arcs", EARLY), ("arcs", LATE), ("arcs", EARLY))
    runs["B2"]["test_auroc"] = 0.61          # held out: shown, and it must not matter
    root = tmp_path / "runs"
    for exp, m in runs.items():
        d = rundir.run_dir(root, exp)
        d.mkdir(parents=True)
        m["updated_at"] = "2026-02-07T10:00:00+0000"
        files.atomic_write_json(d / rundir.METRICS_FILE, m)
        rundir.write_run_info(d, {"experiment": exp, "host": "lambda", "status": "done"})
    files = write_report(collect_runs([root], CONFIG), CONFIG, tmp_path / "planb", plots=False)
    md = files.markdown.read_text()
    assert files.decision.branch == "use_b2"
    probes = md.split("## Shortcut probes side by side")[1].split("\n## ")[0]
    b1_core, b2_masked = runs["B1"]["final_core_lr_auc"], runs["B2"]["final_masked_core_lr_auc"]
    b2_row = next(line for line in probes.splitlines() if line.startswith("| B2 |"))
    # Judged (masked at R=5), unmasked (B1's), masked, ungrouped: side by side, labelled.
    assert f"{b2_masked:.3f} (PASS, masked at R=5; 95% " in b2_row and f"| {b1_core:.3f} |" in b2_row
    assert f"{runs['B2']['final_core_lr_auc_ungrouped']:.3f}" in b2_row
    assert "Core, ungrouped (published method)" in probes
    assert "The radial gate cannot fail on residual inputs" in probes
    selection = md.split("## What the decision reads")[1].split("\n## ")[0]
    assert "Test AUROC (held out)" in selection and "0.610 (FAIL)" in selection
    # The decision follows from the printed val numbers: B2's masked gate PASSes, B3's (R=3) FAILs.
    b3_masked = runs["B3"]["final_masked_core_lr_auc"]
    assert f"{b3_masked:.3f} (FAIL, masked at R=3; 95% " in probes
    assert "B3 does not pass (core_lr_auc FAIL (" in files.decision.reason
    assert "masked at R=3, 95% " in files.decision.reason   # with its interval over LRGs
    assert "- Read: validation numbers only" in md
