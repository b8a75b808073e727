"""The one rule for the run that stands for an experiment (engine/results/representative.py), case by case."""

from __future__ import annotations

import time

import pytest

from engine.results.representative import (RunCandidate, choose, choose_all, comparison_notes, describe,
                                   settings_rank, state_words)

PLAN_EPOCHS = 50


def run(state: str, host: str, overrides: dict | None = None, planned: int = 50,
        updated: str = "2026-02-07T10:00:00+0000", dataset: str = "synthetic-demo", order: int = 0,
        as_of: float | None = None, exp: str = "A1") -> RunCandidate:
    metrics = {"overrides": overrides or {}, "epochs_planned": planned, "updated_at": updated}
    return RunCandidate(exp, host, f"{host}:{exp}", state, metrics, {"host": host, "dataset": dataset},
                        order=order, as_of=as_of)


def test_a_finished_run_stands_before_an_aborted_one_whatever_their_settings():
    done_smoke = run("done", "local", {"epochs": 2, "limit_train": 64}, planned=2)
    aborted_plan = run("aborted", "lambda", updated="2026-02-08T10:00:00+0000", order=1)
    choice = choose([aborted_plan, done_smoke], PLAN_EPOCHS)
    assert choice.chosen is done_smoke
    assert choice.reasons == ("a run that completed or is in progress comes before one that ended incomplete",)


@pytest.mark.parametrize("state", ["failed", "aborted", "lost"])
def test_every_ended_incomplete_state_comes_after_a_running_one(state):
    assert choose([run(state, "a"), run("running", "b", {"epochs": 2}, planned=2)], PLAN_EPOCHS).chosen.host == "b"


def test_the_plans_settings_before_overrides_and_a_long_run_before_a_smoke_run():
    plan = run("running", "lambda", order=2)
    device = run("done", "h2", {"device": "cpu"}, order=1)
    short = run("done", "h3", {"epochs": 20}, planned=20)
    smoke = run("done", "local", {"epochs": 2, "limit_train": 64}, planned=2, updated="2026-03-01T00:00:00+0000")
    choice = choose([smoke, short, device, plan], PLAN_EPOCHS)
    assert [c.host for c in choice.ranked] == ["lambda", "h2", "h3", "local"]
    assert "the plan's settings come before overrides" in choice.reasons[0]


def test_a_seed_replicate_is_the_plans_settings_so_a_done_one_stands_before_a_running_plan_seed():
    """Issue 19: a run that changed only the seed is as much the plan's run as the plan's own seed."""
    plan = run("running", "lambda", order=0)
    replicate = run("done", "h2", {"seed": 43}, order=1)
    short = run("done", "h3", {"epochs": 20}, planned=20)
    choice = choose([short, plan, replicate], PLAN_EPOCHS)
    assert [c.host for c in choice.ranked] == ["h2", "lambda", "h3"]
    assert choice.reasons[0] == "a completed run comes before one still in progress"
    assert settings_rank({"seed": 43}) == 0 and settings_rank({"seed": 43, "device": "cpu"}) == 1


def test_more_epochs_are_closer_to_the_plan_than_fewer():
    assert choose([run("done", "a", {"epochs": 2}, planned=2), run("done", "b", {"epochs": 20}, planned=20)],
                  PLAN_EPOCHS).chosen.host == "b"


def test_completed_before_in_progress_then_newest_then_the_order_given():
    running = run("running", "a", updated="2026-02-09T10:00:00+0000")
    done = run("done", "b")
    assert choose([running, done], PLAN_EPOCHS).chosen is done
    old, new = run("done", "a", order=0), run("done", "b", updated="2026-02-07T11:30:00+0100", order=1)
    choice = choose([old, new], PLAN_EPOCHS)
    assert choice.chosen is new and choice.reasons[0].startswith("newer (")
    first, second = run("done", "a", order=0), run("done", "b", order=1)
    assert choose([second, first], PLAN_EPOCHS).chosen is first


def test_a_run_last_seen_running_on_a_disconnected_host_still_stands_and_says_as_of_when():
    seen = time.mktime((2026, 2, 7, 0, 15, 0, 0, 0, -1))
    stale = run("running", "lambda", {"epochs": 20}, planned=20, as_of=seen)
    old_smoke = run("done", "local", {"epochs": 2, "limit_train": 64}, planned=2)
    choice = choose([old_smoke, stale], PLAN_EPOCHS)
    assert choice.chosen is stale
    assert state_words(stale) == "running? as of 00:15"
    assert describe(stale) == "running? as of 00:15 on lambda (epochs=20)"


def test_settings_ranks():
    assert settings_rank({}, 50) == 0
    assert settings_rank({"device": "cpu"}, 50) == 1 and settings_rank({"epochs": 80}, 50) == 1
    assert settings_rank({"epochs": 20}, 50) == 2
    assert settings_rank({"epochs": 80, "limit_val": 10}, 50) == 3


def test_choose_all_groups_by_experiment_and_comparison_notes_say_what_differs():
    runs = [run("done", "local", exp="A1"), run("done", "lambda", exp="B1", dataset="v5_cosmos_paired",
                                                overrides={"epochs": 20}, planned=20)]
    choices = choose_all(runs, PLAN_EPOCHS)
    assert set(choices) == {"A1", "B1"} and not choices["A1"].others
    notes = comparison_notes({e: c.chosen for e, c in choices.items()}, ["A1", "B1"])
    assert notes[0].startswith("the runs compared used different datasets: A1 synthetic-demo (on local), "
                               "B1 v5_cosmos_paired (on lambda)")
    assert notes[1] == ("the runs compared used different settings: A1 the plan's settings (on local), "
                        "B1 epochs=20 (on lambda)")
    same = {"A1": run("done", "a", {"device": "cpu", "seed": 3}), "B1": run("done", "b", exp="B1")}
    assert comparison_notes(same, ["A1", "B1"]) == [], "the device and the seed do not make runs incomparable"


def test_choose_needs_a_run():
    with pytest.raises(ValueError):
        choose([], PLAN_EPOCHS)
