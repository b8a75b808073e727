"""A host's sshd stops for 20 s in the middle of a run, with the real app watching.

The app (App.run_test, its own 2 s refresh, one poll worker per host) watches two SSH hosts,
each with a run. h2's sshd is killed with every session it serves (as when the host's
sshd crashes or is restarted by an upgrade) and comes back after at least 20 s on the same
port with the same key — at the worst moment: just after one of lenstui's reconnection
attempts failed, so the next is a whole backoff away (the outage is 20 s plus up to one
backoff). Promised: h2 shows disconnected within 15 s, h1 keeps updating meanwhile, h2 is
connected again within 10 s of sshd's return, and h2's run — which never stopped, being
detached from SSH — shows its whole history, without a gap.
"""

from __future__ import annotations

import time

import pytest

from engine.config import load_config
from lenstui.app import make_app
from lenstui.fleet import Fleet
from lenstui.widgets.hosts import HostsPanel

from .conftest import app_wait, cell, epochs_of, local_host, ssh_host, standin_work, tiny_config

pytestmark = [pytest.mark.faults, pytest.mark.ssh, pytest.mark.slow]
OUTAGE_S = 20.0
EPOCH_S = 0.5


def _entry(app, host: str, exp_id: str) -> dict | None:
    snap = app.snapshots.get(host)
    return ((snap.status or {}).get("runs") or {}).get(exp_id) if snap is not None and snap.status else None


async def test_sshd_down_for_20s_is_shown_disconnected_others_update_and_it_reconnects_without_a_gap(tmp_path, lab):
    h1, h2 = lab.servers["h1"], lab.servers["h2"]
    config = tiny_config(tmp_path / "experiments.toml",
                         [local_host("local", tmp_path / "runs"), ssh_host("h1", h1), ssh_host("h2", h2)])
    setup = Fleet(load_config(config), config, ssh_options=lab.options())
    app = make_app(config, fleet=Fleet(load_config(config), config, ssh_options=lab.options()), refresh_s=2.0)
    try:
        for name, server in (("h1", h1), ("h2", h2)):
            setup.sync(name)
            standin_work(server.work_dir)
        args = ["--epochs", "400", "--epoch-seconds", str(EPOCH_S)]
        setup.launch("B1", "h1", extra_args=args)
        setup.launch("B2", "h2", extra_args=args)
        setup.close()  # the app watches with its own connections from here on

        async with app.run_test(size=(140, 44)) as pilot:
            await app_wait(pilot, lambda: all((_entry(app, h, e) or {}).get("history")
                                              for h, e in (("h1", "B1"), ("h2", "B2"))), timeout=60)
            before = len(_entry(app, "h2", "B2")["history"])

            stopped = time.monotonic()
            h2.stop()
            await app_wait(pilot, lambda: not app.snapshots["h2"].connected, timeout=30)
            down_after = time.monotonic() - stopped
            await pilot.pause(0.1)
            panel = app.query_one(HostsPanel).text
            assert "h2  disconnected since" in panel and "h1  connected" in panel

            h1_times = set()
            while time.monotonic() - stopped < OUTAGE_S:
                assert not app.snapshots["h2"].connected, "h2 shown connected while its sshd is down"
                h1_times.add(app.snapshots["h1"].status["time"])
                await pilot.pause(0.25)
            # sshd returns just after lenstui's latest failed attempt to reach it (a poll that tried,
            # rather than one that waited out the backoff): the worst moment, a whole backoff away
            # from the next try.
            seen = app.snapshots["h2"]
            await app_wait(pilot, lambda: app.snapshots["h2"] is not seen
                           and "next try in" not in (app.snapshots["h2"].error or ""), timeout=30)
            outage = time.monotonic() - stopped

            h2.start()  # back: same port, same host key
            returned = time.monotonic()
            await app_wait(pilot, lambda: app.snapshots["h2"].connected and _entry(app, "h2", "B2"), timeout=30)
            back_after = time.monotonic() - returned

            entry = _entry(app, "h2", "B2")
            shown_epoch = cell(app, "B2", "epoch")
        print(f"h2 sshd stopped: disconnected after {down_after:.1f} s; restarted after {outage:.1f} s: "
              f"connected again after {back_after:.1f} s; h1 refreshed {len(h1_times)} times meanwhile")
        assert down_after < 15, f"disconnected only after {down_after:.1f} s"
        assert back_after < 10, f"connected again only after {back_after:.1f} s"
        assert len(h1_times) >= 5, "h1 stopped updating while h2 was down"
        # The run went on during the outage, and every epoch of it is there.
        history = epochs_of(entry)
        assert history == list(range(1, len(history) + 1))
        assert len(history) >= before + int(0.6 * outage / EPOCH_S)
        assert entry["state"] == "running" and shown_epoch.startswith(f"{len(history)}/")
    finally:
        setup.close()
        app.fleet.close()  # both runs are killed by reap_runs: their records are under tmp_path/lab
