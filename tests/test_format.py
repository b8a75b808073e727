"""The pure formatting functions behind every cell, panel and chart (no app needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.numbers import DASH, fixed, scientific
from engine.results.reading import epochs_text, latest_gate
from lenstui import cells, charts, hostlines, runs
from lenstui.fleet import HostSnapshot
from engine.data.cutouts import stretch_rgb
from lenstui.widgets.cutout import halfblock_strips

PLAN = Path(__file__).resolve().parents[1] / "experiments.toml"


@pytest.fixture(scope="module")
def config():
    return load_config(PLAN)


def snap(host, runs=None, gpus=(), connected=True, since=None, error=None, configured=True):
    status = None if runs is None else {"gpus": list(gpus), "runs": runs}
    return HostSnapshot(host, connected, configured, since, error, status)


def styles(text):
    return [str(span.style) for span in text.spans] + ([str(text.style)] if text.style else [])


def test_verdicts_are_words_in_their_colour_never_colour_alone():
    for word, colour in (("PASS", "green"), ("WARN", "yellow"), ("FAIL", "red")):
        cell = cells.verdict_text(word, 0.6123)
        assert cell.plain == f"0.612 {word}"
        assert colour in str(cell.style)
    assert cells.verdict_text(None, None).plain == DASH
    assert cells.verdict_text(None, 0.5).plain == "0.500"


def test_the_matrix_gate_cell_shows_the_judged_verdicts_a_variant_on_its_masked_probe(config):
    """B3's unmasked probe (the data's shortcut, shared with B1) FAILs; the gate it is judged on,
    masked at its radius, PASSes: the matrix says what the decision reads."""
    from engine.results.verdicts import compute_verdicts

    b3 = {"inputs": {"preprocessing": "residual"}, "history": [{"epoch": 1, "val_auroc": 0.9}],
          "gates": [{"after_epochs": 5, "core_lr_auc": 0.71, "radial_lr_auc": 0.50, "mask_radius": 7,
                     "masked_core_lr_auc": 0.55, "masked_radial_lr_auc": 0.50, "gate_n_samples": 2000}]}
    b3["verdicts"] = compute_verdicts(b3, config.thresholds, config.targets)
    assert b3["verdicts"]["core_lr_auc"]["reading"] == "masked"
    assert cells.gate_cell(latest_gate(b3), config).plain == "FAIL/PASS"     # the unmasked probe
    assert cells.judged_gate_cell(b3, config).plain == "PASS/PASS"                # what §6 and §10 judge
    del b3["verdicts"]                                                          # an engine before verdicts
    assert cells.judged_gate_cell(b3, config).plain == "FAIL/PASS"


def test_gate_cell_classifies_both_gates_with_the_plan_bands(config):
    cell = cells.gate_cell({"core_lr_auc": 0.62, "radial_lr_auc": 0.61}, config)
    assert cell.plain == "WARN/FAIL"          # §6.1: core 0.60–0.65 WARN, radial > 0.60 FAIL
    assert any("yellow" in s for s in styles(cell)) and any("red" in s for s in styles(cell))
    assert cells.gate_cell({"core_lr_auc": 0.59, "radial_lr_auc": None}, config).plain == "PASS/?"
    assert cells.gate_cell(None, config).plain == DASH


def test_epochs_count_from_history_or_the_probe_epoch():
    assert epochs_text({"history": [{}, {}, {}], "epochs_planned": 50}) == "3/50"
    assert epochs_text({"history": [], "epochs_planned": 50}) == "0/50"
    assert epochs_text({"epoch": 4, "epochs_planned": 50}) == "4/50", "epochs count from 1: the 4th is 4/50"
    assert epochs_text({}) == DASH


def test_matrix_row_before_and_during_a_run(config):
    b3 = config.experiment("B3")
    empty = cells.matrix_row(b3, None, config)
    assert empty["mask"] == "sched 7/5/3" and empty["status"].plain == "not run"
    entry = {"state": "running", "epochs_planned": 50,
             "history": [{"epoch": 1, "val_auroc": 0.81}, {"epoch": 2, "val_auroc": 0.79}],
             "gates": [{"after_epochs": 0, "core_lr_auc": 0.70, "radial_lr_auc": 0.50}],
             "verdicts": {"core_reliance": {"verdict": "WARN", "value": 0.04, "rule": "…"}}}
    row = cells.matrix_row(b3, runs.RunRef("B3", "lambda", entry), config)
    assert (row["host"], row["epoch"], row["val"], row["best"]) == ("lambda", "2/50", "0.790", "0.810")
    assert row["gates"].plain == "FAIL/PASS"
    assert row["reliance"].plain == "0.040 WARN"
    assert set(row) == {key for key, _ in cells.MATRIX_COLUMNS}
    full = cells.matrix_row(config.experiment("FULL"), None, config)
    assert full["mask"] == "from B1"


def test_the_run_that_stands_for_an_experiment_follows_the_one_rule():
    """engine/results/representative.py decides; a live run no longer hides a finished one by being live."""
    snaps = {"local": snap("local", {"A1": {"state": "done", "overrides": {"epochs": 2}, "epochs_planned": 2},
                                     "B1": {"state": "done", "overrides": {"epochs": 2}, "epochs_planned": 2}}),
             "lambda": snap("lambda", {"A1": {"state": "aborted"}, "B1": {"state": "running", "epochs_planned": 50}})}
    choices = runs.representatives(snaps, ["local", "lambda"], plan_epochs=50)
    assert (choices["A1"].chosen.host, choices["A1"].chosen.state) == ("local", "done")
    assert (choices["B1"].chosen.host, choices["B1"].chosen.state) == ("lambda", "running"), \
        "the plan's 50 epochs, running, before a finished 2-epoch smoke run"
    assert [r.exp_id for r in runs.all_runs(snaps, ["local", "lambda"])] == ["A1", "B1", "A1", "B1"]


def test_a_host_that_stops_answering_shows_its_runs_as_last_seen():
    seen = {"lambda": (1_790_000_000.0, {"runs": {"B1": {"state": "running", "epochs_planned": 20,
                                                         "history": [{}] * 5}}})}
    down = {"lambda": snap("lambda", None, connected=False, since=1_790_000_100.0)}
    refs = runs.all_runs(down, ["lambda"], seen)
    assert [(r.exp_id, r.host, r.as_of) for r in refs] == [("B1", "lambda", 1_790_000_000.0)]
    cell = cells.state_text(refs[0].state, as_of=refs[0].as_of).plain
    clock = __import__("time").strftime("%H:%M", __import__("time").localtime(1_790_000_000.0))
    assert cell == f"running? as of {clock}" and epochs_text(refs[0].entry) == "5/20"
    assert runs.hosts_with("B1", down, ["lambda"], seen) == ["lambda"]
    assert runs.all_runs(down, ["lambda"]) == [], "without what was last seen there is nothing to show"


def test_theta_e_table_of_a_finished_run_is_the_end_of_training_one_and_says_so():
    gate0 = {"after_epochs": 0, "val_auroc_by_thetae": [{"bin": [0.5, 0.75], "auroc": 0.5, "count": 60}]}
    final = [{"bin": [0.5, 0.75], "auroc": 0.91, "count": 60}]
    heading, bins = charts.thetae_table({"state": "done", "gates": [gate0], "final_val_auroc_by_thetae": final})
    assert heading == "Val AUROC by θ_E (end of training, best.pt)" and bins == final
    heading, bins = charts.thetae_table({"state": "done", "gates": [gate0]})
    assert heading == ("Val AUROC by θ_E (gate after 0 epochs: the untrained model; no end-of-training "
                       "table in this run's metrics (an engine before it))") and bins == gate0["val_auroc_by_thetae"]
    heading, _ = charts.thetae_table({"state": "running", "gates": [gate0, {**gate0, "after_epochs": 5}]})
    assert heading == "Val AUROC by θ_E (gate after 5 epochs)"


def test_an_empty_theta_e_bin_takes_one_short_line():
    lines = charts.thetae_lines([{"bin": [1.0, 1.5], "auroc": None, "count": 19,
                               "note": "19 positives, fewer than the 50 an AUROC needs (metrics.thetae_min_positives)"}])
    assert [line.plain.split() for line in lines] == [["[1.00,1.50)", "–", "n=19,", "too", "few", "for", "an",
                                                         "AUROC"]]
    assert len(lines[0].plain) < 76, "fits an 80-column detail view on one line"


def test_host_lines_connected_disconnected_not_configured_and_cpu():
    now = 1_000_000.0
    assert hostlines.host_lines(snap("lambda", configured=False, connected=False))[0].plain == "lambda  not configured"
    down = hostlines.host_lines(snap("lambda2", connected=False, since=now - 200, error="connection refused\nmore"), now)
    assert down[0].plain.startswith("lambda2  disconnected since ") and down[0].plain.endswith("(3m)")
    assert down[1].plain.strip() == "connection refused"
    cpu = hostlines.host_lines(snap("local", {"A1": {"state": "running"}}))
    assert [line.plain for line in cpu] == ["local  connected", "  no GPU (CPU)  A1"]
    gpu = {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "utilization": 5, "memory_used_mib": 1024,
           "memory_total_mib": 40960, "temperature_c": 40}
    lines = hostlines.host_lines(snap("lambda3", {"B4": {"state": "running", "gpu": "1"}}, gpus=[gpu]))
    assert lines[1].plain == "  GPU1 A100    5%  1.0/40G  40°C  B4"


def test_filter_matches_every_word_anywhere_in_the_row(config):
    row = cells.matrix_row(config.experiment("B2"), None, config)
    assert cells.row_matches(row, "b2 unpaired")
    assert cells.row_matches(row, "R=5")
    assert not cells.row_matches(row, "b2 paired running")
    assert cells.row_matches(row, "  ")


def test_numbers_and_durations():
    assert fixed(float("nan")) == DASH and fixed(True) == DASH
    assert scientific(1e-4) == "1.0e-04"
    assert [cells.fmt_seconds(s) for s in (12.34, 245, 3725)] == ["12.3s", "4m05s", "1h02m"]


def test_sparkline_and_bar():
    assert charts.sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert charts.sparkline([1, None, 1]) == "▅ ▅"
    assert charts.sparkline([1, 2, 3], width=2) == "▁█"
    assert charts.sparkline([]) == ""
    assert charts.bar(1.0, 0.5, 1.0, 4) == "████"
    assert charts.bar(0.75, 0.5, 1.0, 4) == "██  "
    assert charts.bar(0.5 + 0.5 / 32, 0.5, 1.0, 4) == "▏   "
    assert charts.bar(None, 0.5, 1.0, 4) == ""


def _drawn(chart_class, data, width=72, height=16) -> str:
    """What a chart draws for `data`, as plain text (Plotext without colours)."""
    import re

    from textual_plotext.plot import Plot

    plt = Plot()
    chart_class.draw(None, plt, data)
    plt.plotsize(width, height)
    plt.theme("clear")
    return re.sub(r"\x1b\[[0-9;]*m", "", plt.build())


def test_the_curves_count_whole_epochs_from_1_and_mark_the_target_and_the_best_epoch():
    from lenstui.widgets.plots import AurocChart, LossChart, epoch_ticks

    history = [{"epoch": e, "train_loss": 0.7 - 0.05 * e, "val_loss": 0.72 - 0.04 * e,
                "val_auroc": [0.61, 0.70, 0.74, 0.73][e - 1]} for e in (1, 2, 3, 4)]
    auroc = _drawn(AurocChart, (history, 0.90))
    axis = auroc.splitlines()[-1].split()
    assert axis == ["1", "2", "3", "4"], "the x axis is whole epochs counted from 1"
    assert "val AUROC" in auroc and "best 0.740 (epoch 3)" in auroc and "target 0.90 grey" in auroc
    loss = _drawn(LossChart, history)
    assert "train loss" in loss and "val loss" in loss and loss.splitlines()[-1].split() == ["1", "2", "3", "4"]
    assert "after the first epoch" in _drawn(LossChart, [])
    assert epoch_ticks(list(range(1, 51))) == [1, 8, 15, 22, 29, 36, 43, 50], "50 epochs: 8 whole ticks"
    assert epoch_ticks([3, 4, 5]) == [3, 4, 5] and epoch_ticks([]) == []


def test_the_thetae_and_sensitivity_charts_draw_the_plans_lines():
    from lenstui.widgets.plots import SensitivityChart, ThetaEChart

    val = [{"bin": [0.5, 0.75], "auroc": 0.72, "count": 80}, {"bin": [0.75, 1.0], "auroc": 0.91, "count": 90}]
    test = [{"bin": [0.5, 0.75], "auroc": 0.70, "count": 70}, {"bin": [0.75, 1.0], "auroc": 0.88, "count": 75}]
    bars = _drawn(ThetaEChart, ("Val AUROC by θ_E", val, test, 0.80, 0.70))
    assert "0.5–0.75" in bars and "0.75–1" in bars and "test (held out)" in bars
    assert "PASS>0.80 green" in bars and "FAIL<0.70 red" in bars
    gaps = [{"bin": [0.5, 0.75], "auroc": None, "count": 3}, {"bin": [0.75, 1.0], "auroc": 0.42, "count": 9}]
    assert "0.5–0.75" in _drawn(ThetaEChart, ("Val AUROC by θ_E", gaps, [], 0.80, 0.70)), \
        "a bin without an AUROC, or below chance, sits on the axis instead of breaking the chart"
    curve = [{"radius": r, "auroc": a} for r, a in ((0, 0.95), (3, 0.94), (5, 0.93), (7, 0.91), (10, 0.88))]
    sens = _drawn(SensitivityChart, (curve, [], 7, 0.03, 0.05))
    assert sens.splitlines()[-1].split() == ["0", "3", "5", "7", "10"], "the mask radii on the x axis"
    assert "reliance at R=7" in sens and "val" in sens
    # The band: AUROC(0) - 0.03 and - 0.05 are horizontal lines across the plot.
    assert sum(line.count("─") > 40 for line in sens.splitlines()) >= 2


def test_thetae_and_sensitivity_bars_and_gate_history(config):
    bins = [{"bin": [0.5, 0.75], "auroc": 0.9, "count": 120, "note": None},
            {"bin": [2.5, 3.0], "auroc": None, "count": 3, "note": "3 positives, fewer than 50"}]
    lines = [line.plain for line in charts.thetae_lines(bins, width=10)]
    assert lines[0] == "[0.50,0.75)  ████████    0.900  n=120"
    assert lines[1] == "[2.50,3.00)  –  n=3, too few for an AUROC"
    assert "no θ_E bins yet" in charts.thetae_lines(None)[0].plain
    curve = [{"radius": 0, "auroc": 0.95}, {"radius": 7, "auroc": 0.91}]
    assert [line.plain.split()[0] for line in charts.sensitivity_lines(curve)] == ["R=0", "R=7"]
    history = cells.gate_history_lines({"gates": [{"after_epochs": 5, "core_lr_auc": 0.66,
                                                 "radial_lr_auc": 0.5, "gate_n_samples": 2000}]}, config)
    assert history[1].plain.split() == ["5", "0.660", "FAIL", "0.500", "PASS", "2000"]


def test_halfblock_cutout_pixels_become_fg_over_bg_cells():
    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    strips = halfblock_strips([[red, green], [blue, blue], [green, red]])
    assert [strip.text for strip in strips] == ["▀▀", "▀▀"]   # 3 pixel rows -> 2 cell rows
    first = list(strips[0])[0].style
    assert first.color.triplet == red and first.bgcolor.triplet == blue
    assert list(strips[1])[0].style.bgcolor is None          # odd height: the last row has no lower pixel


def test_asinh_stretch_maps_z_r_g_to_red_green_blue():
    np = pytest.importorskip("numpy")
    bands = np.zeros((3, 4, 4), dtype=np.float32)
    bands[2, 0, 0] = 10.0      # z only -> red
    bands[0, 3, 3] = 10.0      # g only -> blue
    rgb = stretch_rgb(bands)
    assert rgb[0][0][0] > 200 and rgb[0][0][1:] == (0, 0)
    assert rgb[3][3][2] > 200 and rgb[3][3][:2] == (0, 0)
    assert rgb[1][1] == (0, 0, 0)
    assert len(stretch_rgb(np.ones((3, 63, 63)), factor=2)) == 31


def test_decision_text_names_the_branch_numbers_and_next_launch(config):
    from engine.results.decision import decide
    from lenstui.widgets.decision_panel import decision_text

    waiting = decide({}, config)
    text = decision_text(waiting, []).plain
    assert waiting.title in text
    assert ["B1.final_core_lr_auc", "–"] in [line.split() for line in text.splitlines()], "no value: a dash"
    assert "A1, B1 should run next, but no enabled host is connected" in text
    ready = decision_text(waiting, [("A1", "local", "auto", None), ("B1", "lambda", "0", None)]).plain
    assert "A1 on local (GPU auto)" in ready and "B1 on lambda (GPU 0)" in ready
