"""Finding the `engine.status --serve` processes a test started (none may outlive its connection),
and an engine.status from before --serve, for the hosts that still run one."""

from __future__ import annotations

import os
from pathlib import Path

OLD_STATUS = '''"""engine.status from before --serve: one answer per process."""
import argparse, json, time
from engine import ENGINE_VERSION
parser = argparse.ArgumentParser(prog="python -m engine.status")
parser.add_argument("--runs-root", required=True)
parser.parse_args()
print(json.dumps({"engine_version": ENGINE_VERSION, "host": "old", "time": time.time(), "gpus": [], "runs": {}}))
'''


def status_servers(runs_root: Path | str) -> list[int]:
    """Pids of live (non-zombie) `python -m engine.status --serve` processes for `runs_root`, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in argv]
        zombie = stat[stat.rfind(")") + 2:].startswith("Z")
        if not zombie and "engine.status" in args and "--serve" in args and str(runs_root) in args:
            found.append(int(entry.name))
    return sorted(found)
