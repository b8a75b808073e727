"""The hosts panel's lines: each host's connection (connected, disconnected since when, not configured)
and each GPU's load, memory, temperature and the run on it."""

from __future__ import annotations

import re
import time
from typing import Any, Mapping, Sequence

from rich.text import Text

from engine.numbers import DASH, number
from engine.protocol.rundir import RunState
from lenstui.runs import runs_of


def ago(since: float | None, now: float | None = None) -> str:
    """'12s', '4m', '2h' since a Unix time; a dash for None."""
    if since is None:
        return DASH
    seconds = max(0.0, (time.time() if now is None else now) - since)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"

def not_configured_line(host: str) -> Text:
    """A host with `enabled = false`: shown plainly, not as an error."""
    return Text.assemble((host, "bold"), "  ", ("not configured", "dim"))

def host_headline(snapshot: Any, now: float | None = None) -> Text:
    """'local  connected' / 'lambda  not configured' / 'lambda2  disconnected since 14:02:11 (3m)'."""
    if not snapshot.configured:
        return not_configured_line(snapshot.host)
    out = Text(snapshot.host, style="bold")
    out.append("  ")
    if snapshot.connected:
        out.append("connected", style="green")
    else:
        out.append("disconnected", style="bold red")
        if snapshot.since is not None:
            clock = time.strftime("%H:%M:%S", time.localtime(snapshot.since))
            out.append(f" since {clock} ({ago(snapshot.since, now)})", style="red")
    return out

def gpu_line(gpu: Mapping[str, Any], run_ids: Sequence[str]) -> Text:
    """'GPU0 H100  45%  12.3/80G  61°C  A1': one GPU with the run on it.

    The model's first word only ('H100' of 'NVIDIA H100 80GB HBM3', 'A100' of 'A100-SXM4-40GB'): the memory column
    already says 80G, and the whole line must fit the hosts panel without wrapping.
    """
    model = re.split(r"[\s-]+", str(gpu.get("name") or "GPU").replace("NVIDIA ", "").strip())[0] or "GPU"
    out = Text(f"GPU{gpu.get('index', '?')} {model[:10]}", style="bold")
    util = number(gpu.get("utilization"))
    used, total = number(gpu.get("memory_used_mib")), number(gpu.get("memory_total_mib"))
    temp = number(gpu.get("temperature_c"))
    out.append(f"  {DASH if util is None else f'{util:.0f}%':>4}")
    if used is not None and total:
        out.append(f"  {used / 1024:.1f}/{total / 1024:.0f}G")
    if temp is not None:
        out.append(f"  {temp:.0f}°C", style="red" if temp >= 85 else "")
    out.append("  " + (", ".join(run_ids) if run_ids else "idle"),
               style="cyan" if run_ids else "dim")
    return out

def host_lines(snapshot: Any, now: float | None = None) -> list[Text]:
    """The hosts panel's lines for one host: headline, error, then one per GPU."""
    lines = [host_headline(snapshot, now)]
    if not snapshot.configured:
        return lines
    if snapshot.error:
        lines.append(Text("  " + snapshot.error.splitlines()[0][:200], style="red"))
    status = snapshot.status if isinstance(snapshot.status, dict) else None
    if status is None:
        return lines
    live = {e: r for e, r in runs_of(snapshot).items() if r.get("state") == RunState.RUNNING}
    gpus = [g for g in status.get("gpus") or [] if isinstance(g, dict)]
    if not gpus:
        line = Text("  no GPU (CPU)", style="dim")
        if live:
            line.append("  " + ", ".join(live), style="cyan")
        lines.append(line)
        return lines
    for gpu in gpus:
        on_it = [e for e, r in live.items() if str(r.get("gpu")) == str(gpu.get("index"))]
        lines.append(Text("  ").append_text(gpu_line(gpu, on_it)))
    return lines
