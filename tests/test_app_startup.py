"""lenstui starts to its first screen without torch, NumPy or scikit-learn (it runs on a laptop)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter so nothing another test imported can hide an import.
SCRIPT = r"""
import asyncio, json, sys, time
from lenstui.app import make_app
from lenstui.widgets.hosts import HostsPanel

async def main():
    app = make_app(sys.argv[1], refresh_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 30
        while "local" not in app.snapshots and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.press("question_mark", "escape")   # a screen push and pop, too
        shown = app.matrix.shown_ids
        hosts = app.query_one(HostsPanel).text
    app.fleet.close()
    heavy = sorted(m for m in ("torch", "numpy", "sklearn", "pandas", "pyarrow", "scipy") if m in sys.modules)
    print(json.dumps({"shown": shown, "hosts": hosts, "heavy": heavy}))

asyncio.run(main())
"""


def test_app_reaches_first_screen_without_heavy_imports(tmp_path):
    from sshd import local_host_toml, write_config  # the shared test helpers: the plan, a tmp local host

    config = write_config(tmp_path / "experiments.toml", [local_host_toml(tmp_path / "runs")])
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shown"] == ["A1", "B1", "B2", "B3", "B4", "FULL"]
    assert "local  connected" in result["hosts"], "the first poll of the real local host arrived"
    assert result["heavy"] == [], f"imported at start-up: {result['heavy']}"
