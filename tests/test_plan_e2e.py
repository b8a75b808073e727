"""Issue 18 end to end: the whole plan driven from the plan screen over two real sshd hosts and `local`.

Real parts only: the app under `App.run_test()` with the real Fleet, OpenSSH servers on loopback
(tests/sshd.py) whose work dirs get the engine by the plan's own sync, real manifest builds and
real tiny trainings (short epochs, recorded as overrides). Each host takes one run at a time
(`max_runs_per_gpu = 1`, none has a GPU), so A1 and B1 must go to different hosts. Halfway, the
app is quit and started again: the plan it shows is the same, since nothing is kept but the hosts.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from engine.config import load_config
from lenstui.app import make_app
from lenstui.fleet import Fleet
from lenstui.screens.confirm import ConfirmScreen
from lenstui.screens.plan import PlanScreen

from data_fixtures import write_tiny_dataset
from sshd import running_lab
from test_app_e2e import TINY, kill_group_of, lab_config, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

TRAIN_ARGS = ("--epochs", "1", "--limit-train", "16", "--limit-val", "16", "--device", "cpu")


def one_run_per_host(config: Path) -> None:
    text = re.sub(r'(?m)^(dataset = "lab")$', r'\1\nmax_runs_per_gpu = 1', config.read_text())
    config.write_text(text)


def status(app, key: str) -> str:
    state = app.plan_state()
    return "" if state is None else state.step(key).status


async def open_plan(app, pilot) -> None:
    await wait_for(pilot, lambda: {"local", "h1", "h2"} <= set(app.snapshots), timeout=30)
    await pilot.press("p")
    assert isinstance(app.screen, PlanScreen)
    await wait_for(pilot, lambda: app.plan_state() is not None, timeout=60)


async def advance(app, pilot, expect: list[str]) -> str:
    """Press Advance, check the confirmation names `expect`, confirm; the confirmation's text."""
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
    text = app.screen.text
    for words in expect:
        assert words in text, text
    await pilot.press("y")
    await wait_for(pilot, lambda: not app._plan_busy, timeout=600)
    return text


