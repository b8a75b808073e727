"""Two launches of the same experiment on the same host at the same instant: exactly one runs.

Two lenstui sessions (two Fleets: two app windows, or the app and a script) press launch
together, released by one barrier. Each runs its own `engine.launch` process on the host
(locally, or over its own SSH connection); the run directory's flock lets one through and
refuses the other with exit code 3, before the loser writes anything.
"""

from __future__ import annotations

import threading

import pytest

from engine.protocol import rundir
from engine.config import load_config
from lenstui.fleet import Fleet, FleetError

from .conftest import group_alive, local_host, poll_until, ssh_host, standin_work, tiny_config, wait_for

pytestmark = pytest.mark.faults
ROUNDS = 3


def _race(fleets: list[Fleet], exp_id: str, host: str) -> list[object]:
    barrier, outcomes = threading.Barrier(len(fleets)), []

    def press(fleet: Fleet) -> None:
        barrier.wait()
        try:
            outcomes.append(fleet.launch(exp_id, host, extra_args=["--epoch-seconds", "0.2"]))
        except FleetError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=press, args=(f,)) for f in fleets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


def _check_one_ran(outcomes: list[object], fleet: Fleet, host: str, run_dir) -> None:
    started = [o for o in outcomes if not isinstance(o, FleetError)]
    refused = [o for o in outcomes if isinstance(o, FleetError)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert refused[0].code == 3 and "already running" in refused[0].message
    entry = poll_until(fleet, host, "B4", lambda e: e["state"] == "running" and e["pid"] == started[0].pid,
                       timeout=30)
    assert entry["pgid"] == started[0].pgid
    result = fleet.abort("B4", host, grace=3)
    assert result.remaining == [] and group_alive(started[0].pgid) == []
    wait_for(lambda: rundir.observe_run(run_dir).state is not rundir.RunState.RUNNING, timeout=10)


def test_two_sessions_launching_together_on_the_local_host_start_one_run(tmp_path):
    runs = tmp_path / "runs"
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs, standin_work(tmp_path / "w"))])
    fleets = [Fleet(load_config(config), config) for _ in range(2)]
    try:
        for _ in range(ROUNDS):
            _check_one_ran(_race(fleets, "B4", "local"), fleets[0], "local", runs / "B4")
    finally:
        for f in fleets:
            f.close()
    # The loser wrote nothing: one launch header per round in the shared log.
    assert (runs / "B4" / rundir.LOG_FILE).read_text().count("lenstui launch of B4 on") == ROUNDS


@pytest.mark.ssh
def test_two_sessions_launching_together_over_sshd_start_one_run(tmp_path, lab):
    server = lab.servers["h1"]
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", tmp_path / "runs"),
                                                          ssh_host("h1", server)])
    fleets = [Fleet(load_config(config), config, ssh_options=lab.options()) for _ in range(2)]
    try:
        fleets[0].sync("h1")
        standin_work(server.work_dir)
        for f in fleets:
            assert f.poll("h1").connected  # both connections open before the race
        for _ in range(2):
            _check_one_ran(_race(fleets, "B4", "h1"), fleets[0], "h1", server.runs_root / "B4")
    finally:
        for f in fleets:
            f.close()
    assert (server.runs_root / "B4" / rundir.LOG_FILE).read_text().count("lenstui launch of B4 on") == 2