async def test_the_plan_runs_from_the_plan_screen_across_hosts_and_survives_a_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_tiny_dataset(tmp_path / "data", n_lrgs={"train": 16, "val": 12, "test": 8})
    with running_lab(tmp_path / "lab") as lab:
        config = lab_config(tmp_path, lab, data)
        one_run_per_host(config)
        for server in lab.servers.values():   # the hosts hold an engine, never synced: 1.5 is to do
            (server.work_dir / "experiments.toml").write_text(config.read_text())
        fleet = Fleet(load_config(config), config, ssh_options=lab.options())
        app = make_app(config, fleet=fleet, refresh_s=0.5, train_args=TRAIN_ARGS)
        run_dirs = [tmp_path / "runs" / e for e in ("A1", "B1", "FULL")] + [
            s.runs_root / e for s in lab.servers.values() for e in ("A1", "B1", "B2", "B3", "B4", "FULL")]
        try:
            async with app.run_test(size=(120, 60)) as pilot:
                await open_plan(app, pilot)
                assert status(app, "1.5") == "ready"
                assert status(app, "2.1") == "waiting"
                assert "waits on: Phase 1" in app.screen.text

                # Phase 1: sync the two ssh hosts (local runs this folder's engine), then the manifests.
                await advance(app, pilot, ["sync on h1", "sync on h2"])
                await wait_for(pilot, lambda: status(app, "1.5") == "done", timeout=60)
                assert status(app, "1.1") == "ready" and status(app, "2.1") == "ready"

                # The manifests, then Phase 2 in the same Advance: A1 and B1 at once, on two different
                # hosts, with the short epochs shown.
                text = await advance(app, pilot, ["manifests on local", "data check on", "A1 →", "B1 →", "--epochs 1"])
                await wait_for(pilot, lambda: all(status(app, k) == "done" for k in ("1.1", "1.2", "1.3", "1.4", "1.5")),
                               timeout=60)
                assert "(data check: the gate matrix)" in app.screen.text and "ordering" in app.plan_state().step("1.3").detail
                where = dict(re.findall(r"(A1|B1) → (\S+)", text))
                assert where["A1"].split(":")[0] != where["B1"].split(":")[0], text
                await wait_for(pilot, lambda: status(app, "2.1") in ("running", "done")
                               and status(app, "2.2") in ("running", "done"), timeout=90)
                before = {k: status(app, k) for k in ("1.5", "2.1", "2.2", "2.4")}
                await pilot.press("escape", "q")
                if isinstance(app.screen, ConfirmScreen):   # runs keep going: quit anyway
                    await pilot.press("y")

            # A fresh app (a second laptop, or the same one restarted) derives the same plan.
            app = make_app(config, fleet=fleet, refresh_s=0.5, train_args=TRAIN_ARGS)
            async with app.run_test(size=(120, 60)) as pilot:
                await open_plan(app, pilot)
                now = {k: status(app, k) for k in before}
                assert now["1.5"] == before["1.5"] == "done"
                for k in ("2.1", "2.2"):
                    assert now[k] in ("running", "done") and (before[k] != "done" or now[k] == "done")
                await wait_for(pilot, lambda: status(app, "2.1") == "done" and status(app, "2.2") == "done",
                               timeout=300)
                state = app.plan_state()
                decision = state.decision
                assert status(app, "2.4") in ("done", "stopped")
                assert decision.title in app.screen.text

                if state.halted():
                    # A STOP or an outside-the-plan decision halts the advance and says why.
                    await pilot.press("a")
                    await wait_for(pilot, lambda: not app._plan_busy, timeout=60)
                    assert any("The plan stops here" in n.message for n in app._notifications)
                    assert status(app, "2.4") == "stopped" and "a person decides" in app.screen.text
                    assert not isinstance(app.screen, ConfirmScreen)
                else:
                    nxt = list(decision.next_experiments)
                    await advance(app, pilot, [f"{e} →" for e in nxt])
                    key = "4.1" if "FULL" in nxt else "3.1"
                    await wait_for(pilot, lambda: status(app, key) in ("running", "done"), timeout=120)
                    if key == "4.1":   # then the final test evaluation, and Advance writes the report
                        await wait_for(pilot, lambda: status(app, "4.2") == "done", timeout=300)
                        assert status(app, "4.3") == "ready"
                        await advance(app, pilot, ["write the report"])
                        await wait_for(pilot, lambda: status(app, "4.3") == "done", timeout=60)
                        report = app.plan_state().report
                        assert report and Path(report).is_file() and f"written: {report}" in app.screen.text
                        full = app.choices["FULL"].chosen
                        assert full.metrics["run"]["provenance"]["plan_step"] == "4.1"
                        assert decision.title in full.metrics["run"]["provenance"]["decision"]
                        await pilot.press("a")   # nothing is left: Advance says so and starts nothing
                        await wait_for(pilot, lambda: not app._plan_busy, timeout=60)
                        assert not isinstance(app.screen, ConfirmScreen)

            provenance = {}
            for d in run_dirs:
                if (d / "run.json").is_file() and d.name in ("A1", "B1"):
                    provenance[d.name] = json.loads((d / "run.json").read_text())["provenance"]
            assert provenance["A1"]["plan_step"] == "2.1" and provenance["B1"]["plan_step"] == "2.2"
            assert provenance["A1"]["host"] == where["A1"].split(":")[0]
            assert provenance["A1"]["requested_by"] == "plan" and provenance["A1"]["gpu"] == "cpu"
            assert "Phase 2" in provenance["A1"]["decision"]
        finally:
            fleet.close()
            for d in run_dirs:
                kill_group_of(d)
